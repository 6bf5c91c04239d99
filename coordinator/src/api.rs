//! The HTTP API of `gleaner_protocol::api`, served by axum.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, B256, Signature, U256};
use alloy::sol_types::Eip712Domain;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use gleaner_protocol::api::{
    BlobRef, DecidedTask, Decision, Info, JobForReview, JobResults, JobStatus, Lease, LeaseRequest,
    RegisterJob, ReplicaView, Session, Settled, SignIn, SubmitResult, TaskForReview, TaskResultRef,
    VerifierWork,
};
use gleaner_protocol::bindings::job_status;
use gleaner_protocol::blob::blob_hash;
use gleaner_protocol::eip712::{self, JobRegistration, TaskResult, WorkerSignIn};
use gleaner_protocol::merkle::MerkleTree;
use gleaner_protocol::task::JobManifest;
use tokio::sync::Notify;

use crate::chain::Chain;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::{JobRow, NewTask, Store, job_state};

/// How far ahead a signed message's expiry may be.
pub const MAX_EXPIRY_AHEAD_SECS: u64 = 600;
/// Longest long-poll.
pub const MAX_WAIT_MS: u32 = 30_000;

/// Settings of the API (the part of the config it needs).
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Lease duration.
    pub lease_secs: u64,
    /// Largest blob (and body) accepted.
    pub max_blob_bytes: u64,
    /// The verifier's address: its sign-in gets the `verifier` role.
    pub verifier: Option<Address>,
    /// Session lifetime.
    pub session_secs: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            lease_secs: 120,
            max_blob_bytes: 16 << 20,
            verifier: None,
            session_secs: 3600,
        }
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
    metrics: Metrics,
    work: Notify,
    clock_offset: AtomicI64,
    manifests: Mutex<HashMap<U256, Arc<JobManifest>>>,
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
        Self {
            inner: Arc::new(Inner {
                store,
                chain,
                info,
                domain,
                settings,
                metrics: Metrics::default(),
                work: Notify::new(),
                clock_offset: AtomicI64::new(0),
                manifests: Mutex::new(HashMap::new()),
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

    /// Wakes long-polling lease requests (new work may be there).
    pub fn notify_work(&self) {
        self.inner.work.notify_waiters();
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

    async fn manifest(&self, job: &JobRow) -> Result<Arc<JobManifest>> {
        if let Some(m) = self
            .inner
            .manifests
            .lock()
            .expect("not poisoned")
            .get(&job.job_id)
        {
            return Ok(m.clone());
        }
        let m = Arc::new(
            JobManifest::from_canonical(job.manifest.as_bytes())
                .map_err(|e| Error::Internal(format!("stored manifest: {e}")))?,
        );
        self.inner
            .manifests
            .lock()
            .expect("not poisoned")
            .insert(job.job_id, m.clone());
        Ok(m)
    }

    async fn session(&self, headers: &HeaderMap, role: &str) -> Result<Address> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Error::Unauthorized("missing `Authorization: Bearer TOKEN`; sign in first".into())
            })?;
        let (address, have) = self
            .store()
            .session(token.trim(), self.now())
            .await?
            .ok_or_else(|| {
                Error::Unauthorized("unknown or expired session; sign in again".into())
            })?;
        if have != role {
            return Err(Error::Forbidden(format!(
                "this needs a {role} session, not a {have} one"
            )));
        }
        Ok(address)
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

fn json_rejection(e: JsonRejection) -> Error {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::TooLarge("request body too large".into())
    } else {
        Error::BadRequest(e.body_text())
    }
}

fn parse_signature(b: &[u8]) -> Result<Signature> {
    Signature::from_raw(b).map_err(|e| Error::Unauthorized(format!("malformed signature: {e}")))
}

fn verify<T: alloy::sol_types::SolStruct>(
    state: &AppState,
    msg: &T,
    sig: &[u8],
    signer: Address,
) -> Result<()> {
    eip712::verify(msg, &state.inner.domain, &parse_signature(sig)?, signer)
        .map_err(|e| Error::Unauthorized(e.to_string()))
}

/// The router: every route of `gleaner_protocol::api` under `/v1`, plus `/healthz` and
/// `/metrics`. Bodies above `max_blob_bytes` are refused with 413.
pub fn app(state: AppState) -> Router {
    let limit = usize::try_from(state.inner.settings.max_blob_bytes).unwrap_or(usize::MAX);
    let v1 = Router::new()
        .route("/info", get(info))
        .route("/blobs/{hash}", put(put_blob).get(get_blob))
        .route("/jobs", post(register_job))
        .route("/jobs/{id}", get(job_status_route))
        .route("/jobs/{id}/results", get(job_results))
        .route("/sign-in", post(sign_in))
        .route("/leases", post(lease))
        .route("/leases/{lease_id}/release", post(release))
        .route("/results", post(submit_result))
        .route("/verifier/work", get(verifier_work))
        .route("/verifier/decisions", post(decide))
        .route("/verifier/settled", post(settled));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .nest("/v1", v1)
        .fallback(|| async { Error::NotFound("no such route; see gleaner_protocol::api".into()) })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn metrics(State(s): State<AppState>) -> Result<Response> {
    let q = s.store().queue_stats(s.now()).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics().render(q),
    )
        .into_response())
}

async fn info(State(s): State<AppState>) -> Json<Info> {
    Json(s.inner.info.clone())
}

fn parse_hash(h: &str) -> Result<B256> {
    h.parse()
        .map_err(|_| Error::BadRequest(format!("{h:?} is not a 0x-prefixed 32-byte hex hash")))
}

fn parse_job_id(id: &str) -> Result<U256> {
    U256::from_str_radix(id, 10)
        .map_err(|_| Error::BadRequest(format!("{id:?} is not a decimal job id")))
}

async fn put_blob(
    State(s): State<AppState>,
    Path(hash): Path<String>,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<BlobRef>> {
    let hash = parse_hash(&hash)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::TooLarge(format!(
                "blob larger than {} bytes",
                s.inner.settings.max_blob_bytes
            ))
        } else {
            Error::BadRequest(e.body_text())
        }
    })?;
    if body.len() as u64 > s.inner.settings.max_blob_bytes {
        return Err(Error::TooLarge(format!(
            "blob larger than {} bytes",
            s.inner.settings.max_blob_bytes
        )));
    }
    let actual = blob_hash(&body);
    if actual != hash {
        return Err(Error::BadRequest(format!(
            "the bytes hash to {actual}, not {hash}"
        )));
    }
    s.store().put_blob(hash, &body).await?;
    Metrics::inc(&s.metrics().blobs);
    Ok(Json(BlobRef {
        hash,
        size: body.len() as u64,
    }))
}

async fn get_blob(State(s): State<AppState>, Path(hash): Path<String>) -> Result<Response> {
    let hash = parse_hash(&hash)?;
    let bytes = s
        .store()
        .blob(hash)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no blob {hash}")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn status_of(s: &AppState, job: &JobRow) -> Result<JobStatus> {
    let (replicas_done, tasks_accepted, tasks_failed) = s.store().job_progress(job.job_id).await?;
    let state = if job.state == job_state::POSTED && tasks_accepted + tasks_failed == job.task_count
    {
        "verifying".to_owned()
    } else {
        job.state.clone()
    };
    Ok(JobStatus {
        job_id: job.job_id,
        state,
        tasks: job.task_count,
        redundancy: job.redundancy,
        replicas_done,
        tasks_accepted,
        tasks_failed,
        report_hash: job.report_hash,
    })
}

async fn find_job(s: &AppState, id: U256) -> Result<JobRow> {
    s.store()
        .job(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("job {id} is not registered")))
}

async fn job_status_route(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobStatus>> {
    let job = find_job(&s, parse_job_id(&id)?).await?;
    Ok(Json(status_of(&s, &job).await?))
}

async fn job_results(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobResults>> {
    let job = find_job(&s, parse_job_id(&id)?).await?;
    let tasks = s
        .store()
        .tasks(job.job_id)
        .await?
        .into_iter()
        .map(|t| TaskResultRef {
            index: t.index,
            result: t.accepted_result,
        })
        .collect();
    Ok(Json(JobResults {
        job_id: job.job_id,
        tasks,
        report_hash: job.report_hash,
        manifest: job.manifest,
    }))
}

async fn register_job(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<RegisterJob>,
) -> Result<Json<JobStatus>> {
    let now = s.now();
    eip712::check_expiry(req.expiry, now, MAX_EXPIRY_AHEAD_SECS)
        .map_err(|e| Error::Unauthorized(e.to_string()))?;
    let manifest = JobManifest::from_canonical(req.manifest.as_bytes())?;
    let spec_hash = manifest.spec_hash();
    let msg = JobRegistration {
        jobId: req.job_id,
        specHash: spec_hash,
        requester: req.requester,
        expiry: req.expiry,
    };
    verify(&s, &msg, &req.signature, req.requester)?;

    if let Some(existing) = s.store().job(req.job_id).await? {
        if existing.spec_hash == spec_hash && existing.requester == req.requester {
            return Ok(Json(status_of(&s, &existing).await?));
        }
        return Err(Error::Conflict(format!(
            "job {} is already registered with another manifest",
            req.job_id
        )));
    }

    let on_chain =
        s.inner.chain.job(req.job_id).await?.ok_or_else(|| {
            Error::NotFound(format!("job {} does not exist on-chain", req.job_id))
        })?;
    if on_chain.requester != req.requester {
        return Err(Error::Forbidden(format!(
            "job {} belongs to {}, not {}",
            req.job_id, on_chain.requester, req.requester
        )));
    }
    if on_chain.spec_hash != spec_hash {
        return Err(Error::BadRequest(format!(
            "the manifest hashes to {spec_hash}, the on-chain job escrows {}",
            on_chain.spec_hash
        )));
    }
    if on_chain.task_count as usize != manifest.tasks.len() {
        return Err(Error::BadRequest(format!(
            "the manifest has {} tasks, the on-chain job {}",
            manifest.tasks.len(),
            on_chain.task_count
        )));
    }
    if on_chain.status != job_status::OPEN && on_chain.status != job_status::POSTED {
        return Err(Error::Conflict(format!(
            "job {} is no longer open (status {})",
            req.job_id, on_chain.status
        )));
    }
    if on_chain.deadline <= now {
        return Err(Error::BadRequest(format!(
            "job {} passed its deadline",
            req.job_id
        )));
    }
    let inputs: Vec<B256> = manifest.tasks.iter().map(|t| t.input_hash).collect();
    let missing = s.store().missing_blobs(&inputs).await?;
    if !missing.is_empty() {
        return Err(Error::BadRequest(format!(
            "{} input blob(s) are not uploaded, first {}: PUT /v1/blobs/HASH first",
            missing.len(),
            missing[0]
        )));
    }

    let task_hashes = manifest.task_hashes(req.job_id);
    let tasks: Vec<NewTask> = task_hashes
        .iter()
        .zip(&manifest.tasks)
        .map(|(h, t)| NewTask {
            task_hash: *h,
            input_hash: t.input_hash,
            cost: t.cost,
        })
        .collect();
    let row = JobRow {
        job_id: req.job_id,
        manifest: req.manifest.clone(),
        spec_hash,
        requester: req.requester,
        redundancy: on_chain.redundancy.max(1),
        task_count: on_chain.task_count,
        deadline: on_chain.deadline,
        state: job_state::REGISTERED.to_owned(),
        tasks_root: MerkleTree::from_task_hashes(&task_hashes).root(),
        post_tx: None,
        report_hash: None,
    };
    if !s.store().insert_job(&row, &tasks, now).await? {
        // Lost a race with an identical (or different) registration.
        let existing = find_job(&s, req.job_id).await?;
        if existing.spec_hash != spec_hash {
            return Err(Error::Conflict(format!(
                "job {} is already registered with another manifest",
                req.job_id
            )));
        }
        return Ok(Json(status_of(&s, &existing).await?));
    }
    Metrics::inc(&s.metrics().jobs_registered);
    tracing::info!(target: "coordinator::api", job_id = %req.job_id, tasks = row.task_count, "job registered");
    Ok(Json(status_of(&s, &row).await?))
}

async fn sign_in(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<SignIn>,
) -> Result<Json<Session>> {
    let now = s.now();
    eip712::check_expiry(req.expiry, now, MAX_EXPIRY_AHEAD_SECS)
        .map_err(|e| Error::Unauthorized(e.to_string()))?;
    if !req.capabilities.gflops.is_finite() || req.capabilities.gflops < 0.0 {
        return Err(Error::BadRequest(
            "gflops must be finite and non-negative".into(),
        ));
    }
    let msg = WorkerSignIn {
        worker: req.address,
        capabilitiesHash: req.capabilities.hash(),
        nonce: req.nonce,
        expiry: req.expiry,
    };
    verify(&s, &msg, &req.signature, req.address)?;
    if let Some(last) = s.store().last_nonce(req.address).await?
        && req.nonce <= last
    {
        return Err(Error::Unauthorized(format!(
            "nonce {} was already used (last {last}); sign a larger one",
            req.nonce
        )));
    }
    let role = if Some(req.address) == s.inner.settings.verifier {
        "verifier"
    } else if s.inner.chain.is_eligible(req.address).await? {
        "worker"
    } else {
        return Err(Error::Forbidden(format!(
            "{} is not staked in the WorkerRegistry; stake first",
            req.address
        )));
    };
    let token = crate::store::random_hex();
    let expires_at = now.saturating_add(s.inner.settings.session_secs);
    let caps = serde_json::to_string(&req.capabilities)
        .map_err(|e| Error::Internal(format!("capabilities json: {e}")))?;
    s.store()
        .sign_in(
            req.address,
            &caps,
            req.capabilities.gflops,
            req.nonce,
            now,
            &token,
            role,
            expires_at,
        )
        .await?;
    Metrics::inc(&s.metrics().sign_ins);
    tracing::debug!(target: "coordinator::api", address = %req.address, role, "signed in");
    Ok(Json(Session {
        token,
        expires_at,
        role: role.to_owned(),
    }))
}

async fn lease(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LeaseRequest>,
) -> Result<Response> {
    let worker = s.session(&headers, "worker").await?;
    if req.wait_ms > MAX_WAIT_MS {
        return Err(Error::BadRequest(format!(
            "wait_ms {} is above {MAX_WAIT_MS}",
            req.wait_ms
        )));
    }
    let until = tokio::time::Instant::now() + Duration::from_millis(u64::from(req.wait_ms));
    let active_secs = s.inner.settings.lease_secs.max(60);
    loop {
        // Register for a wake-up before looking, so no notification is lost in between.
        let woken = s.inner.work.notified();
        let now = s.now();
        if let Some(t) = s
            .store()
            .lease(worker, now, s.inner.settings.lease_secs, active_secs)
            .await?
        {
            let job = find_job(&s, t.job_id).await?;
            let m = s.manifest(&job).await?;
            Metrics::inc(&s.metrics().leases);
            tracing::debug!(target: "coordinator::api", %worker, job_id = %t.job_id, index = t.index, "leased");
            return Ok(Json(Lease {
                lease_id: t.lease_id,
                job_id: t.job_id,
                index: t.index,
                task_hash: t.task_hash,
                kind: m.kind.clone(),
                model: m.model.clone(),
                params: m.params.clone(),
                input_hash: t.input_hash,
                expires_at: t.expires_at,
            })
            .into_response());
        }
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        // Leases also free up by expiring, which nobody announces: look again at least every
        // second.
        let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), woken).await;
    }
}

async fn own_lease(
    s: &AppState,
    worker: Address,
    lease_id: &str,
) -> Result<crate::store::ReplicaRow> {
    let r = s
        .store()
        .replica(lease_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no lease {lease_id}")))?;
    if r.worker != worker {
        return Err(Error::Forbidden(format!("lease {lease_id} is not yours")));
    }
    if r.state != "leased" || r.expires_at <= s.now() {
        return Err(Error::Conflict(format!(
            "lease {lease_id} is no longer live ({}); lease again",
            if r.state == "leased" {
                "expired"
            } else {
                &r.state
            }
        )));
    }
    Ok(r)
}

async fn release(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(lease_id): Path<String>,
) -> Result<StatusCode> {
    let worker = s.session(&headers, "worker").await?;
    own_lease(&s, worker, &lease_id).await?;
    if !s.store().release(&lease_id, s.now()).await? {
        return Err(Error::Conflict(format!(
            "lease {lease_id} is no longer live"
        )));
    }
    s.notify_work();
    Ok(StatusCode::NO_CONTENT)
}

async fn submit_result(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SubmitResult>,
) -> Result<StatusCode> {
    let worker = s.session(&headers, "worker").await?;
    let r = own_lease(&s, worker, &req.lease_id).await?;
    let task_hash = s
        .store()
        .task_hash(r.job_id, r.index)
        .await?
        .ok_or_else(|| Error::Internal(format!("lease {} has no task", r.lease_id)))?;
    if task_hash != req.task_hash {
        return Err(Error::BadRequest(format!(
            "lease {} is for task {task_hash}, not {}",
            req.lease_id, req.task_hash
        )));
    }
    if !s.store().has_blob(req.result_hash).await? {
        return Err(Error::BadRequest(format!(
            "result blob {} is not uploaded: PUT /v1/blobs/HASH first",
            req.result_hash
        )));
    }
    let msg = TaskResult {
        taskHash: task_hash,
        resultHash: req.result_hash,
        worker,
    };
    verify(&s, &msg, &req.signature, worker)?;
    if !s
        .store()
        .submit(&req.lease_id, req.result_hash, &req.signature, s.now())
        .await?
    {
        return Err(Error::Conflict(format!(
            "lease {} is no longer live",
            req.lease_id
        )));
    }
    Metrics::inc(&s.metrics().results);
    tracing::debug!(target: "coordinator::api", %worker, job_id = %r.job_id, index = r.index, "result");
    Ok(StatusCode::NO_CONTENT)
}

fn view(r: &crate::store::ReplicaRow) -> ReplicaView {
    ReplicaView {
        worker: r.worker,
        result_hash: r.result_hash.unwrap_or_default(),
        signature: r.signature.clone().unwrap_or_default(),
    }
}

async fn verifier_work(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<VerifierWork>> {
    s.session(&headers, "verifier").await?;
    let now = s.now();
    let mut jobs = Vec::new();
    for job in s.store().jobs_in_state(job_state::POSTED).await? {
        let tasks = s.store().tasks(job.job_id).await?;
        let replicas = s.store().submitted_replicas(job.job_id).await?;
        let mut by_task: HashMap<u32, Vec<ReplicaView>> = HashMap::new();
        for r in &replicas {
            by_task.entry(r.index).or_default().push(view(r));
        }
        let past_deadline = job.deadline <= now;
        let mut pending = Vec::new();
        let mut undecided = 0;
        for t in &tasks {
            if t.state != "open" {
                continue;
            }
            undecided += 1;
            let reps = by_task.get(&t.index).cloned().unwrap_or_default();
            if reps.len() as u32 >= t.replicas_needed {
                pending.push(TaskForReview {
                    index: t.index,
                    task_hash: t.task_hash,
                    replicas: reps,
                });
            }
        }
        let all_decided = undecided == 0 || past_deadline;
        if pending.is_empty() && !all_decided {
            continue;
        }
        let decided = if all_decided {
            tasks
                .iter()
                .map(|t| DecidedTask {
                    index: t.index,
                    task_hash: t.task_hash,
                    accepted_result: if t.state == "accepted" {
                        t.accepted_result
                    } else {
                        None
                    },
                    quorum: if t.state == "accepted" {
                        t.quorum.clone()
                    } else {
                        Vec::new()
                    },
                    replicas: by_task.get(&t.index).cloned().unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };
        jobs.push(JobForReview {
            job_id: job.job_id,
            manifest: job.manifest.clone(),
            tasks_root: job.tasks_root,
            redundancy: job.redundancy,
            pending: if past_deadline { Vec::new() } else { pending },
            all_decided,
            decided,
        });
    }
    Ok(Json(VerifierWork { jobs }))
}

async fn decide(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(d): ApiJson<Decision>,
) -> Result<StatusCode> {
    s.session(&headers, "verifier").await?;
    let job = find_job(&s, d.job_id).await?;
    if job.state != job_state::POSTED {
        return Err(Error::Conflict(format!(
            "job {} is {}",
            d.job_id, job.state
        )));
    }
    let task = s
        .store()
        .tasks(d.job_id)
        .await?
        .into_iter()
        .find(|t| t.index == d.index)
        .ok_or_else(|| Error::NotFound(format!("job {} has no task {}", d.job_id, d.index)))?;
    if task.state != "open" {
        return Err(Error::Conflict(format!(
            "task {} is already {}",
            d.index, task.state
        )));
    }
    let changed = match d.verdict.as_str() {
        "accept" => {
            let result = d
                .result
                .ok_or_else(|| Error::BadRequest("accept needs a result".into()))?;
            if !s.store().has_blob(result).await? {
                return Err(Error::BadRequest(format!(
                    "result blob {result} is not uploaded"
                )));
            }
            if d.quorum.is_empty() {
                return Err(Error::BadRequest("accept needs a non-empty quorum".into()));
            }
            let submitters: Vec<Address> = s
                .store()
                .submitted_replicas(d.job_id)
                .await?
                .into_iter()
                .filter(|r| r.index == d.index)
                .map(|r| r.worker)
                .collect();
            let mut quorum = d.quorum.clone();
            quorum.sort();
            quorum.dedup();
            if let Some(w) = quorum.iter().find(|w| !submitters.contains(w)) {
                return Err(Error::BadRequest(format!(
                    "{w} did not submit a replica of task {}",
                    d.index
                )));
            }
            s.store()
                .accept_task(d.job_id, d.index, result, &quorum)
                .await?
        }
        "more" => {
            if d.extra_replicas == 0 {
                return Err(Error::BadRequest("more needs extra_replicas ≥ 1".into()));
            }
            let ok = s
                .store()
                .more_replicas(d.job_id, d.index, d.extra_replicas)
                .await?;
            s.notify_work();
            ok
        }
        "fail" => s.store().fail_task(d.job_id, d.index).await?,
        other => {
            return Err(Error::BadRequest(format!(
                "verdict {other:?}: use accept, more or fail"
            )));
        }
    };
    if !changed {
        return Err(Error::Conflict(format!(
            "task {} was decided meanwhile",
            d.index
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn settled(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<Settled>,
) -> Result<StatusCode> {
    s.session(&headers, "verifier").await?;
    let job = find_job(&s, b.job_id).await?;
    if !s.store().has_blob(b.report_hash).await? {
        return Err(Error::BadRequest(format!(
            "report blob {} is not uploaded",
            b.report_hash
        )));
    }
    if !s.store().settle(b.job_id, b.report_hash).await? {
        return Err(Error::Conflict(format!(
            "job {} is {} (report {:?})",
            b.job_id, job.state, job.report_hash
        )));
    }
    tracing::info!(target: "coordinator::api", job_id = %b.job_id, tx = %b.tx_hash, "job settled");
    Ok(StatusCode::NO_CONTENT)
}
