//! [`Client`]: every route of the coordinator's API (`gleaner_protocol::api`), typed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::{B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use gleaner_protocol::api::{
    ApiError, BlobRef, Capabilities, Decision, Info, JobResults, JobStatus, Lease,
    LeaseBatchRequest, LeaseRequest, Leases, RegisterJob, Session, Settled, SubmitResult,
    SubmitResults, VerifierWork,
};
use gleaner_protocol::blob::blob_hash;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use tracing::debug;

use crate::{Error, Result, RetryPolicy, sign};

/// How long a request may take unless it says otherwise (a long poll adds its wait).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle keep-alive connection is kept for reuse.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a blob transfer may take (16 MiB at ~40 kB/s): blobs are large, and a total
/// timeout sized for API calls would cut slow links off and re-send the whole blob.
const BLOB_TIMEOUT: Duration = Duration::from_secs(3600);

/// Whether a request may be sent again after a failure that may have reached the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// Sending it twice changes nothing (reads, content-addressed uploads, registrations and
    /// results the coordinator recognises the second time): every recoverable failure is
    /// retried.
    Safe,
    /// Sending it twice could count twice (a `more` decision, a sign-in nonce, a lease):
    /// retried only when the coordinator surely did not act on it (the connection was never
    /// made, or it answered 429 or 503); otherwise the failure goes to the caller.
    Unsafe,
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// A client of one coordinator, with the caller's session once signed in; cheap to clone.
///
/// Every request goes through one status check and one [`RetryPolicy`]: transport errors, 429
/// and 5xx are retried with backoff, other 4xx are returned at once as [`Error::Refused`].
/// Every blob download is checked against its hash before the bytes are returned.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    retry: RetryPolicy,
    session: Option<Session>,
    grant: Option<String>,
    last_nonce: u64,
}

impl Client {
    /// A client of the coordinator at `base_url` (`http://host:port`), with the default
    /// [`RetryPolicy`].
    pub fn new(base_url: &str) -> Result<Self> {
        let url = base_url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Config(format!(
                "coordinator URL {base_url:?} must start with http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // The coordinator closes a keep-alive connection idle for its header timeout
            // (10 s by default): reuse one only well within that, or a request sent as it
            // closes fails (and a result, which is not replayed, would be lost).
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self {
            http,
            base: url.to_owned(),
            retry: RetryPolicy::default(),
            session: None,
            grant: None,
            last_nonce: 0,
        })
    }

    /// Uses `policy` for every later request.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Shows `grant` (a requester's [`ReadGrant`](gleaner_protocol::api::ReadGrant)) with every
    /// later request, so blob downloads of its job are allowed.
    pub fn with_grant(mut self, grant: &gleaner_protocol::api::ReadGrant) -> Self {
        self.grant = Some(grant.token());
        self
    }

    /// The coordinator's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The session held, if any.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Whether a session is held that stays valid for at least `margin` more.
    pub fn signed_in(&self, margin: Duration) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.expires_at > unix_now().as_secs().saturating_add(margin.as_secs()))
    }

    /// Forgets the session (after a 401, or to sign in again).
    pub fn sign_out(&mut self) {
        self.session = None;
    }

    /// Signs in with `signer` (a worker's staking key or the verifier's key): an EIP-712
    /// `WorkerSignIn` stating `capabilities`, valid for `valid_for`. Later requests carry the
    /// session's Bearer token.
    pub async fn sign_in(
        &mut self,
        signer: &PrivateKeySigner,
        domain: &Eip712Domain,
        capabilities: Capabilities,
        valid_for: Duration,
    ) -> Result<&Session> {
        let now = unix_now();
        // Strictly increasing per address, even for two sign-ins within one millisecond.
        let nonce = u64::try_from(now.as_millis())
            .unwrap_or(u64::MAX)
            .max(self.last_nonce.saturating_add(1));
        self.last_nonce = nonce;
        let expiry = now.as_secs().saturating_add(valid_for.as_secs());
        let body = sign::sign_in(signer, domain, capabilities, nonce, expiry)?;
        let session: Session = self
            .json("sign-in", Replay::Unsafe, |c| {
                c.request(Method::POST, "/v1/sign-in").json(&body)
            })
            .await?;
        Ok(self.session.insert(session))
    }

    /// `GET /v1/info`: the deployment the coordinator serves.
    pub async fn info(&self) -> Result<Info> {
        self.json("info", Replay::Safe, |c| c.request(Method::GET, "/v1/info"))
            .await
    }

    /// `POST /v1/leases`: a lease, or `None` when no work came within `wait_ms` (long poll).
    pub async fn lease(&self, wait_ms: u32) -> Result<Option<Lease>> {
        let timeout = Duration::from_millis(u64::from(wait_ms)) + REQUEST_TIMEOUT;
        let resp = self
            .send("lease", Replay::Unsafe, |c| {
                c.request(Method::POST, "/v1/leases")
                    .json(&LeaseRequest { wait_ms })
                    .timeout(timeout)
            })
            .await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        decode("lease", resp).await.map(Some)
    }

    /// `POST /v1/leases/batch`: up to `max` replicas at once, waiting up to `wait_ms` for a
    /// first one; empty when there is no work for this worker.
    pub async fn lease_batch(&self, wait_ms: u32, max: u32) -> Result<Vec<Lease>> {
        let timeout = Duration::from_millis(u64::from(wait_ms)) + REQUEST_TIMEOUT;
        let resp = self
            .send("lease batch", Replay::Unsafe, |c| {
                c.request(Method::POST, "/v1/leases/batch")
                    .json(&LeaseBatchRequest { wait_ms, max })
                    .timeout(timeout)
            })
            .await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        decode::<Leases>("lease batch", resp)
            .await
            .map(|l| l.leases)
    }

    /// `POST /v1/results/batch`: results signed once (see [`crate::sign::task_results`]),
    /// taken whole or refused whole. Safe to resend, like [`Self::submit`].
    pub async fn submit_batch(&self, body: &SubmitResults) -> Result<()> {
        self.send("result batch", Replay::Safe, |c| {
            c.request(Method::POST, "/v1/results/batch")
                .json(body)
                .timeout(BLOB_TIMEOUT)
        })
        .await
        .map(drop)
    }

    /// `POST /v1/leases/{id}/release`: gives a leased replica back to the queue.
    pub async fn release(&self, lease_id: &str) -> Result<()> {
        let path = format!("/v1/leases/{lease_id}/release");
        self.send("release", Replay::Safe, |c| c.request(Method::POST, &path))
            .await
            .map(drop)
    }

    /// `POST /v1/results`: a signed result (its output blob uploaded first). Safe to resend:
    /// the coordinator answers 204 to the same result again, so a lost reply costs nothing.
    pub async fn submit(&self, body: &SubmitResult) -> Result<()> {
        self.send("result", Replay::Safe, |c| {
            c.request(Method::POST, "/v1/results").json(body)
        })
        .await
        .map(drop)
    }

    /// `GET /v1/blobs/{sha256}`: the bytes, checked against `hash`; a blob the coordinator
    /// does not have is [`Error::Refused`] with status 404, one this caller may not read
    /// (no session or grant that names it) 403.
    pub async fn blob(&self, hash: B256) -> Result<Vec<u8>> {
        let path = format!("/v1/blobs/{hash}");
        let resp = self
            .send("blob", Replay::Safe, |c| {
                c.request(Method::GET, &path).timeout(BLOB_TIMEOUT)
            })
            .await?;
        let bytes = resp.bytes().await.map_err(|e| transport("blob", &e))?;
        let got = blob_hash(&bytes);
        if got != hash {
            return Err(Error::BadBlob { want: hash, got });
        }
        Ok(bytes.to_vec())
    }

    /// [`Client::blob`], with `None` for a blob the coordinator does not have.
    pub async fn blob_if_present(&self, hash: B256) -> Result<Option<Vec<u8>>> {
        match self.blob(hash).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.refused_status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT /v1/blobs/{sha256}`: stores `bytes`; returns their hash, checked against the
    /// coordinator's receipt.
    pub async fn put_blob(&self, bytes: Vec<u8>) -> Result<B256> {
        self.put_addressed("/v1/blobs", "blob upload", bytes).await
    }

    /// `PUT /v1/verifier/reports/{sha256}` (the verifier's session): stores a settlement
    /// report, which may exceed the blob limit; returns its hash, checked against the receipt.
    pub async fn put_report(&self, bytes: Vec<u8>) -> Result<B256> {
        self.put_addressed("/v1/verifier/reports", "report upload", bytes)
            .await
    }

    /// `PUT {prefix}/{sha256}` of `bytes`, the stored hash checked against theirs.
    async fn put_addressed(&self, prefix: &str, what: &str, bytes: Vec<u8>) -> Result<B256> {
        let hash = blob_hash(&bytes);
        let path = format!("{prefix}/{hash}");
        let body = alloy::primitives::Bytes::from(bytes).0;
        let stored: BlobRef = self
            .json(what, Replay::Safe, |c| {
                c.request(Method::PUT, &path)
                    .body(body.clone())
                    .timeout(BLOB_TIMEOUT)
            })
            .await?;
        if stored.hash != hash {
            return Err(Error::Decode {
                what: what.into(),
                message: format!("stored {hash} as {}", stored.hash),
            });
        }
        Ok(hash)
    }

    /// `POST /v1/jobs`: registers a signed manifest of an on-chain job.
    pub async fn register_job(&self, body: &RegisterJob) -> Result<JobStatus> {
        self.json("job registration", Replay::Safe, |c| {
            c.request(Method::POST, "/v1/jobs").json(body)
        })
        .await
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job_status(&self, job_id: U256) -> Result<JobStatus> {
        let path = format!("/v1/jobs/{job_id}");
        self.json("job status", Replay::Safe, |c| {
            c.request(Method::GET, &path)
        })
        .await
    }

    /// `GET /v1/jobs/{id}/results`: accepted outputs in task order, and the manifest.
    pub async fn job_results(&self, job_id: U256) -> Result<JobResults> {
        let path = format!("/v1/jobs/{job_id}/results");
        self.json("job results", Replay::Safe, |c| {
            c.request(Method::GET, &path)
        })
        .await
    }

    /// `GET /v1/verifier/work` (verifier session).
    pub async fn verifier_work(&self) -> Result<VerifierWork> {
        self.json("verifier work", Replay::Safe, |c| {
            c.request(Method::GET, "/v1/verifier/work")
        })
        .await
    }

    /// `POST /v1/verifier/decisions` (verifier session).
    pub async fn decide(&self, decision: &Decision) -> Result<()> {
        self.send("decision", Replay::Unsafe, |c| {
            c.request(Method::POST, "/v1/verifier/decisions")
                .json(decision)
        })
        .await
        .map(drop)
    }

    /// `POST /v1/verifier/settled` (verifier session).
    pub async fn settled(&self, settled: &Settled) -> Result<()> {
        self.send("settled", Replay::Safe, |c| {
            c.request(Method::POST, "/v1/verifier/settled")
                .json(settled)
        })
        .await
        .map(drop)
    }

    /// A request to `path`, with the session's token when one is held.
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(grant) = &self.grant {
            req = req.header(gleaner_protocol::api::GRANT_HEADER, grant);
        }
        match &self.session {
            Some(s) => req.bearer_auth(&s.token),
            None => req,
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        replay: Replay,
        build: impl Fn(&Self) -> RequestBuilder,
    ) -> Result<T> {
        decode(what, self.send(what, replay, build).await?).await
    }

    /// Sends the request `build` makes, retrying recoverable failures under the policy (only
    /// those the coordinator surely did not act on, for [`Replay::Unsafe`] requests); returns
    /// the successful response.
    async fn send(
        &self,
        what: &str,
        replay: Replay,
        build: impl Fn(&Self) -> RequestBuilder,
    ) -> Result<Response> {
        let mut retry = 0;
        loop {
            let (err, retry_after, unprocessed) = match build(self).send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let retry_after = retry_after(&resp);
                    let status = resp.status().as_u16();
                    (
                        refusal(what, resp).await,
                        retry_after,
                        status == 429 || status == 503,
                    )
                }
                Err(e) => (transport(what, &e), None, e.is_connect()),
            };
            retry += 1;
            let may_retry = err.recoverable() && (replay == Replay::Safe || unprocessed);
            if !may_retry || retry >= self.retry.attempts {
                return Err(err);
            }
            let delay = self.retry.delay(retry - 1, retry_after);
            debug!(target: "client", what, error = %err, ?delay, "retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

fn transport(what: &str, e: &reqwest::Error) -> Error {
    Error::Transport {
        what: what.to_owned(),
        message: e.to_string(),
    }
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let secs = resp.headers().get("retry-after")?.to_str().ok()?;
    secs.trim().parse().ok().map(Duration::from_secs)
}

/// The error a non-2xx response stands for: 429 and 5xx are [`Error::Unavailable`].
async fn refusal(what: &str, resp: Response) -> Error {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ApiError>(&text)
        .map(|e| format!("{}: {}", e.code, e.message))
        .unwrap_or(text);
    let (what, status) = (what.to_owned(), status.as_u16());
    if status == 429 || status >= 500 {
        Error::Unavailable {
            what,
            status,
            message,
        }
    } else {
        Error::Refused {
            what,
            status,
            message,
        }
    }
}

async fn decode<T: DeserializeOwned>(what: &str, resp: Response) -> Result<T> {
    let bytes = resp.bytes().await.map_err(|e| transport(what, &e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
        what: what.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::Router;
    use axum::http::StatusCode as Status;
    use axum::routing::get;

    use super::*;

    /// Serves `router` on a free loopback port; returns a client of it that retries quickly.
    async fn serve(router: Router) -> Client {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Client::new(&format!("http://{addr}/"))
            .unwrap()
            .with_retry(RetryPolicy {
                attempts: 4,
                initial_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
            })
    }

    fn info() -> Info {
        Info {
            chain_id: 31337,
            market: alloy::primitives::Address::repeat_byte(1),
            registry: alloy::primitives::Address::repeat_byte(2),
            token: alloy::primitives::Address::repeat_byte(3),
            max_blob_bytes: 1,
        }
    }

    /// A route that answers `status` for the first `fail` calls, then `ok`; counts calls.
    fn flaky(fail: u32, status: Status, hits: Arc<AtomicU32>) -> Router {
        Router::new().route(
            "/v1/info",
            get(move || {
                let n = hits.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < fail {
                        (
                            status,
                            r#"{"code":"busy","message":"try later"}"#.to_owned(),
                        )
                    } else {
                        (Status::OK, serde_json::to_string(&info()).unwrap())
                    }
                }
            }),
        )
    }

    #[tokio::test]
    async fn busy_and_failing_coordinators_are_retried_until_they_answer() {
        for status in [Status::TOO_MANY_REQUESTS, Status::SERVICE_UNAVAILABLE] {
            let hits = Arc::new(AtomicU32::new(0));
            let client = serve(flaky(2, status, hits.clone())).await;
            assert_eq!(client.info().await.unwrap(), info());
            assert_eq!(hits.load(Ordering::SeqCst), 3, "{status}");
        }
    }

    #[tokio::test]
    async fn a_decision_is_not_sent_twice_when_the_coordinator_may_have_acted_on_it() {
        use alloy::primitives::U256;
        use axum::routing::post;
        let hits = Arc::new(AtomicU32::new(0));
        let (h500, h503) = (hits.clone(), Arc::new(AtomicU32::new(0)));
        let h503c = h503.clone();
        let router = Router::new()
            .route(
                "/v1/verifier/decisions",
                post(move || {
                    h500.fetch_add(1, Ordering::SeqCst);
                    async { (Status::INTERNAL_SERVER_ERROR, "{}") }
                }),
            )
            .route(
                "/v1/verifier/settled",
                post(move || {
                    let n = h503c.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n < 1 {
                            (Status::SERVICE_UNAVAILABLE, "{}")
                        } else {
                            (Status::NO_CONTENT, "")
                        }
                    }
                }),
            );
        let client = serve(router).await;
        let more = Decision {
            job_id: U256::from(1),
            index: 0,
            verdict: gleaner_protocol::api::Verdict::More { extra_replicas: 1 },
        };
        assert!(client.decide(&more).await.unwrap_err().recoverable());
        assert_eq!(hits.load(Ordering::SeqCst), 1, "a 500 may have applied it");
        let settled = Settled {
            job_id: U256::from(1),
            report_hash: B256::ZERO,
            tx_hash: B256::ZERO,
        };
        client.settled(&settled).await.unwrap();
        assert_eq!(h503.load(Ordering::SeqCst), 2, "idempotent: retried");
    }

    #[tokio::test]
    async fn retries_stop_at_the_policy_and_say_so() {
        let hits = Arc::new(AtomicU32::new(0));
        let client = serve(flaky(100, Status::SERVICE_UNAVAILABLE, hits.clone())).await;
        let err = client.info().await.unwrap_err();
        assert!(err.recoverable(), "{err}");
        assert!(err.to_string().contains("503"), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried_and_carries_the_api_message() {
        let hits = Arc::new(AtomicU32::new(0));
        let client = serve(flaky(100, Status::BAD_REQUEST, hits.clone())).await;
        let err = client.info().await.unwrap_err();
        assert!(!err.recoverable());
        assert_eq!(err.refused_status(), Some(400));
        assert!(err.to_string().contains("busy: try later"), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn transport_errors_are_recoverable() {
        // Bind and drop: nothing listens on the port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::new(&format!("http://127.0.0.1:{port}"))
            .unwrap()
            .with_retry(RetryPolicy::NONE);
        let err = client.info().await.unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err}");
        assert!(err.recoverable());
    }

    #[tokio::test]
    async fn blobs_are_hash_checked_and_absent_ones_are_none() {
        let good = b"the right bytes".to_vec();
        let good_hash = blob_hash(&good);
        let lied_about = B256::repeat_byte(7);
        let router = Router::new().route(
            "/v1/blobs/{hash}",
            get(
                move |axum::extract::Path(h): axum::extract::Path<String>| async move {
                    let h: B256 = h.parse().unwrap();
                    if h == good_hash || h == lied_about {
                        (Status::OK, b"the right bytes".to_vec())
                    } else {
                        (
                            Status::NOT_FOUND,
                            br#"{"code":"not_found","message":"no"}"#.to_vec(),
                        )
                    }
                },
            ),
        );
        let client = serve(router).await;
        assert_eq!(client.blob(good_hash).await.unwrap(), good);
        match client.blob(lied_about).await.unwrap_err() {
            Error::BadBlob { want, got } => assert_eq!((want, got), (lied_about, good_hash)),
            e => panic!("{e}"),
        }
        assert!(client.blob_if_present(lied_about).await.is_err());
        let absent = B256::repeat_byte(9);
        assert_eq!(client.blob_if_present(absent).await.unwrap(), None);
        assert_eq!(
            client.blob(absent).await.unwrap_err().refused_status(),
            Some(404)
        );
    }

    #[test]
    fn a_url_without_a_scheme_is_refused() {
        assert!(matches!(
            Client::new("127.0.0.1:8080"),
            Err(Error::Config(_))
        ));
    }
}
