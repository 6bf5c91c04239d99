//! `/v1/leases`: a worker leases one replica or a batch (long-poll), or gives a lease back.

use std::time::Duration;

use alloy::primitives::Address;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use gleaner_protocol::api::{Lease, LeaseBatchRequest, LeaseRequest, Leases};
use gleaner_protocol::eip712::MAX_RESULT_BATCH;

use super::sessions::WORKER;
use super::{ApiJson, ApiPath, AppState};
use crate::db::{ReplicaRow, ReplicaState};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

pub(super) async fn lease(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LeaseRequest>,
) -> Result<Response> {
    let worker = s.session(&headers, WORKER).await?;
    Ok(
        match wait_for_leases(&s, worker, req.wait_ms, 1).await?.pop() {
            Some(lease) => Json(lease).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        },
    )
}

/// `POST /v1/leases/batch`: up to `max` replicas in one call (200 with at least one, or 204).
pub(super) async fn lease_batch(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LeaseBatchRequest>,
) -> Result<Response> {
    let worker = s.session(&headers, WORKER).await?;
    if req.max == 0 || req.max as usize > MAX_RESULT_BATCH {
        return Err(Error::BadRequest(format!(
            "max must be 1 to {MAX_RESULT_BATCH}, not {}",
            req.max
        )));
    }
    let leases = wait_for_leases(&s, worker, req.wait_ms, u64::from(req.max)).await?;
    Ok(if leases.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        Json(Leases { leases }).into_response()
    })
}

/// Leases up to `max` replicas to `worker`, waiting up to `wait_ms` (capped) for a first one.
async fn wait_for_leases(
    s: &AppState,
    worker: Address,
    wait_ms: u32,
    max: u64,
) -> Result<Vec<Lease>> {
    // A long-poll wait is a hint: one above this coordinator's limit waits the limit.
    let wait_ms = wait_ms.min(s.settings().max_wait_ms);
    let until = tokio::time::Instant::now() + Duration::from_millis(u64::from(wait_ms));
    let lease_secs = s.settings().lease_secs;
    let active_secs = s.settings().active_secs();
    loop {
        // Register for a wake-up before looking, so no notification is lost in between.
        let woken = s.inner.work.notified();
        let now = s.now();
        let leased = s
            .store()
            .lease_many(worker, now, lease_secs, active_secs, max)
            .await?;
        if !leased.is_empty() {
            let mut out = Vec::with_capacity(leased.len());
            for t in leased {
                let manifest = s.manifest_of(t.job_id).await?;
                Metrics::inc(&s.metrics().leases);
                tracing::debug!(target: "coordinator::api", %worker, job_id = %t.job_id, index = t.index, "leased");
                out.push(Lease {
                    lease_id: t.lease_id,
                    job_id: t.job_id,
                    index: t.index,
                    task_hash: t.task_hash,
                    kind: manifest.kind.clone(),
                    model: manifest.model.clone(),
                    params: manifest.params.clone(),
                    input_hash: t.input_hash,
                    expires_at: t.expires_at,
                });
            }
            return Ok(out);
        }
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Ok(Vec::new());
        }
        // Leases also free up by expiring, which nobody announces: look again at least every
        // second.
        let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), woken).await;
    }
}

/// The caller's live lease `lease_id`: 404 if unknown, 403 if someone else's, 409 if no
/// longer live.
pub(super) async fn own_lease(s: &AppState, worker: Address, lease_id: &str) -> Result<ReplicaRow> {
    let replica = s
        .store()
        .replica(lease_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no lease {lease_id}")))?;
    if replica.worker != worker {
        return Err(Error::Forbidden(format!("lease {lease_id} is not yours")));
    }
    let state = replica.state;
    if state == ReplicaState::Leased && replica.expires_at > s.now() {
        return Ok(replica);
    }
    let why = if state == ReplicaState::Leased {
        ReplicaState::Expired
    } else {
        state
    };
    Err(Error::Conflict(format!(
        "lease {lease_id} is no longer live ({why}); lease again"
    )))
}

pub(super) async fn release(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiPath(lease_id): ApiPath<String>,
) -> Result<StatusCode> {
    let worker = s.session(&headers, WORKER).await?;
    own_lease(&s, worker, &lease_id).await?;
    if !s.store().release(&lease_id, s.now()).await? {
        return Err(Error::Conflict(format!(
            "lease {lease_id} is no longer live"
        )));
    }
    s.notify_work();
    Ok(StatusCode::NO_CONTENT)
}
