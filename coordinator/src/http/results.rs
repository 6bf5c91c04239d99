//! `/v1/results`: a worker submits the signed result of its lease (idempotent: the same result
//! sent again is answered 204).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use gleaner_protocol::api::SubmitResult;
use gleaner_protocol::eip712::TaskResult;

use super::leases::own_lease;
use super::sessions::WORKER;
use super::{ApiJson, AppState};
use crate::db::ReplicaState;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

pub(super) async fn submit_result(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SubmitResult>,
) -> Result<StatusCode> {
    let worker = s.session(&headers, WORKER).await?;
    // The same result again (a retry whose first reply was lost) is already recorded: it is
    // checked like a new one and answered 204, so that a worker may resend a result safely.
    let already = |r: &crate::db::ReplicaRow| {
        r.state == ReplicaState::Submitted && r.result_hash == Some(req.result_hash)
    };
    let replica = match own_lease(&s, worker, &req.lease_id).await {
        Ok(r) => r,
        Err(Error::Conflict(why)) => match s.store().replica(&req.lease_id).await? {
            Some(r) if r.worker == worker && already(&r) => r,
            _ => return Err(Error::Conflict(why)),
        },
        Err(e) => return Err(e),
    };
    let task_hash = s
        .store()
        .task_hash(replica.job_id, replica.index)
        .await?
        .ok_or_else(|| Error::Internal(format!("lease {} has no task", replica.lease_id)))?;
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
    s.verify(&msg, &req.signature, worker)?;
    if already(&replica) {
        return Ok(StatusCode::NO_CONTENT);
    }
    if !s
        .store()
        .submit(&req.lease_id, req.result_hash, &req.signature, s.now())
        .await?
    {
        if let Some(now) = s.store().replica(&req.lease_id).await?
            && already(&now)
        {
            return Ok(StatusCode::NO_CONTENT);
        }
        return Err(Error::Conflict(format!(
            "lease {} is no longer live",
            req.lease_id
        )));
    }
    Metrics::inc(&s.metrics().results);
    tracing::debug!(target: "coordinator::api", %worker, job_id = %replica.job_id, index = replica.index, "result");
    Ok(StatusCode::NO_CONTENT)
}
