//! Fixtures: a fake chain, signed messages, requests.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use alloy::primitives::{Address, B256, Bytes, U256, address};
use alloy::signers::local::PrivateKeySigner;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use gleaner_coordinator::{
    ApiSettings, AppState, BoxFuture, Chain, JobState, OnChainJob, Result, Store, app,
};
use gleaner_protocol::api::{Capabilities, Info, RegisterJob, SignIn};
use gleaner_protocol::bindings::job_status;
use gleaner_protocol::blob::blob_hash;
use gleaner_protocol::eip712;
use gleaner_protocol::task::{JobManifest, KindId, ModelRef, TaskInput, TaskParams};
use tower::ServiceExt;

pub(crate) const MARKET: Address = address!("0x5FbDB2315678afecb367f032d93F642f64180aa3");
pub(crate) const CHAIN_ID: u64 = 31337;

/// A chain in memory.
#[derive(Default)]
pub(crate) struct FakeChain {
    pub(crate) jobs: Mutex<HashMap<U256, OnChainJob>>,
    pub(crate) eligible: Mutex<HashSet<Address>>,
}

impl Chain for FakeChain {
    fn job(&self, id: U256) -> BoxFuture<'_, Result<Option<OnChainJob>>> {
        let j = self.jobs.lock().unwrap().get(&id).cloned();
        Box::pin(async move { Ok(j) })
    }
    fn is_eligible(&self, worker: Address) -> BoxFuture<'_, Result<bool>> {
        let e = self.eligible.lock().unwrap().contains(&worker);
        Box::pin(async move { Ok(e) })
    }
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) fn info() -> Info {
    Info {
        chain_id: CHAIN_ID,
        market: MARKET,
        registry: Address::repeat_byte(2),
        token: Address::repeat_byte(3),
        max_blob_bytes: 0,
    }
}

pub(crate) struct Harness {
    pub(crate) state: AppState,
    pub(crate) chain: Arc<FakeChain>,
    pub(crate) verifier: PrivateKeySigner,
}

impl Harness {
    pub(crate) async fn new() -> Self {
        Self::with_store(Store::connect("sqlite::memory:").await.unwrap()).await
    }

    pub(crate) async fn with_store(store: Store) -> Self {
        Self::with_settings(store, |s| s).await
    }

    /// A harness whose API settings `adjust` changes from the tests' defaults.
    pub(crate) async fn with_settings(
        store: Store,
        adjust: impl FnOnce(ApiSettings) -> ApiSettings,
    ) -> Self {
        let chain = Arc::new(FakeChain::default());
        let verifier = PrivateKeySigner::random();
        let settings = adjust(ApiSettings {
            lease_secs: 120,
            max_blob_bytes: 4096,
            verifier: Some(verifier.address()),
            session_secs: 3600,
            ..ApiSettings::default()
        });
        let state = AppState::new(store, chain.clone(), info(), settings);
        Self {
            state,
            chain,
            verifier,
        }
    }

    /// Sends a request; returns status and body bytes.
    pub(crate) async fn call(&self, req: Request<Body>) -> (StatusCode, Vec<u8>) {
        let res = app(self.state.clone()).oneshot(req).await.unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        (status, body)
    }

    pub(crate) async fn json<T: serde::Serialize>(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &T,
    ) -> (StatusCode, Vec<u8>) {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        self.call(
            b.body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        )
        .await
    }

    pub(crate) async fn get(&self, uri: &str, token: Option<&str>) -> (StatusCode, Vec<u8>) {
        let mut b = Request::builder().method("GET").uri(uri);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        self.call(b.body(Body::empty()).unwrap()).await
    }

    pub(crate) async fn put_blob(&self, bytes: &[u8]) -> B256 {
        let h = blob_hash(bytes);
        let (s, body) = self
            .call(
                Request::builder()
                    .method("PUT")
                    .uri(format!("/v1/blobs/{h}"))
                    .body(Body::from(bytes.to_vec()))
                    .unwrap(),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        h
    }

    /// Signs in `signer` (made eligible) and returns the token.
    pub(crate) async fn sign_in(
        &self,
        signer: &PrivateKeySigner,
        gflops: f64,
        nonce: u64,
    ) -> String {
        self.chain.eligible.lock().unwrap().insert(signer.address());
        let (s, body) = self
            .json(
                "POST",
                "/v1/sign-in",
                None,
                &sign_in_body(signer, gflops, nonce),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let session: gleaner_protocol::api::Session = serde_json::from_slice(&body).unwrap();
        session.token
    }

    /// Registers a job of `n` tasks with `redundancy`, on-chain status POSTED-able, and marks it
    /// posted in the store as the watcher would.
    pub(crate) async fn posted_job(
        &self,
        id: u64,
        n: usize,
        redundancy: u16,
        deadline: u64,
    ) -> JobManifest {
        let requester = PrivateKeySigner::random();
        let m = self.manifest_with_blobs(id, n).await;
        self.chain_job(id, &m, requester.address(), redundancy, deadline);
        let (s, body) = self
            .json("POST", "/v1/jobs", None, &register_body(&requester, id, &m))
            .await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert!(
            self.state
                .store()
                .set_job_state(U256::from(id), JobState::Registered, JobState::Posted)
                .await
                .unwrap()
        );
        m
    }

    pub(crate) async fn manifest_with_blobs(&self, seed: u64, n: usize) -> JobManifest {
        let mut tasks = Vec::new();
        for i in 0..n {
            let h = self
                .put_blob(format!("input {seed} {i}\n").as_bytes())
                .await;
            tasks.push(TaskInput {
                input_hash: h,
                cost: 10,
            });
        }
        manifest(tasks)
    }

    pub(crate) fn chain_job(
        &self,
        id: u64,
        m: &JobManifest,
        requester: Address,
        redundancy: u16,
        deadline: u64,
    ) {
        self.chain.jobs.lock().unwrap().insert(
            U256::from(id),
            OnChainJob {
                requester,
                deadline,
                redundancy,
                task_count: m.tasks.len() as u32,
                status: job_status::OPEN,
                spec_hash: m.spec_hash(),
                tasks_root: B256::ZERO,
            },
        );
    }
}

pub(crate) fn manifest(tasks: Vec<TaskInput>) -> JobManifest {
    JobManifest {
        version: 1,
        kind: KindId::EMBED,
        model: ModelRef {
            id: "all-MiniLM-L6-v2".into(),
            weights_sha256: B256::repeat_byte(0xab),
        },
        params: TaskParams {
            batch: 32,
            max_tokens: 128,
            sampling: None,
            train: None,
        },
        spot_checks: None,
        tasks,
    }
}

pub(crate) fn caps(gflops: f64) -> Capabilities {
    Capabilities {
        adapter: "cpu".into(),
        backend: "ndarray".into(),
        memory_bytes: 0,
        gflops,
        kinds: vec![KindId::EMBED],
    }
}

pub(crate) fn sign_in_body(signer: &PrivateKeySigner, gflops: f64, nonce: u64) -> SignIn {
    let domain = eip712::domain(CHAIN_ID, MARKET);
    gleaner_client::sign::sign_in(signer, &domain, caps(gflops), nonce, now() + 300).unwrap()
}

pub(crate) fn register_body(requester: &PrivateKeySigner, id: u64, m: &JobManifest) -> RegisterJob {
    register_body_for(requester, id, m, CHAIN_ID, MARKET)
}

pub(crate) fn register_body_for(
    requester: &PrivateKeySigner,
    id: u64,
    m: &JobManifest,
    chain_id: u64,
    market: Address,
) -> RegisterJob {
    let domain = eip712::domain(chain_id, market);
    let canonical = m.canonical();
    gleaner_client::sign::register_job(requester, &domain, U256::from(id), &canonical, now() + 300)
        .unwrap()
}

pub(crate) fn sign_result(signer: &PrivateKeySigner, task_hash: B256, result_hash: B256) -> Bytes {
    let domain = eip712::domain(CHAIN_ID, MARKET);
    gleaner_client::sign::task_result(signer, &domain, task_hash, result_hash).unwrap()
}
