//! `/v1/jobs`: a requester registers a job's manifest; anyone reads its status and results.

use alloy::primitives::B256;
use axum::Json;
use axum::extract::State;
use gleaner_protocol::api::{JobResults, JobState, JobStatus, RegisterJob, TaskResultRef};
use gleaner_protocol::bindings::job_status;
use gleaner_protocol::eip712::JobRegistration;
use gleaner_protocol::merkle::MerkleTree;
use gleaner_protocol::task::JobManifest;

use super::{ApiJson, ApiPath, AppState, parse_job_id};
use crate::db::{JobRow, NewTask};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// A job as the API reports it: a posted job whose every task is decided is `verifying`.
async fn status_of(s: &AppState, job: &JobRow) -> Result<JobStatus> {
    let (replicas_done, tasks_accepted, tasks_failed) = s.store().job_progress(job.job_id).await?;
    let state = if job.state == JobState::Posted && tasks_accepted + tasks_failed == job.task_count
    {
        JobState::Verifying
    } else {
        job.state
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

pub(super) async fn job_status(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobStatus>> {
    let job = s.find_job(parse_job_id(&id)?).await?;
    Ok(Json(status_of(&s, &job).await?))
}

pub(super) async fn job_results(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobResults>> {
    let job = s.find_job(parse_job_id(&id)?).await?;
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

pub(super) async fn register_job(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<RegisterJob>,
) -> Result<Json<JobStatus>> {
    let now = s.now();
    s.check_expiry(req.expiry, now)?;
    let manifest = JobManifest::from_canonical(req.manifest.as_bytes())?;
    let spec_hash = manifest.spec_hash();
    let msg = JobRegistration {
        jobId: req.job_id,
        specHash: spec_hash,
        requester: req.requester,
        expiry: req.expiry,
    };
    s.verify(&msg, &req.signature, req.requester)?;

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
    if manifest.spot_checks.is_some() && on_chain.redundancy < 2 {
        return Err(Error::BadRequest(format!(
            "job {} asks for spot checks with a redundancy of {}: a check computes a task again, \
             so it needs a redundancy of at least 2",
            req.job_id, on_chain.redundancy
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
    if let Some(first) = missing.first() {
        return Err(Error::BadRequest(format!(
            "{} input blob(s) are not uploaded, first {first}: PUT /v1/blobs/HASH first",
            missing.len(),
        )));
    }

    let task_hashes = manifest.task_hashes(req.job_id);
    let tasks: Vec<NewTask> = task_hashes
        .iter()
        .zip(&manifest.tasks)
        .map(|(hash, task)| NewTask {
            task_hash: *hash,
            input_hash: task.input_hash,
            cost: task.cost,
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
        state: JobState::Registered,
        tasks_root: MerkleTree::from_task_hashes(&task_hashes).root(),
        post_tx: None,
        report_hash: None,
    };
    if !s.store().insert_job(&row, &tasks, now).await? {
        // Lost a race with an identical (or different) registration.
        let existing = s.find_job(req.job_id).await?;
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
