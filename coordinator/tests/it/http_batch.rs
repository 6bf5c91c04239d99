//! Batched leases and results: many replicas per call, results signed once, taken whole or
//! refused whole.

use alloy::primitives::{B256, Bytes};
use alloy::signers::local::PrivateKeySigner;
use axum::http::StatusCode;
use gleaner_coordinator::ReplicaState;
use gleaner_protocol::api::{BatchItem, Lease, LeaseBatchRequest, Leases, SubmitResults};
use gleaner_protocol::blob::blob_hash;
use gleaner_protocol::eip712::{self, MAX_RESULT_BATCH};

use crate::common::*;

async fn lease_batch(h: &Harness, token: &str, max: u32) -> (StatusCode, Vec<Lease>) {
    let (s, body) = h
        .json(
            "POST",
            "/v1/leases/batch",
            Some(token),
            &LeaseBatchRequest { wait_ms: 0, max },
        )
        .await;
    let leases = if s == StatusCode::OK {
        serde_json::from_slice::<Leases>(&body).unwrap().leases
    } else {
        Vec::new()
    };
    (s, leases)
}

/// Items for `leases` with inline outputs `out <index>`.
fn items(leases: &[Lease]) -> Vec<BatchItem> {
    leases
        .iter()
        .map(|l| {
            let out = format!("out {}", l.index).into_bytes();
            BatchItem {
                lease_id: l.lease_id.clone(),
                task_hash: l.task_hash,
                result_hash: blob_hash(&out),
                output: Some(out.into()),
            }
        })
        .collect()
}

fn sign(w: &PrivateKeySigner, items: &[BatchItem]) -> Bytes {
    let pairs: Vec<(B256, B256)> = items.iter().map(|i| (i.task_hash, i.result_hash)).collect();
    gleaner_client::sign::task_results(w, &eip712::domain(CHAIN_ID, MARKET), &pairs).unwrap()
}

async fn states(h: &Harness, leases: &[Lease]) -> Vec<ReplicaState> {
    let mut out = Vec::new();
    for l in leases {
        let r = h.state.store().replica(&l.lease_id).await.unwrap().unwrap();
        out.push(r.state);
    }
    out
}

#[tokio::test]
async fn batches_are_taken_whole_or_refused_whole() {
    let h = Harness::new().await;
    let (a, b) = (PrivateKeySigner::random(), PrivateKeySigner::random());
    let ta = h.sign_in(&a, 1.0, 1).await;
    let tb = h.sign_in(&b, 1.0, 1).await;
    h.posted_job(1, 8, 2, now() + 3600).await;

    for max in [0, MAX_RESULT_BATCH as u32 + 1] {
        assert_eq!(lease_batch(&h, &ta, max).await.0, StatusCode::BAD_REQUEST);
    }
    // A worker's share (8 of 16 replicas) bounds a batch; distinct tasks only.
    let (s, la) = lease_batch(&h, &ta, 100).await;
    assert_eq!((s, la.len()), (StatusCode::OK, 8));
    let mut tasks: Vec<u32> = la.iter().map(|l| l.index).collect();
    tasks.dedup();
    assert_eq!(tasks.len(), 8, "two replicas of one task in a batch");
    assert_eq!(lease_batch(&h, &ta, 100).await.0, StatusCode::NO_CONTENT);
    let (_, lb) = lease_batch(&h, &tb, 3).await;
    assert_eq!(lb.len(), 3);

    let good = items(&la[..4]);
    let send = |items: Vec<BatchItem>, signature: Bytes, token: String| {
        let h = &h;
        async move {
            h.json(
                "POST",
                "/v1/results/batch",
                Some(&token),
                &SubmitResults { items, signature },
            )
            .await
        }
    };
    // Each bad batch is refused with a clear error, and changes nothing.
    let mut cases: Vec<(&str, Vec<BatchItem>, Bytes, StatusCode)> = Vec::new();
    let mut wrong_output = good.clone();
    wrong_output[2].output = Some(Bytes::from_static(b"something else"));
    cases.push((
        "an output that is not its hash",
        wrong_output.clone(),
        sign(&a, &wrong_output),
        StatusCode::BAD_REQUEST,
    ));
    cases.push((
        "signed by another worker",
        good.clone(),
        sign(&b, &good),
        StatusCode::UNAUTHORIZED,
    ));
    cases.push((
        "a signature over part of the batch",
        good.clone(),
        sign(&a, &good[..3]),
        StatusCode::UNAUTHORIZED,
    ));
    let mut foreign = good.clone();
    foreign.extend(items(&lb[..1]));
    cases.push((
        "another worker's lease",
        foreign.clone(),
        sign(&a, &foreign),
        StatusCode::FORBIDDEN,
    ));
    let mut wrong_task = good.clone();
    wrong_task[1].task_hash = B256::repeat_byte(9);
    cases.push((
        "a wrong task hash",
        wrong_task.clone(),
        sign(&a, &wrong_task),
        StatusCode::BAD_REQUEST,
    ));
    let mut twice = good.clone();
    twice.push(good[0].clone());
    cases.push((
        "a lease twice",
        twice.clone(),
        sign(&a, &twice),
        StatusCode::BAD_REQUEST,
    ));
    let mut unknown = good.clone();
    unknown[3].lease_id = "00".into();
    cases.push((
        "an unknown lease",
        unknown.clone(),
        sign(&a, &unknown),
        StatusCode::NOT_FOUND,
    ));
    let mut not_uploaded = good.clone();
    not_uploaded[0].output = None;
    cases.push((
        "a blob neither uploaded nor sent",
        not_uploaded.clone(),
        sign(&a, &not_uploaded),
        StatusCode::BAD_REQUEST,
    ));
    cases.push((
        "no items",
        Vec::new(),
        sign(&a, &good),
        StatusCode::BAD_REQUEST,
    ));
    for (what, items, signature, want) in cases {
        let (s, body) = send(items, signature, ta.clone()).await;
        assert_eq!(s, want, "{what}: {}", String::from_utf8_lossy(&body));
        let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {err}"
        );
        assert!(
            states(&h, &la)
                .await
                .iter()
                .all(|s| *s == ReplicaState::Leased),
            "{what} changed a replica"
        );
        for i in &good {
            assert!(
                !h.state.store().has_blob(i.result_hash).await.unwrap(),
                "{what} stored an output"
            );
        }
    }

    // The good batch: every result recorded with its own verifiable signature, outputs stored.
    let (s, body) = send(good.clone(), sign(&a, &good), ta.clone()).await;
    assert_eq!(
        s,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let domain = eip712::domain(CHAIN_ID, MARKET);
    for (l, i) in la[..4].iter().zip(&good) {
        let r = h.state.store().replica(&l.lease_id).await.unwrap().unwrap();
        assert_eq!(r.state, ReplicaState::Submitted);
        assert_eq!(r.result_hash, Some(i.result_hash));
        let sig = r.signature.unwrap();
        eip712::verify_result(&domain, l.task_hash, i.result_hash, a.address(), &sig).unwrap();
        assert!(
            eip712::verify_result(&domain, l.task_hash, i.result_hash, b.address(), &sig).is_err()
        );
        assert!(h.state.store().has_blob(i.result_hash).await.unwrap());
    }
    assert!(
        states(&h, &la[4..])
            .await
            .iter()
            .all(|s| *s == ReplicaState::Leased)
    );
    // Sent again (a lost reply): 204, nothing changes. A different result for a recorded
    // lease: 409, and the rest of that batch is not recorded either.
    let (s, _) = send(good.clone(), sign(&a, &good), ta.clone()).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let mut changed = items(&la[3..6]);
    changed[0].output = Some(Bytes::from_static(b"changed"));
    changed[0].result_hash = blob_hash(b"changed");
    let (s, body) = send(changed.clone(), sign(&a, &changed), ta.clone()).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        states(&h, &la[4..6])
            .await
            .iter()
            .all(|s| *s == ReplicaState::Leased)
    );
}
