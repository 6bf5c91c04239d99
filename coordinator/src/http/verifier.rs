//! `/v1/verifier/*`: the verifier's work list, its decisions and its settlements.

use std::collections::HashMap;

use alloy::primitives::{Address, B256, U256};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use gleaner_protocol::api::{
    DecidedTask, Decision, JobForReview, JobState, ReplicaView, Settled, TaskForReview, Verdict,
    VerifierWork,
};

use gleaner_protocol::replication::SpotSeed;

use super::sessions::VERIFIER;
use super::{ApiJson, ApiPath, AppState, parse_hash};
use crate::db::{ReplicaRow, TaskState};
use crate::error::{Error, Result};

fn view(replica: &ReplicaRow) -> ReplicaView {
    ReplicaView {
        worker: replica.worker,
        result_hash: replica.result_hash.unwrap_or_default(),
        signature: replica.signature.clone().unwrap_or_default(),
    }
}

pub(super) async fn work(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<VerifierWork>> {
    s.session(&headers, VERIFIER).await?;
    let now = s.now();
    let mut jobs = Vec::new();
    for job in s.store().jobs_in_state(JobState::Posted).await? {
        let (undecided, ready) = s.store().review(job.job_id).await?;
        let pending: Vec<TaskForReview> = ready
            .into_iter()
            .map(|t| TaskForReview {
                index: t.index,
                task_hash: t.task_hash,
                replicas: t.replicas.iter().map(view).collect(),
            })
            .collect();
        let all_decided = undecided == 0 || job.deadline <= now;
        if pending.is_empty() && !all_decided {
            continue;
        }
        // The whole job (every task and replica) is read only when it is time to settle.
        let decided = if all_decided {
            let mut by_task: HashMap<u32, Vec<ReplicaView>> = HashMap::new();
            for replica in &s.store().submitted_replicas(job.job_id).await? {
                by_task
                    .entry(replica.index)
                    .or_default()
                    .push(view(replica));
            }
            s.store()
                .tasks(job.job_id)
                .await?
                .into_iter()
                .map(|task| {
                    let accepted = task.state == TaskState::Accepted;
                    DecidedTask {
                        index: task.index,
                        task_hash: task.task_hash,
                        accepted_result: task.accepted_result.filter(|_| accepted),
                        quorum: if accepted { task.quorum } else { Vec::new() },
                        replicas: by_task.remove(&task.index).unwrap_or_default(),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let spot_seed = match s.store().check_secret(job.job_id).await? {
            Some(secret) => s
                .store()
                .posted_block_hash(job.job_id)
                .await?
                .map(|beacon| SpotSeed { secret, beacon }),
            None => None,
        };
        jobs.push(JobForReview {
            job_id: job.job_id,
            manifest: job.manifest.clone(),
            tasks_root: job.tasks_root,
            redundancy: job.redundancy,
            // Past the deadline no replica is leased any more, but what is in is still
            // decided (a spot-checked job's provisional results among it) before settlement.
            pending,
            all_decided,
            decided,
            undecided,
            spot_seed,
        });
    }
    Ok(Json(VerifierWork { jobs }))
}

/// Accepts `result` for a task if the blob is there and every quorum member submitted.
async fn accept(
    s: &AppState,
    job_id: U256,
    index: u32,
    result: B256,
    quorum: &[Address],
) -> Result<bool> {
    if !s.store().has_blob(result).await? {
        return Err(Error::BadRequest(format!(
            "result blob {result} is not uploaded"
        )));
    }
    if quorum.is_empty() {
        return Err(Error::BadRequest("accept needs a non-empty quorum".into()));
    }
    let submitters = s.store().submitters(job_id, index).await?;
    let mut quorum = quorum.to_vec();
    quorum.sort();
    quorum.dedup();
    if let Some(stranger) = quorum.iter().find(|w| !submitters.contains(w)) {
        return Err(Error::BadRequest(format!(
            "{stranger} did not submit a replica of task {index}"
        )));
    }
    s.store().accept_task(job_id, index, result, &quorum).await
}

pub(super) async fn decide(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(d): ApiJson<Decision>,
) -> Result<StatusCode> {
    s.session(&headers, VERIFIER).await?;
    let state = s
        .store()
        .job_state(d.job_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("job {} is not registered", d.job_id)))?;
    if state != JobState::Posted {
        return Err(Error::Conflict(format!("job {} is {state}", d.job_id)));
    }
    let task = s
        .store()
        .task(d.job_id, d.index)
        .await?
        .ok_or_else(|| Error::NotFound(format!("job {} has no task {}", d.job_id, d.index)))?;
    if task.state != TaskState::Open {
        return Err(Error::Conflict(format!(
            "task {} is already {}",
            d.index, task.state
        )));
    }
    let changed = match &d.verdict {
        Verdict::Accept { result, quorum } => {
            accept(&s, d.job_id, d.index, *result, quorum).await?
        }
        Verdict::More { extra_replicas } => {
            if *extra_replicas == 0 {
                return Err(Error::BadRequest("more needs extra_replicas ≥ 1".into()));
            }
            let changed = s
                .store()
                .more_replicas(d.job_id, d.index, *extra_replicas)
                .await?;
            s.notify_work();
            changed
        }
        Verdict::Fail => s.store().fail_task(d.job_id, d.index).await?,
    };
    if !changed {
        return Err(Error::Conflict(format!(
            "task {} was decided meanwhile",
            d.index
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn settled(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Settled>,
) -> Result<StatusCode> {
    s.session(&headers, VERIFIER).await?;
    let job = s.find_job(body.job_id).await?;
    if !s.store().has_blob(body.report_hash).await? {
        return Err(Error::BadRequest(format!(
            "report blob {} is not uploaded",
            body.report_hash
        )));
    }
    if !s.store().settle(body.job_id, body.report_hash).await? {
        return Err(Error::Conflict(format!(
            "job {} is {} (report {:?})",
            body.job_id, job.state, job.report_hash
        )));
    }
    tracing::info!(target: "coordinator::api", job_id = %body.job_id, tx = %body.tx_hash, "job settled");
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/verifier/reports/{sha256}`: the verifier stores a settlement report, which may be
/// larger than any other blob (up to `max_report_bytes`). It must hash to the path and be a
/// canonical report; then it is an ordinary blob (readable by anyone, like every report).
pub(super) async fn put_report(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiPath(hash): ApiPath<String>,
    body: std::result::Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<gleaner_protocol::api::BlobRef>> {
    s.session(&headers, VERIFIER).await?;
    let hash = parse_hash(&hash)?;
    let body = super::blobs::addressed_body(body, hash, s.settings().max_report_bytes, "report")?;
    gleaner_protocol::report::SettlementReport::from_canonical(&body)
        .map_err(|e| Error::BadRequest(format!("not a canonical settlement report: {e}")))?;
    s.store().put_blob(hash, &body).await?;
    Ok(Json(gleaner_protocol::api::BlobRef {
        hash,
        size: body.len() as u64,
    }))
}
