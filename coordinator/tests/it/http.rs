//! The HTTP API, in-process, against SQLite in memory and a fake chain.

use alloy::primitives::{B256, U256};
use alloy::signers::local::PrivateKeySigner;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use gleaner_protocol::api::{ApiError, Info, JobStatus, Lease, LeaseRequest, SubmitResult};
use gleaner_protocol::blob::blob_hash;

use crate::common::*;

#[track_caller]
pub(crate) fn error(body: &[u8]) -> ApiError {
    serde_json::from_slice(body).expect("an ApiError body")
}

pub(crate) async fn lease(h: &Harness, token: &str, wait_ms: u32) -> Option<Lease> {
    let (s, body) = h
        .json("POST", "/v1/leases", Some(token), &LeaseRequest { wait_ms })
        .await;
    match s {
        StatusCode::OK => Some(serde_json::from_slice(&body).unwrap()),
        StatusCode::NO_CONTENT => None,
        other => panic!("{other}: {}", String::from_utf8_lossy(&body)),
    }
}

pub(crate) async fn submit(
    h: &Harness,
    w: &PrivateKeySigner,
    token: &str,
    l: &Lease,
    out: &[u8],
) -> StatusCode {
    let r = h.put_blob(out).await;
    let body = SubmitResult {
        lease_id: l.lease_id.clone(),
        task_hash: l.task_hash,
        result_hash: r,
        signature: sign_result(w, l.task_hash, r),
    };
    h.json("POST", "/v1/results", Some(token), &body).await.0
}

#[tokio::test]
async fn health_info_metrics_and_unknown_route() {
    let h = Harness::new().await;
    let (s, body) = h.get("/healthz", None).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, b"ok".as_slice()));
    let (s, body) = h.get("/v1/info", None).await;
    assert_eq!(s, StatusCode::OK);
    let i: Info = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (i.chain_id, i.market, i.max_blob_bytes),
        (CHAIN_ID, MARKET, 4096)
    );
    let (s, body) = h.get("/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("gleaner_coordinator_leases_total 0"),
        "{text}"
    );
    assert!(
        text.contains("gleaner_coordinator_replicas_queued 0"),
        "{text}"
    );
    let (s, body) = h.get("/v1/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(error(&body).code, "not_found");
}

#[tokio::test]
async fn blobs_are_content_addressed_and_bounded() {
    let h = Harness::new().await;
    let hash = h.put_blob(b"hello").await;
    // No job names it: only the verifier reads it (see blob_access.rs for the rules).
    let vt = h.sign_in(&h.verifier.clone(), 0.0, 1).await;
    let (s, body) = h.get(&format!("/v1/blobs/{hash}"), Some(&vt)).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, b"hello".as_slice()));
    assert_eq!(
        h.get(&format!("/v1/blobs/{hash}"), None).await.0,
        StatusCode::NOT_FOUND
    );
    // Wrong hash, oversized, malformed hash, unknown blob.
    let wrong = blob_hash(b"other");
    let put = |uri: String, bytes: Vec<u8>| {
        Request::builder()
            .method("PUT")
            .uri(uri)
            .body(Body::from(bytes))
            .unwrap()
    };
    let (s, body) = h
        .call(put(format!("/v1/blobs/{wrong}"), b"hello".to_vec()))
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let big = vec![7u8; 8192];
    let (s, body) = h
        .call(put(format!("/v1/blobs/{}", blob_hash(&big)), big.clone()))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error(&body).code, "too_large");
    let (s, _) = h.call(put("/v1/blobs/xyz".into(), b"x".to_vec())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h.get(&format!("/v1/blobs/{}", blob_hash(&big)), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(!h.state.store().has_blob(wrong).await.unwrap());
}

#[tokio::test]
async fn job_registration_checks_signature_chain_and_blobs() {
    let h = Harness::new().await;
    let requester = PrivateKeySigner::random();
    let m = h.manifest_with_blobs(1, 3).await;
    let deadline = now() + 3600;
    let good = register_body(&requester, 1, &m);

    // Not on-chain yet.
    let (s, _) = h.json("POST", "/v1/jobs", None, &good).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    h.chain_job(1, &m, requester.address(), 2, deadline);

    // Bad signature (signed by another key), wrong requester, expired, non-canonical manifest.
    let mut bad = register_body(&PrivateKeySigner::random(), 1, &m);
    bad.requester = requester.address();
    assert_eq!(
        h.json("POST", "/v1/jobs", None, &bad).await.0,
        StatusCode::UNAUTHORIZED
    );
    let other = PrivateKeySigner::random();
    assert_eq!(
        h.json("POST", "/v1/jobs", None, &register_body(&other, 1, &m))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let mut expired = good.clone();
    expired.expiry = now() - 1;
    assert_eq!(
        h.json("POST", "/v1/jobs", None, &expired).await.0,
        StatusCode::UNAUTHORIZED
    );
    let mut spaced = good.clone();
    spaced.manifest = spaced.manifest.replace(',', ", ");
    assert_eq!(
        h.json("POST", "/v1/jobs", None, &spaced).await.0,
        StatusCode::BAD_REQUEST
    );
    // A manifest whose hash is not the escrowed one.
    let mut m2 = m.clone();
    m2.tasks[0].cost = 11;
    assert_eq!(
        h.json("POST", "/v1/jobs", None, &register_body(&requester, 1, &m2))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    // A missing input blob.
    let mut m3 = m.clone();
    m3.tasks[0].input_hash = B256::repeat_byte(9);
    h.chain_job(3, &m3, requester.address(), 2, deadline);
    let (s, body) = h
        .json("POST", "/v1/jobs", None, &register_body(&requester, 3, &m3))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error(&body).message.contains("not uploaded"));
    assert!(h.state.store().job(U256::from(1)).await.unwrap().is_none());
    assert!(h.state.store().job(U256::from(3)).await.unwrap().is_none());

    // Good, then idempotent, then a different manifest for the same id conflicts.
    let (s, body) = h.json("POST", "/v1/jobs", None, &good).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let st: JobStatus = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (st.state.as_str(), st.tasks, st.redundancy),
        ("registered", 3, 2)
    );
    assert_eq!(
        h.json("POST", "/v1/jobs", None, &good).await.0,
        StatusCode::OK
    );
    h.chain
        .jobs
        .lock()
        .unwrap()
        .get_mut(&U256::from(1))
        .unwrap()
        .spec_hash = m2.spec_hash();
    assert_eq!(
        h.json("POST", "/v1/jobs", None, &register_body(&requester, 1, &m2))
            .await
            .0,
        StatusCode::CONFLICT
    );
    let (s, body) = h.get("/v1/jobs/1", None).await;
    assert_eq!(s, StatusCode::OK);
    let st: JobStatus = serde_json::from_slice(&body).unwrap();
    assert_eq!(st.state, "registered");
    assert_eq!(h.get("/v1/jobs/2", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/v1/jobs/abc", None).await.0, StatusCode::BAD_REQUEST);
    let text = String::from_utf8(h.get("/metrics", None).await.1).unwrap();
    assert!(
        text.contains("gleaner_coordinator_jobs_registered_total 1"),
        "{text}"
    );
}

#[tokio::test]
async fn sign_in_checks_signature_nonce_and_stake() {
    let h = Harness::new().await;
    let w = PrivateKeySigner::random();
    // Not staked.
    let (s, _) = h
        .json("POST", "/v1/sign-in", None, &sign_in_body(&w, 10.0, 5))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    h.sign_in(&w, 10.0, 5).await;
    // Replayed and older nonces.
    for n in [5, 4] {
        let (s, _) = h
            .json("POST", "/v1/sign-in", None, &sign_in_body(&w, 10.0, n))
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "nonce {n}");
    }
    // Tampered capabilities break the signature.
    let mut body = sign_in_body(&w, 10.0, 6);
    body.capabilities.gflops = 1e6;
    assert_eq!(
        h.json("POST", "/v1/sign-in", None, &body).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.state.store().last_nonce(w.address()).await.unwrap(),
        Some(5)
    );
    // Verifier gets its role; a worker token is refused on verifier routes and vice versa.
    let vt = h.sign_in(&h.verifier.clone(), 0.0, 1).await;
    let wt = h.sign_in(&w, 10.0, 7).await;
    assert_eq!(
        h.get("/v1/verifier/work", Some(&wt)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.json(
            "POST",
            "/v1/leases",
            Some(&vt),
            &LeaseRequest { wait_ms: 0 }
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.get("/v1/verifier/work", Some("nope")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.get("/v1/verifier/work", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.get("/v1/verifier/work", Some(&vt)).await.0,
        StatusCode::OK
    );
}

/// A body declared above the limit is refused before a byte of it is read, with the JSON
/// error body; nothing is stored.
#[tokio::test]
async fn a_declared_oversize_body_is_refused_at_once() {
    let h = Harness::new().await;
    let hash = blob_hash(b"never sent");
    for declared in ["1000000000", "4097"] {
        let req = Request::builder()
            .method("PUT")
            .uri(format!("/v1/blobs/{hash}"))
            .header("content-length", declared)
            .body(Body::from_stream(futures_util::stream::pending::<
                Result<Vec<u8>, std::io::Error>,
            >()))
            .unwrap();
        let (s, body) = tokio::time::timeout(std::time::Duration::from_secs(5), h.call(req))
            .await
            .expect("answered at once, without waiting for the body");
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{declared}");
        assert_eq!(error(&body).code, "too_large");
    }
    assert_eq!(
        h.get(&format!("/v1/blobs/{hash}"), None).await.0,
        StatusCode::NOT_FOUND
    );
}

/// A body that never arrives gets 408 with the JSON error body after the request budget.
#[tokio::test]
async fn a_body_that_never_arrives_times_out() {
    let store = gleaner_coordinator::Store::connect("sqlite::memory:")
        .await
        .unwrap();
    let h = Harness::with_settings(store, |s| gleaner_coordinator::ApiSettings {
        request_secs: 0,
        max_wait_ms: 300,
        ..s
    })
    .await;
    let req = Request::builder()
        .method("PUT")
        .uri(format!("/v1/blobs/{}", blob_hash(b"x")))
        .header("content-length", "100")
        .body(Body::from_stream(futures_util::stream::pending::<
            Result<Vec<u8>, std::io::Error>,
        >()))
        .unwrap();
    let (s, body) = tokio::time::timeout(std::time::Duration::from_secs(5), h.call(req))
        .await
        .expect("answered within the budget");
    assert_eq!(s, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(error(&body).code, "request_timeout");
}

/// A wrong method on a real route is 405 with the JSON error body, like every other 4xx.
#[tokio::test]
async fn a_wrong_method_is_405_with_a_json_body() {
    let h = Harness::new().await;
    for (method, uri) in [
        ("DELETE", "/v1/info"),
        ("GET", "/v1/leases"),
        ("POST", "/healthz"),
    ] {
        let (s, body) = h
            .call(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert_eq!(error(&body).code, "method_not_allowed", "{method} {uri}");
    }
}
