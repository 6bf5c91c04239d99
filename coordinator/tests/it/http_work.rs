//! The HTTP API's work cycle, in-process: lease, submit, decide, settle, release, expire,
//! long-poll, shares, terminal states, the manifest cache.

use alloy::primitives::{B256, Bytes, U256};
use alloy::signers::local::PrivateKeySigner;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use gleaner_coordinator::{JobState, ReplicaState};
use gleaner_protocol::api::{
    Decision, JobResults, JobStatus, LeaseRequest, Settled, SubmitResult, Verdict, VerifierWork,
};
use gleaner_protocol::blob::blob_hash;

use crate::common::*;
use crate::http::{lease, submit};

#[tokio::test]
async fn lease_submit_verify_settle_end_to_end() {
    let h = Harness::new().await;
    let workers: Vec<PrivateKeySigner> = (0..3).map(|_| PrivateKeySigner::random()).collect();
    let mut tokens = Vec::new();
    for w in &workers {
        tokens.push(h.sign_in(w, 10.0, 1).await);
    }
    let vt = h.sign_in(&h.verifier.clone(), 0.0, 1).await;
    h.posted_job(1, 2, 2, now() + 3600).await;

    // Every worker leases until nothing is left: 2 tasks x 2 replicas, distinct workers.
    // (Shares shrink as replicas go out: sweep until nobody gets one.)
    let mut leases = Vec::new();
    loop {
        let before = leases.len();
        for (w, t) in workers.iter().zip(&tokens) {
            while let Some(l) = lease(&h, t, 0).await {
                leases.push((w.clone(), t.clone(), l));
            }
        }
        if leases.len() == before {
            break;
        }
    }
    assert_eq!(leases.len(), 4);
    let mut pairs: Vec<(u32, _)> = leases
        .iter()
        .map(|(w, _, l)| (l.index, w.address()))
        .collect();
    pairs.sort();
    pairs.dedup();
    assert_eq!(pairs.len(), 4, "a worker got two replicas of one task");

    // Bad submissions change nothing.
    let (w0, t0, l0) = &leases[0];
    let (w1, t1, _) = leases
        .iter()
        .find(|(w, _, _)| w.address() != w0.address())
        .unwrap();
    let r = h.put_blob(b"out").await;
    let mut bad = SubmitResult {
        lease_id: l0.lease_id.clone(),
        task_hash: l0.task_hash,
        result_hash: r,
        signature: sign_result(w1, l0.task_hash, r),
    };
    assert_eq!(
        h.json("POST", "/v1/results", Some(t0), &bad).await.0,
        StatusCode::UNAUTHORIZED
    );
    bad.signature = sign_result(w0, l0.task_hash, r);
    assert_eq!(
        h.json("POST", "/v1/results", Some(t1), &bad).await.0,
        StatusCode::FORBIDDEN
    );
    let mut wrong = bad.clone();
    wrong.task_hash = B256::repeat_byte(1);
    assert_eq!(
        h.json("POST", "/v1/results", Some(t0), &wrong).await.0,
        StatusCode::BAD_REQUEST
    );
    let mut missing = bad.clone();
    missing.result_hash = B256::repeat_byte(2);
    missing.signature = sign_result(w0, l0.task_hash, missing.result_hash);
    assert_eq!(
        h.json("POST", "/v1/results", Some(t0), &missing).await.0,
        StatusCode::BAD_REQUEST
    );
    let mut unknown = bad.clone();
    unknown.lease_id = "00".into();
    assert_eq!(
        h.json("POST", "/v1/results", Some(t0), &unknown).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, _) = h
        .call(
            Request::builder()
                .method("POST")
                .uri("/v1/results")
                .header("authorization", format!("Bearer {t0}"))
                .header("content-type", "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        h.state
            .store()
            .replica(&l0.lease_id)
            .await
            .unwrap()
            .unwrap()
            .state,
        ReplicaState::Leased
    );

    // Everyone submits; a second submission of the same lease conflicts.
    for (w, t, l) in &leases {
        assert_eq!(
            submit(&h, w, t, l, format!("out {}", l.index).as_bytes()).await,
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(submit(&h, w0, t0, l0, b"again").await, StatusCode::CONFLICT);
    // The same result resent (its first reply lost) is answered 204 and counted once.
    let same = format!("out {}", l0.index);
    assert_eq!(
        submit(&h, w0, t0, l0, same.as_bytes()).await,
        StatusCode::NO_CONTENT
    );

    // The verifier sees both tasks pending with two replicas each.
    let (s, body) = h.get("/v1/verifier/work", Some(&vt)).await;
    assert_eq!(s, StatusCode::OK);
    let work: VerifierWork = serde_json::from_slice(&body).unwrap();
    assert_eq!(work.jobs.len(), 1);
    assert_eq!(work.jobs[0].pending.len(), 2);
    assert!(work.jobs[0].pending.iter().all(|t| t.replicas.len() == 2));
    assert!(!work.jobs[0].all_decided);

    // Task 0 accepted; a quorum with a non-submitter is refused; task 1 needs one more replica.
    let t0_workers: Vec<_> = work.jobs[0].pending[0]
        .replicas
        .iter()
        .map(|r| r.worker)
        .collect();
    let out0 = blob_hash(b"out 0");
    let mut quorum = vec![t0_workers[0], PrivateKeySigner::random().address()];
    let accept = |quorum: Vec<_>| Decision {
        job_id: U256::from(1),
        index: 0,
        verdict: Verdict::Accept {
            result: out0,
            quorum,
        },
    };
    assert_eq!(
        h.json("POST", "/v1/verifier/decisions", Some(&vt), &accept(quorum))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    quorum = t0_workers.clone();
    let d = accept(quorum);
    assert_eq!(
        h.json("POST", "/v1/verifier/decisions", Some(&vt), &d)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.json("POST", "/v1/verifier/decisions", Some(&vt), &d)
            .await
            .0,
        StatusCode::CONFLICT
    );
    // No extra replicas, an unknown verdict, or a verdict without its fields: 400.
    for bogus in [
        serde_json::json!({"job_id": U256::from(1), "index": 1, "verdict": "more", "extra_replicas": 0}),
        serde_json::json!({"job_id": U256::from(1), "index": 1, "verdict": "maybe"}),
        serde_json::json!({"job_id": U256::from(1), "index": 1, "verdict": "accept"}),
    ] {
        assert_eq!(
            h.json("POST", "/v1/verifier/decisions", Some(&vt), &bogus)
                .await
                .0,
            StatusCode::BAD_REQUEST,
            "{bogus}"
        );
    }
    let more = Decision {
        index: 1,
        verdict: Verdict::More { extra_replicas: 1 },
        ..d.clone()
    };
    assert_eq!(
        h.json("POST", "/v1/verifier/decisions", Some(&vt), &more)
            .await
            .0,
        StatusCode::NO_CONTENT
    );

    // The third replica of task 1 goes to the worker that does not hold one.
    let holders: Vec<_> = leases
        .iter()
        .filter(|(_, _, l)| l.index == 1)
        .map(|(w, _, _)| w.address())
        .collect();
    let (w3, t3) = workers
        .iter()
        .zip(&tokens)
        .find(|(w, _)| !holders.contains(&w.address()))
        .unwrap();
    for (w, t) in workers.iter().zip(&tokens) {
        if w.address() != w3.address() {
            assert!(lease(&h, t, 0).await.is_none());
        }
    }
    let l = lease(&h, t3, 0).await.expect("the third replica");
    assert_eq!(l.index, 1);
    assert_eq!(
        submit(&h, w3, t3, &l, b"out 1").await,
        StatusCode::NO_CONTENT
    );
    let fail = Decision {
        verdict: Verdict::Fail,
        ..more.clone()
    };
    assert_eq!(
        h.json("POST", "/v1/verifier/decisions", Some(&vt), &fail)
            .await
            .0,
        StatusCode::NO_CONTENT
    );

    let work: VerifierWork =
        serde_json::from_slice(&h.get("/v1/verifier/work", Some(&vt)).await.1).unwrap();
    let j = &work.jobs[0];
    assert!(j.all_decided && j.pending.is_empty());
    assert_eq!(j.decided[0].accepted_result, Some(out0));
    assert_eq!(j.decided[1].accepted_result, None);
    assert_eq!(j.decided[1].replicas.len(), 3);

    let st: JobStatus = serde_json::from_slice(&h.get("/v1/jobs/1", None).await.1).unwrap();
    assert_eq!(
        (
            st.state.as_str(),
            st.replicas_done,
            st.tasks_accepted,
            st.tasks_failed
        ),
        ("verifying", 5, 1, 1)
    );

    // Settlement needs the report blob; then the job is settled, once.
    let report = blob_hash(b"report");
    let settled = Settled {
        job_id: U256::from(1),
        report_hash: report,
        tx_hash: B256::repeat_byte(5),
    };
    assert_eq!(
        h.json("POST", "/v1/verifier/settled", Some(&vt), &settled)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    h.put_blob(b"report").await;
    assert_eq!(
        h.json("POST", "/v1/verifier/settled", Some(&vt), &settled)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.json("POST", "/v1/verifier/settled", Some(&vt), &settled)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let other = Settled {
        report_hash: out0,
        ..settled
    };
    assert_eq!(
        h.json("POST", "/v1/verifier/settled", Some(&vt), &other)
            .await
            .0,
        StatusCode::CONFLICT
    );
    let res: JobResults =
        serde_json::from_slice(&h.get("/v1/jobs/1/results", None).await.1).unwrap();
    assert_eq!(
        res.tasks.iter().map(|t| t.result).collect::<Vec<_>>(),
        vec![Some(out0), None]
    );
    assert_eq!(res.report_hash, Some(report));
    gleaner_protocol::task::JobManifest::from_canonical(res.manifest.as_bytes())
        .expect("the job's canonical manifest");
    let text = String::from_utf8(h.get("/metrics", None).await.1).unwrap();
    assert!(
        text.contains("gleaner_coordinator_leases_total 5"),
        "{text}"
    );
    assert!(
        text.contains("gleaner_coordinator_results_total 5"),
        "{text}"
    );
}

#[tokio::test]
async fn release_expiry_and_foreign_leases() {
    let h = Harness::new().await;
    let a = PrivateKeySigner::random();
    let b = PrivateKeySigner::random();
    let ta = h.sign_in(&a, 1.0, 1).await;
    let tb = h.sign_in(&b, 1.0, 1).await;
    h.posted_job(1, 1, 1, now() + 3600).await;
    let l = lease(&h, &ta, 0).await.unwrap();
    assert!(lease(&h, &tb, 0).await.is_none());
    // b may not release a's lease; unknown leases are 404.
    let rel = |id: &str, t: &str| {
        Request::builder()
            .method("POST")
            .uri(format!("/v1/leases/{id}/release"))
            .header("authorization", format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(h.call(rel(&l.lease_id, &tb)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(h.call(rel("ffff", &ta)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        h.call(rel(&l.lease_id, &ta)).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(h.call(rel(&l.lease_id, &ta)).await.0, StatusCode::CONFLICT);
    // Released: b gets it; then it expires and goes back to the queue for a.
    let lb = lease(&h, &tb, 0).await.unwrap();
    assert_eq!(lb.index, 0);
    h.state.advance_clock(121);
    // Sessions outlive the lease; a's fresh lease is the expired replica.
    let la = lease(&h, &ta, 0).await.expect("expired lease requeued");
    assert_eq!(la.index, 0);
    // b's result on its expired lease is refused.
    assert_eq!(
        submit(&h, &b, &tb, &lb, b"late").await,
        StatusCode::CONFLICT
    );
}

/// A long-poll wait above the coordinator's limit is a hint: it waits the limit, it is not
/// refused (a miner with a longer default keeps working against a stricter coordinator).
#[tokio::test]
async fn a_wait_above_the_limit_waits_the_limit() {
    let store = gleaner_coordinator::Store::connect("sqlite::memory:")
        .await
        .unwrap();
    let h = Harness::with_settings(store, |s| gleaner_coordinator::ApiSettings {
        max_wait_ms: 200,
        ..s
    })
    .await;
    let a = PrivateKeySigner::random();
    let ta = h.sign_in(&a, 1.0, 1).await;
    let t = std::time::Instant::now();
    let (s, _) = h
        .json(
            "POST",
            "/v1/leases",
            Some(&ta),
            &LeaseRequest { wait_ms: 30_000 },
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let waited = t.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(150)
            && waited < std::time::Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test]
async fn long_poll_waits_then_204_or_wakes_on_work() {
    let h = Harness::new().await;
    let a = PrivateKeySigner::random();
    let ta = h.sign_in(&a, 1.0, 1).await;
    let t = std::time::Instant::now();
    assert!(lease(&h, &ta, 300).await.is_none());
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));
    // Work that appears while waiting is handed out before the wait ends.
    h.posted_job(1, 1, 1, now() + 3600).await;
    // (The job was posted before this poll; a cancelled or past-deadline job is never leased.)
    let l = lease(&h, &ta, 5_000).await.unwrap();
    assert_eq!(l.job_id, U256::from(1));
    h.posted_job(2, 1, 1, now() + 3600).await;
    h.state
        .store()
        .set_job_state(U256::from(2), JobState::Posted, JobState::Cancelled)
        .await
        .unwrap();
    assert!(lease(&h, &ta, 0).await.is_none());
    let _ = Bytes::new();
}

#[tokio::test]
async fn shares_follow_measured_speed() {
    let h = Harness::new().await;
    let fast = PrivateKeySigner::random();
    let slow = PrivateKeySigner::random();
    let tf = h.sign_in(&fast, 30.0, 1).await;
    let ts = h.sign_in(&slow, 10.0, 1).await;
    h.posted_job(1, 8, 1, now() + 3600).await;
    // 8 replicas, scores 3:1 → the slow worker may hold 2 at once, the fast one 6.
    let mut slow_n = 0;
    while lease(&h, &ts, 0).await.is_some() {
        slow_n += 1;
    }
    let mut fast_n = 0;
    while lease(&h, &tf, 0).await.is_some() {
        fast_n += 1;
    }
    assert_eq!((slow_n, fast_n), (2, 6));
}

/// Someone else's root on-chain makes the job `root_mismatch`: terminal, reported, never leased.
#[tokio::test]
async fn a_root_mismatch_is_a_terminal_state_in_the_status() {
    let h = Harness::new().await;
    let requester = PrivateKeySigner::random();
    let m = h.manifest_with_blobs(1, 2).await;
    h.chain_job(1, &m, requester.address(), 1, now() + 3600);
    let (s, body) = h
        .json("POST", "/v1/jobs", None, &register_body(&requester, 1, &m))
        .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    // What the watcher records when the posted root is not the manifest's.
    assert!(
        h.state
            .store()
            .set_job_state(U256::from(1), JobState::Registered, JobState::RootMismatch)
            .await
            .unwrap()
    );
    let (s, body) = h.get("/v1/jobs/1", None).await;
    assert_eq!(s, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["state"], "root_mismatch");
    let st: JobStatus = serde_json::from_value(json).unwrap();
    assert_eq!(st.state, JobState::RootMismatch);
    assert!(st.state.is_terminal());
    let w = PrivateKeySigner::random();
    let token = h.sign_in(&w, 1.0, 1).await;
    assert!(lease(&h, &token, 0).await.is_none());
}

/// The parsed-manifest cache holds at most its configured number of jobs.
#[tokio::test]
async fn the_manifest_cache_stays_bounded() {
    let mut h = Harness::new().await;
    h.state = gleaner_coordinator::AppState::new(
        h.state.store().clone(),
        h.chain.clone(),
        info(),
        gleaner_coordinator::ApiSettings {
            verifier: Some(h.verifier.address()),
            max_blob_bytes: 4096,
            manifest_cache: 2,
            ..gleaner_coordinator::ApiSettings::default()
        },
    );
    for id in 1..=5 {
        h.posted_job(id, 1, 1, now() + 3600).await;
    }
    let w = PrivateKeySigner::random();
    let token = h.sign_in(&w, 1.0, 1).await;
    let mut leased = 0;
    while let Some(l) = lease(&h, &token, 0).await {
        leased += 1;
        assert!(h.state.cached_manifests() <= 2, "after job {}", l.job_id);
    }
    assert_eq!((leased, h.state.cached_manifests()), (5, 2));
}

/// Past the deadline nothing is leased, but the tasks whose replicas are in are still shown for
/// a decision (a spot-checked job's provisional results among them), with `all_decided` telling
/// the verifier to settle once it has decided them.
#[tokio::test]
async fn past_the_deadline_complete_tasks_are_still_shown_for_a_decision() {
    let h = Harness::new().await;
    let (a, b) = (PrivateKeySigner::random(), PrivateKeySigner::random());
    let ta = h.sign_in(&a, 1.0, 1).await;
    let tb = h.sign_in(&b, 1.0, 1).await;
    let vt = h.sign_in(&h.verifier.clone(), 0.0, 1).await;
    h.posted_job(1, 2, 2, now() + 100).await;
    // Both replicas of task 0 come in; task 1 is never computed.
    let la = lease(&h, &ta, 0).await.unwrap();
    let lb = lease(&h, &tb, 0).await.unwrap();
    assert_eq!((la.index, lb.index), (0, 0));
    for (w, t, l) in [(&a, &ta, &la), (&b, &tb, &lb)] {
        assert_eq!(submit(&h, w, t, l, b"out 0").await, StatusCode::NO_CONTENT);
    }
    let work = || async {
        let (s, body) = h.get("/v1/verifier/work", Some(&vt)).await;
        assert_eq!(s, StatusCode::OK);
        serde_json::from_slice::<VerifierWork>(&body).unwrap().jobs
    };
    let jobs = work().await;
    let pending: Vec<u32> = jobs[0].pending.iter().map(|t| t.index).collect();
    assert_eq!(
        (jobs[0].all_decided, jobs[0].undecided, pending),
        (false, 2, vec![0])
    );

    h.state.advance_clock(101);
    assert!(
        lease(&h, &ta, 0).await.is_none(),
        "leased past the deadline"
    );
    let jobs = work().await;
    let j = &jobs[0];
    assert!(j.all_decided, "past the deadline the verifier settles");
    assert_eq!(j.undecided, 2);
    assert_eq!(
        j.pending.len(),
        1,
        "task 0's replicas are in: still to decide"
    );
    assert_eq!((j.pending[0].index, j.pending[0].replicas.len()), (0, 2));
    assert_eq!(j.decided.len(), 2);

    // The decision is taken past the deadline; then nothing is pending.
    let d = Decision {
        job_id: U256::from(1),
        index: 0,
        verdict: Verdict::Accept {
            result: blob_hash(b"out 0"),
            quorum: vec![a.address(), b.address()],
        },
    };
    assert_eq!(
        h.json("POST", "/v1/verifier/decisions", Some(&vt), &d)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let jobs = work().await;
    let j = &jobs[0];
    assert!(j.all_decided && j.pending.is_empty());
    assert_eq!(j.undecided, 1);
    assert_eq!(j.decided[0].accepted_result, Some(blob_hash(b"out 0")));
    assert_eq!(j.decided[1].accepted_result, None);
}
