//! The HTTP API of `gleaner_protocol::api`, served by axum: one module per resource, and here
//! the shared [`AppState`], the router and the extractors they share.
//!
//! | module | routes |
//! |---|---|
//! | [`info`] | `/healthz`, `/metrics`, `/v1/info` |
//! | [`blobs`] | `/v1/blobs/{hash}` |
//! | [`jobs`] | `/v1/jobs`, `/v1/jobs/{id}`, `/v1/jobs/{id}/results` |
//! | [`sessions`] | `/v1/sign-in` |
//! | [`leases`] | `/v1/leases`, `/v1/leases/{lease_id}/release` |
//! | [`results`] | `/v1/results` |
//! | [`verifier`] | `/v1/verifier/work`, `/v1/verifier/decisions`, `/v1/verifier/settled` |

mod blobs;
mod info;
mod jobs;
mod leases;
mod results;
mod sessions;
mod verifier;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, B256, Signature, U256};
use alloy::sol_types::Eip712Domain;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use gleaner_protocol::api::Info;
use gleaner_protocol::eip712;
use gleaner_protocol::task::JobManifest;
use tokio::sync::Notify;

use crate::cache::BoundedCache;
use crate::chain::Chain;
use crate::db::{JobRow, Store};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Default of [`ApiSettings::max_expiry_ahead_secs`].
pub const MAX_EXPIRY_AHEAD_SECS: u64 = 600;
/// Default of [`ApiSettings::max_wait_ms`].
pub const MAX_WAIT_MS: u32 = 30_000;
/// Most header bytes (names and values) a request may carry: above it, 431 with the JSON error
/// body. The server's parser refuses heads above 64 KiB itself, with a bare 431.
pub const MAX_HEADER_BYTES: usize = 16 << 10;
/// Most headers a request may carry: above it, 431 with the JSON error body. The server's parser
/// refuses more than 256 itself, with a bare 431.
pub const MAX_HEADERS: usize = 100;

/// The default of [`ApiSettings::max_report_bytes`]: the report of a job of ~300,000 replicas.
pub const DEFAULT_MAX_REPORT_BYTES: u64 = 256 << 20;

/// Settings of the API (the part of the config it needs).
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Lease duration: a replica not submitted by then returns to the queue.
    pub lease_secs: u64,
    /// Largest blob (and body) accepted.
    pub max_blob_bytes: u64,
    /// Largest settlement report the verifier may upload (`PUT /v1/verifier/reports`): a
    /// report grows with the job (~0.8 KB per replica), past what any task's blob needs.
    pub max_report_bytes: u64,
    /// The verifier's address: its sign-in gets the `verifier` role.
    pub verifier: Option<Address>,
    /// Session (sign-in) lifetime.
    pub session_secs: u64,
    /// How far ahead a signed message's expiry may be (sign-in, job registration).
    pub max_expiry_ahead_secs: u64,
    /// Longest lease long-poll a worker may ask for.
    pub max_wait_ms: u32,
    /// Workers seen within this many seconds share the work (`None`: the lease duration, at
    /// least 60 s).
    pub worker_active_secs: Option<u64>,
    /// Parsed manifests kept in memory.
    pub manifest_cache: usize,
    /// Longest a request may take, its body included, besides a lease's long-poll wait: a
    /// client whose body never arrives gets 408 instead of holding a connection.
    pub request_secs: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            lease_secs: 120,
            max_blob_bytes: 16 << 20,
            max_report_bytes: DEFAULT_MAX_REPORT_BYTES,
            verifier: None,
            session_secs: 3600,
            max_expiry_ahead_secs: MAX_EXPIRY_AHEAD_SECS,
            max_wait_ms: MAX_WAIT_MS,
            worker_active_secs: None,
            manifest_cache: 1024,
            request_secs: 60,
        }
    }
}

impl ApiSettings {
    /// Workers seen within this many seconds count as active.
    pub fn active_secs(&self) -> u64 {
        self.worker_active_secs
            .unwrap_or_else(|| self.lease_secs.max(60))
    }
}

/// Shared state of the handlers (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    chain: Arc<dyn Chain>,
    info: Info,
    domain: Eip712Domain,
    settings: ApiSettings,
    metrics: Arc<Metrics>,
    work: Arc<Notify>,
    clock_offset: AtomicI64,
    manifests: BoundedCache<U256, Arc<JobManifest>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("info", &self.inner.info)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over a store and a chain; `info.max_blob_bytes` is taken from `settings`.
    pub fn new(store: Store, chain: Arc<dyn Chain>, mut info: Info, settings: ApiSettings) -> Self {
        info.max_blob_bytes = settings.max_blob_bytes;
        let domain = eip712::domain(info.chain_id, info.market);
        let manifests = BoundedCache::new(settings.manifest_cache);
        Self {
            inner: Arc::new(Inner {
                store,
                chain,
                info,
                domain,
                settings,
                metrics: Arc::default(),
                work: Arc::new(Notify::new()),
                clock_offset: AtomicI64::new(0),
                manifests,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The counters, to share with the chain watcher.
    pub fn shared_metrics(&self) -> Arc<Metrics> {
        self.inner.metrics.clone()
    }

    /// What wakes long-polling lease requests, to share with the chain watcher.
    pub fn work_notifier(&self) -> Arc<Notify> {
        self.inner.work.clone()
    }

    /// Wakes long-polling lease requests (new work may be there).
    pub fn notify_work(&self) {
        self.inner.work.notify_waiters();
    }

    /// Number of parsed manifests held in memory (bounded by the settings).
    pub fn cached_manifests(&self) -> usize {
        self.inner.manifests.len()
    }

    /// Unix seconds, as the coordinator sees them.
    pub fn now(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        real.saturating_add_signed(self.inner.clock_offset.load(Ordering::Relaxed))
    }

    /// Moves the coordinator's clock (tests of expiry without sleeping).
    pub fn advance_clock(&self, secs: i64) {
        self.inner.clock_offset.fetch_add(secs, Ordering::Relaxed);
    }

    fn settings(&self) -> &ApiSettings {
        &self.inner.settings
    }

    /// The parsed manifest of a job, from the bounded cache.
    async fn manifest(&self, job: &JobRow) -> Result<Arc<JobManifest>> {
        if let Some(manifest) = self.inner.manifests.get(&job.job_id) {
            return Ok(manifest);
        }
        let manifest = Arc::new(
            JobManifest::from_canonical(job.manifest.as_bytes())
                .map_err(|e| Error::Internal(format!("stored manifest: {e}")))?,
        );
        self.inner.manifests.insert(job.job_id, manifest.clone());
        Ok(manifest)
    }

    /// The (address, role) of the caller's Bearer session; `None` without an `Authorization`
    /// header, 401 for a malformed, unknown or expired one.
    async fn caller(&self, headers: &HeaderMap) -> Result<Option<(Address, String)>> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Error::Unauthorized("expected `Authorization: Bearer TOKEN`; sign in first".into())
            })?;
        self.store()
            .session(token.trim(), self.now())
            .await?
            .map(Some)
            .ok_or_else(|| Error::Unauthorized("unknown or expired session; sign in again".into()))
    }

    /// The address of the caller's session, which must have `role`.
    async fn session(&self, headers: &HeaderMap, role: &str) -> Result<Address> {
        let (address, have) = self.caller(headers).await?.ok_or_else(|| {
            Error::Unauthorized("missing `Authorization: Bearer TOKEN`; sign in first".into())
        })?;
        if have != role {
            return Err(Error::Forbidden(format!(
                "this needs a {role} session, not a {have} one"
            )));
        }
        Ok(address)
    }

    /// Checks an EIP-712 signature by `signer` over `msg` in this deployment's domain.
    fn verify<T: alloy::sol_types::SolStruct>(
        &self,
        msg: &T,
        signature: &[u8],
        signer: Address,
    ) -> Result<()> {
        let signature = Signature::from_raw(signature)
            .map_err(|e| Error::Unauthorized(format!("malformed signature: {e}")))?;
        self.verify_signature(msg, &signature, signer)
    }

    /// [`Self::verify`] for a signature already parsed.
    fn verify_signature<T: alloy::sol_types::SolStruct>(
        &self,
        msg: &T,
        signature: &Signature,
        signer: Address,
    ) -> Result<()> {
        eip712::verify(msg, &self.inner.domain, signature, signer)
            .map_err(|e| Error::Unauthorized(e.to_string()))
    }

    /// Refuses a signed message whose expiry is past or too far ahead.
    fn check_expiry(&self, expiry: u64, now: u64) -> Result<()> {
        eip712::check_expiry(expiry, now, self.settings().max_expiry_ahead_secs)
            .map_err(|e| Error::Unauthorized(e.to_string()))
    }

    /// A registered job, or 404.
    /// The manifest of registered job `id`, from the cache when it is there (no query).
    async fn manifest_of(&self, id: U256) -> Result<Arc<JobManifest>> {
        if let Some(manifest) = self.inner.manifests.get(&id) {
            return Ok(manifest);
        }
        let job = self.find_job(id).await?;
        self.manifest(&job).await
    }

    async fn find_job(&self, id: U256) -> Result<JobRow> {
        self.store()
            .job(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("job {id} is not registered")))
    }
}

/// JSON body whose rejections are [`Error`]s (400, or 413 for an oversized body).
struct ApiJson<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

/// Path parameters whose rejections are [`Error`]s: a percent-encoded parameter that does not
/// decode to UTF-8 (`/v1/jobs/%FF`) is 400 with the JSON error body, not axum's plain text.
struct ApiPath<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Self(v)),
            Err(e) if e.status().is_server_error() => Err(Error::Internal(e.body_text())),
            Err(e) => Err(Error::BadRequest(format!(
                "{}; percent-encode path parameters as UTF-8",
                e.body_text()
            ))),
        }
    }
}

fn json_rejection(e: JsonRejection) -> Error {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::TooLarge("request body too large".into())
    } else {
        Error::BadRequest(e.body_text())
    }
}

fn parse_hash(text: &str) -> Result<B256> {
    text.parse()
        .map_err(|_| Error::BadRequest(format!("{text:?} is not a 0x-prefixed 32-byte hex hash")))
}

fn parse_job_id(text: &str) -> Result<U256> {
    U256::from_str_radix(text, 10)
        .map_err(|_| Error::BadRequest(format!("{text:?} is not a decimal job id")))
}

/// The router: every route of `gleaner_protocol::api` under `/v1`, plus `/healthz` and
/// `/metrics`. Bodies above `max_blob_bytes` are refused with 413.
pub fn app(state: AppState) -> Router {
    let limit = usize::try_from(state.settings().max_blob_bytes).unwrap_or(usize::MAX);
    let report_limit = usize::try_from(state.settings().max_report_bytes).unwrap_or(usize::MAX);
    let v1 = Router::new()
        .route("/info", get(info::info))
        .route("/blobs/{hash}", put(blobs::put_blob).get(blobs::get_blob))
        .route("/jobs", post(jobs::register_job))
        .route("/jobs/{id}", get(jobs::job_status))
        .route("/jobs/{id}/results", get(jobs::job_results))
        .route("/sign-in", post(sessions::sign_in))
        .route("/leases", post(leases::lease))
        .route("/leases/batch", post(leases::lease_batch))
        .route("/leases/{lease_id}/release", post(leases::release))
        .route("/results", post(results::submit_result))
        .route("/results/batch", post(results::submit_results))
        .route("/verifier/work", get(verifier::work))
        .route("/verifier/decisions", post(verifier::decide))
        .route("/verifier/settled", post(verifier::settled))
        .route(
            "/verifier/reports/{hash}",
            put(verifier::put_report).layer(DefaultBodyLimit::max(report_limit)),
        );
    Router::new()
        .route("/healthz", get(info::healthz))
        .route("/metrics", get(info::metrics))
        .nest("/v1", v1)
        .fallback(|| async { Error::NotFound("no such route; see gleaner_protocol::api".into()) })
        .method_not_allowed_fallback(|| async {
            Error::MethodNotAllowed(
                "this route does not take that method; see gleaner_protocol::api".into(),
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Before anything is read: headers above [`MAX_HEADERS`] or [`MAX_HEADER_BYTES`] are refused
/// (431), and a declared body above the limit is refused at once (413, not after a gigabyte);
/// then the whole request, body included, must finish within `request_secs` plus the longest
/// long-poll wait (408 after), so a body that trickles or never arrives does not hold a
/// connection. Whatever answers, a 4xx leaves with the JSON error body ([`json_error_body`]).
async fn guard(
    axum::extract::State(s): axum::extract::State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let settings = s.settings();
    if let Err(e) = check_headers(req.headers()) {
        return e.into_response();
    }
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // The verifier's report upload has its own, larger limit (checked again by its handler,
    // which also requires the verifier's session).
    let limit = if req.uri().path().starts_with(REPORTS_PREFIX) {
        settings.max_report_bytes
    } else {
        settings.max_blob_bytes
    };
    if let Some(len) = declared.filter(|&n| n > limit) {
        return Error::TooLarge(format!(
            "the body declares {len} bytes; this coordinator accepts at most {limit}"
        ))
        .into_response();
    }
    let budget = std::time::Duration::from_secs(settings.request_secs)
        + std::time::Duration::from_millis(u64::from(settings.max_wait_ms));
    match tokio::time::timeout(budget, next.run(req)).await {
        Ok(response) => json_error_body(response).await,
        Err(_) => Error::Timeout(format!(
            "the request did not complete within {} s",
            budget.as_secs()
        ))
        .into_response(),
    }
}

/// Where the verifier uploads settlement reports.
const REPORTS_PREFIX: &str = "/v1/verifier/reports/";

/// Refuses more than [`MAX_HEADERS`] headers or more than [`MAX_HEADER_BYTES`] of them.
fn check_headers(headers: &HeaderMap) -> Result<()> {
    if headers.len() > MAX_HEADERS {
        return Err(Error::HeadersTooLarge(format!(
            "the request has {} headers; this coordinator accepts at most {MAX_HEADERS}",
            headers.len()
        )));
    }
    // As on the wire: `name: value\r\n`.
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(Error::HeadersTooLarge(format!(
            "the request's headers take {bytes} bytes; this coordinator accepts at most \
             {MAX_HEADER_BYTES}; send large data in the body"
        )));
    }
    Ok(())
}

/// A 4xx whose body is not JSON (a rejection axum makes itself, with a plain-text body) gets the
/// documented `ApiError` body, its text as the message, so that every 4xx has it.
async fn json_error_body(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !response.status().is_client_error() || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        parts
            .status
            .canonical_reason()
            .unwrap_or("client error")
            .to_owned()
    } else {
        text
    };
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = crate::error::api_error(parts.status, message);
    let mut answer = (parts.status, Json(body)).into_response();
    answer.headers_mut().extend(parts.headers);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> Vec<u8> {
        axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    /// A plain-text 4xx (an axum rejection) gets the JSON error body with its status, text and
    /// other headers; JSON 4xx and other statuses pass unchanged.
    #[tokio::test]
    async fn every_4xx_leaves_with_the_json_error_body() {
        let plain = (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            [(header::RETRY_AFTER, "1")],
            "Expected request with `Content-Type: application/json`",
        )
            .into_response();
        let r = json_error_body(plain).await;
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let e: gleaner_protocol::api::ApiError = serde_json::from_slice(&body(r).await).unwrap();
        assert_eq!(e.code, "unsupported_media_type");
        assert_eq!(
            e.message,
            "Expected request with `Content-Type: application/json`"
        );

        let empty = StatusCode::LENGTH_REQUIRED.into_response();
        let e: gleaner_protocol::api::ApiError =
            serde_json::from_slice(&body(json_error_body(empty).await).await).unwrap();
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("length_required", "Length Required")
        );

        let json = Error::NotFound("no job 7".into()).into_response();
        let r = json_error_body(json).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let e: gleaner_protocol::api::ApiError = serde_json::from_slice(&body(r).await).unwrap();
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("not_found", "no job 7")
        );

        let ok = (StatusCode::OK, "ok").into_response();
        assert_eq!(body(json_error_body(ok).await).await, b"ok");
    }

    /// Headers are counted as on the wire, against both limits.
    #[test]
    fn header_limits() {
        let mut h = HeaderMap::new();
        h.insert("x-big", "a".repeat(MAX_HEADER_BYTES - 9).parse().unwrap());
        assert!(check_headers(&h).is_ok());
        h.insert("x-big", "a".repeat(MAX_HEADER_BYTES - 8).parse().unwrap());
        assert!(matches!(check_headers(&h), Err(Error::HeadersTooLarge(_))));
        let mut h = HeaderMap::new();
        for i in 0..=MAX_HEADERS {
            h.insert(
                header::HeaderName::try_from(format!("x-h{i}")).unwrap(),
                "v".parse().unwrap(),
            );
        }
        assert!(matches!(check_headers(&h), Err(Error::HeadersTooLarge(_))));
        h.remove("x-h0");
        assert!(check_headers(&h).is_ok());
    }
}
