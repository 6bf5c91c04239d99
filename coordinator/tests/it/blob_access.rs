//! Who may read a blob (issue 12, item 5): a settlement report is public; a task's input goes
//! to the verifier, to a worker holding a live lease on that task and to the job's requester;
//! an output to the verifier and the requester, and to whoever holds the requester's shared
//! grant once the job is settled. Grants are signed by the requester, bound to the deployment
//! and expire; everyone else gets 403 with the JSON error body, and nothing changes.

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use gleaner_coordinator::JobState;
use gleaner_protocol::api::{ApiError, Decision, GRANT_HEADER, Settled, Verdict};
use gleaner_protocol::blob::blob_hash;
use gleaner_protocol::eip712;

use crate::common::*;
use crate::http::{lease, submit};

/// A grant for job 1 by `signer`, naming `grantee`, expiring `expiry`, in `chain_id`'s domain.
fn grant(signer: &PrivateKeySigner, grantee: Address, expiry: u64, chain_id: u64) -> String {
    gleaner_client::sign::read_grant(
        signer,
        &eip712::domain(chain_id, MARKET),
        U256::from(1),
        grantee,
        expiry,
    )
    .unwrap()
    .token()
}

/// GET a blob with a Bearer token and/or a grant header; status and, for refusals, the code.
async fn read(h: &Harness, hash: B256, token: Option<&str>, grant: Option<&str>) -> StatusCode {
    let mut b = Request::builder()
        .method("GET")
        .uri(format!("/v1/blobs/{hash}"));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if let Some(g) = grant {
        b = b.header(GRANT_HEADER, g);
    }
    let (s, body) = h.call(b.body(Body::empty()).unwrap()).await;
    if s != StatusCode::OK {
        let e: ApiError = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{s} without the JSON body: {body:?}"));
        assert!(!e.message.is_empty());
    }
    s
}

#[tokio::test]
async fn blobs_are_read_only_by_those_their_job_names() {
    let h = Harness::new().await;
    let requester = PrivateKeySigner::random();
    let m = h.manifest_with_blobs(1, 2).await;
    h.chain_job(1, &m, requester.address(), 1, now() + 3600);
    let (s, body) = h
        .json("POST", "/v1/jobs", None, &register_body(&requester, 1, &m))
        .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    h.state
        .store()
        .set_job_state(U256::from(1), JobState::Registered, JobState::Posted)
        .await
        .unwrap();
    let (worker, outsider) = (PrivateKeySigner::random(), PrivateKeySigner::random());
    let wt = h.sign_in(&worker, 10.0, 1).await;
    let ot = h.sign_in(&outsider, 10.0, 1).await;
    let vt = h.sign_in(&h.verifier.clone(), 0.0, 1).await;
    let own = grant(&requester, requester.address(), now() + 600, CHAIN_ID);
    let inputs: Vec<B256> = m.tasks.iter().map(|t| t.input_hash).collect();

    // Before any lease: only the verifier and the requester read inputs.
    for input in &inputs {
        assert_eq!(read(&h, *input, None, None).await, StatusCode::FORBIDDEN);
        assert_eq!(
            read(&h, *input, Some(&wt), None).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(read(&h, *input, Some(&vt), None).await, StatusCode::OK);
        assert_eq!(read(&h, *input, None, Some(&own)).await, StatusCode::OK);
    }
    // Grants that are not the requester's, expired, too long, for another chain, or garbled.
    let forged = grant(&outsider, requester.address(), now() + 600, CHAIN_ID);
    let expired = grant(&requester, requester.address(), now() - 1, CHAIN_ID);
    let too_long = grant(
        &requester,
        requester.address(),
        now() + 30 * 86_400,
        CHAIN_ID,
    );
    let other_chain = grant(&requester, requester.address(), now() + 600, 1);
    for bad in [&forged, &expired, &too_long, &other_chain] {
        assert_eq!(
            read(&h, inputs[0], None, Some(bad)).await,
            StatusCode::UNAUTHORIZED,
            "{bad}"
        );
    }
    assert_eq!(
        read(&h, inputs[0], None, Some("1.0x00.garbage")).await,
        StatusCode::BAD_REQUEST
    );
    let stranger = grant(&requester, outsider.address(), now() + 600, CHAIN_ID);
    assert_eq!(
        read(&h, inputs[0], None, Some(&stranger)).await,
        StatusCode::BAD_REQUEST
    );
    // An unknown hash is 404 (nothing to protect), even with a valid grant.
    let unknown = blob_hash(b"nobody uploaded this");
    assert_eq!(
        read(&h, unknown, None, Some(&own)).await,
        StatusCode::NOT_FOUND
    );

    // A lease opens its task's input to its holder only, while it is live.
    let l = lease(&h, &wt, 0).await.expect("a lease");
    let (mine, theirs) = (inputs[l.index as usize], inputs[1 - l.index as usize]);
    assert_eq!(l.input_hash, mine);
    assert_eq!(read(&h, mine, Some(&wt), None).await, StatusCode::OK);
    assert_eq!(
        read(&h, theirs, Some(&wt), None).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(read(&h, mine, Some(&ot), None).await, StatusCode::FORBIDDEN);

    // The output: the verifier and the requester; not the outsider, not a shared grant yet.
    assert_eq!(
        submit(&h, &worker, &wt, &l, b"the output").await,
        StatusCode::NO_CONTENT
    );
    let out = blob_hash(b"the output");
    assert_eq!(
        read(&h, mine, Some(&wt), None).await,
        StatusCode::FORBIDDEN,
        "a submitted lease is not live"
    );
    assert_eq!(read(&h, out, Some(&vt), None).await, StatusCode::OK);
    assert_eq!(read(&h, out, None, Some(&own)).await, StatusCode::OK);
    assert_eq!(read(&h, out, Some(&ot), None).await, StatusCode::FORBIDDEN);
    let shared = grant(&requester, Address::ZERO, now() + 86_400, CHAIN_ID);
    assert_eq!(
        read(&h, out, None, Some(&shared)).await,
        StatusCode::FORBIDDEN
    );

    // Settled: the report is public, the shared grant opens outputs (not inputs), also as a
    // `?grant=` link.
    let decision = Decision {
        job_id: U256::from(1),
        index: l.index,
        verdict: Verdict::Accept {
            result: out,
            quorum: vec![worker.address()],
        },
    };
    let (s, body) = h
        .json("POST", "/v1/verifier/decisions", Some(&vt), &decision)
        .await;
    assert_eq!(
        s,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let report = h.put_blob(b"the report").await;
    assert_eq!(read(&h, report, None, None).await, StatusCode::NOT_FOUND);
    let settled = Settled {
        job_id: U256::from(1),
        report_hash: report,
        tx_hash: B256::repeat_byte(9),
    };
    let (s, body) = h
        .json("POST", "/v1/verifier/settled", Some(&vt), &settled)
        .await;
    assert_eq!(
        s,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(read(&h, report, None, None).await, StatusCode::OK);
    assert_eq!(read(&h, out, None, Some(&shared)).await, StatusCode::OK);
    assert_eq!(
        read(&h, mine, None, Some(&shared)).await,
        StatusCode::FORBIDDEN
    );
    let (s, body) = h
        .get(&format!("/v1/blobs/{out}?grant={shared}"), None)
        .await;
    assert_eq!(
        (s, body.as_slice()),
        (StatusCode::OK, b"the output".as_slice())
    );
    assert_eq!(read(&h, out, None, None).await, StatusCode::FORBIDDEN);
}
