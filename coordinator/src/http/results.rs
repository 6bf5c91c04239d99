//! `/v1/results`: a worker submits the signed result of its lease, or a batch of results signed
//! once (idempotent: the same result sent again is answered 204).

use std::collections::{HashMap, HashSet};

use alloy::primitives::B256;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use gleaner_protocol::api::{SubmitResult, SubmitResults};
use gleaner_protocol::blob::blob_hash;
use gleaner_protocol::eip712::{MAX_RESULT_BATCH, ResultBatch, TaskResult};

use super::leases::own_lease;
use super::sessions::WORKER;
use super::{ApiJson, AppState};
use crate::db::{ReplicaRow, ReplicaState};
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

/// `POST /v1/results/batch`: many results signed once, taken whole or refused whole.
///
/// Every item is checked before anything is written (the caller's lease, live or already
/// holding this very result; the task hash; the output's hash or the uploaded blob), then the
/// one `TaskResults` signature over all of them; then every result, with its own
/// [`gleaner_protocol::eip712::ResultSignature`] (the batch signature and its proof), and the
/// inline outputs are stored in one transaction. Items already recorded with the same result
/// (a resent batch) are answered like new ones and not written again.
///
/// A batch of new results with inline outputs and a valid signature is first offered to
/// [`crate::db::Store::submit_many_owned`], whose statement checks the leases (live, the
/// caller's, for the task hashes named) as it writes, so that the usual batch costs no read;
/// when it takes less than all of them nothing was written, and the checks above run as before
/// and say why.
pub(super) async fn submit_results(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SubmitResults>,
) -> Result<StatusCode> {
    let worker = s.session(&headers, WORKER).await?;
    let n = req.items.len();
    if n == 0 || n > MAX_RESULT_BATCH {
        return Err(Error::BadRequest(format!(
            "a batch holds 1 to {MAX_RESULT_BATCH} results, not {n}"
        )));
    }
    let mut seen = HashSet::with_capacity(n);
    let mut blobs = Vec::new();
    let mut uploaded = Vec::new();
    for (i, item) in req.items.iter().enumerate() {
        if !seen.insert(item.lease_id.as_str()) {
            return Err(Error::BadRequest(format!(
                "item {i}: lease {} is in the batch twice",
                item.lease_id
            )));
        }
        match &item.output {
            Some(bytes) => {
                let got = blob_hash(bytes);
                if got != item.result_hash {
                    return Err(Error::BadRequest(format!(
                        "item {i}: the output hashes to {got}, not to its result hash {}",
                        item.result_hash
                    )));
                }
                blobs.push((got, bytes.to_vec()));
            }
            None => uploaded.push(item.result_hash),
        }
    }
    let pairs: Vec<(B256, B256)> = req
        .items
        .iter()
        .map(|i| (i.task_hash, i.result_hash))
        .collect();
    let batch = ResultBatch::new(worker, &pairs).map_err(|e| Error::BadRequest(e.to_string()));
    let signature = alloy::primitives::Signature::from_raw(&req.signature)
        .map_err(|e| Error::Unauthorized(format!("malformed signature: {e}")));
    let now = s.now();
    // The signature is checked once, for whichever way below records the batch.
    let verified = match (&batch, &signature) {
        (Ok(batch), Ok(signature)) => Some(s.verify_signature(batch.message(), signature, worker)),
        _ => None,
    };
    // The usual batch (every item new, on a live lease of this worker's, for the task it
    // names, validly signed, outputs inline) is checked by the statement that records it, with
    // no read before it; anything else goes the way below, which says what is wrong, answers a
    // resent item, and records the rest.
    if let (Ok(batch), Ok(signature), Some(Ok(())), true) =
        (&batch, &signature, &verified, uploaded.is_empty())
    {
        let results = members(&req, batch, *signature, |_| true)?;
        let tasks = req.items.iter().map(|i| i.task_hash).collect();
        match s
            .store()
            .submit_many_owned(worker, results, tasks, blobs, now)
            .await?
        {
            Ok(()) => return Ok(recorded(&s, worker, n)),
            // Refused whole: the way below says why, with the blobs given back.
            Err(back) => blobs = back,
        }
    }
    let ids: Vec<String> = req.items.iter().map(|i| i.lease_id.clone()).collect();
    let stored: HashMap<String, (ReplicaRow, B256)> = s
        .store()
        .replicas_with_tasks(&ids)
        .await?
        .into_iter()
        .map(|(r, task)| (r.lease_id.clone(), (r, task)))
        .collect();
    let mut fresh = Vec::with_capacity(n);
    for (i, item) in req.items.iter().enumerate() {
        let Some((replica, task_hash)) = stored.get(&item.lease_id) else {
            return Err(Error::NotFound(format!(
                "item {i}: no lease {}; nothing was recorded",
                item.lease_id
            )));
        };
        if replica.worker != worker {
            return Err(Error::Forbidden(format!(
                "item {i}: lease {} is not yours; nothing was recorded",
                item.lease_id
            )));
        }
        if *task_hash != item.task_hash {
            return Err(Error::BadRequest(format!(
                "item {i}: lease {} is for task {task_hash}, not {}; nothing was recorded",
                item.lease_id, item.task_hash
            )));
        }
        let live = replica.state == ReplicaState::Leased && replica.expires_at > now;
        let again = replica.state == ReplicaState::Submitted
            && replica.result_hash == Some(item.result_hash);
        if !live && !again {
            let why = if replica.state == ReplicaState::Leased {
                ReplicaState::Expired
            } else {
                replica.state
            };
            return Err(Error::Conflict(format!(
                "item {i}: lease {} is no longer live ({why}); nothing was recorded",
                item.lease_id
            )));
        }
        fresh.push(live);
    }
    uploaded.sort_unstable();
    uploaded.dedup();
    if let Some(missing) = s.store().missing_blobs(&uploaded).await?.first() {
        return Err(Error::BadRequest(format!(
            "result blob {missing} is neither uploaded nor sent with its item: PUT \
             /v1/blobs/HASH first or send it as `output`; nothing was recorded"
        )));
    }
    let (batch, signature) = (batch?, signature?);
    verified.unwrap_or(Ok(()))?;
    let results = members(&req, &batch, signature, |i| fresh[i])?;
    let k = results.len();
    if k == 0 {
        return Ok(StatusCode::NO_CONTENT);
    }
    if let Err(lease_id) = s.store().submit_many(results, blobs, now).await? {
        return Err(Error::Conflict(format!(
            "lease {lease_id} is no longer live; nothing was recorded"
        )));
    }
    Ok(recorded(&s, worker, k))
}

/// The items of `req` that `keep` picks, each as its lease, its result hash and its own
/// [`gleaner_protocol::eip712::ResultSignature`] (the batch signature and its proof).
fn members(
    req: &SubmitResults,
    batch: &ResultBatch,
    signature: alloy::primitives::Signature,
    keep: impl Fn(usize) -> bool,
) -> Result<Vec<(String, B256, alloy::primitives::Bytes)>> {
    let mut out = Vec::with_capacity(req.items.len());
    for (i, item) in req.items.iter().enumerate().filter(|(i, _)| keep(*i)) {
        let member = batch
            .member(i, signature)
            .ok_or_else(|| Error::Internal(format!("no proof for item {i}")))?;
        out.push((item.lease_id.clone(), item.result_hash, member.encode()));
    }
    Ok(out)
}

/// Counts `k` results recorded for `worker`: the answer to their batch.
fn recorded(s: &AppState, worker: alloy::primitives::Address, k: usize) -> StatusCode {
    s.metrics()
        .results
        .fetch_add(k as u64, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(target: "coordinator::api", %worker, results = k, "result batch");
    StatusCode::NO_CONTENT
}
