//! Read-only queries for the explorer (`crate::explorer`): the coordinator's own view of jobs,
//! tasks, replicas and workers. Nothing here is about money: the explorer takes that from the
//! chain and the published report.
//!
//! The rows are plain serde types, because a standalone explorer (`gleaner explorer`) reads the
//! same rows as JSON from a coordinator's `/explorer/api/...` routes.

use alloy::primitives::{Address, B256, Bytes, U256};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::Store;
use super::codec::{
    ReplicaState, TaskState, column, int_column, optional_column, to_bigint, to_hex,
};
use crate::JobState;
use crate::error::Result;

/// Most jobs the network page lists (newest first).
pub(super) const EXPLORER_JOBS: u64 = 200;
/// Most replicas a worker page lists (newest first).
pub(super) const EXPLORER_WORKER_REPLICAS: u64 = 500;

/// A job as the coordinator sees it, with its task counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplorerJob {
    /// On-chain id.
    pub job_id: U256,
    /// Stored state (the coordinator's word).
    pub state: JobState,
    /// The manifest's kind.
    pub kind: String,
    /// Requester.
    pub requester: Address,
    /// Tasks.
    pub task_count: u32,
    /// Replicas per task.
    pub redundancy: u16,
    /// On-chain deadline (unix seconds).
    pub deadline: u64,
    /// When the coordinator registered it (unix seconds).
    pub created_at: u64,
    /// Tasks accepted.
    pub accepted: u32,
    /// Tasks failed for good.
    pub failed: u32,
    /// Open tasks with at least one live (leased or submitted) replica.
    pub in_progress: u32,
    /// Replicas submitted.
    pub submitted: u32,
}

/// One task of a job, with its decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplorerTask {
    /// Task index.
    pub index: u32,
    /// Decision state.
    pub state: TaskState,
    /// Work units (`cost_t`).
    pub cost: String,
    /// Replicas wanted: above the job's redundancy, the verifier asked for more (a dispute).
    pub replicas_needed: u32,
    /// Accepted output blob.
    pub accepted_result: Option<B256>,
    /// Workers in the accepted cluster.
    pub quorum: Vec<Address>,
}

/// One replica (lease) of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplorerReplica {
    /// Job.
    pub job_id: U256,
    /// Task index.
    pub index: u32,
    /// Worker.
    pub worker: Address,
    /// Lease state.
    pub state: ReplicaState,
    /// When it was leased (unix seconds).
    pub leased_at: u64,
    /// When its result came (unix seconds).
    pub submitted_at: Option<u64>,
    /// Output blob.
    pub result_hash: Option<B256>,
    /// The worker's EIP-712 `TaskResult` signature.
    pub signature: Option<Bytes>,
}

/// A worker (or the verifier) that signed in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplorerWorker {
    /// Its staking address.
    pub address: Address,
    /// Its signed capabilities (JSON, as it sent them).
    pub capabilities: serde_json::Value,
    /// Its measured GFLOP/s.
    pub gflops: f64,
    /// Last sign-in (unix seconds).
    pub last_seen: u64,
    /// Latest lease or result of it (unix seconds), if any.
    pub last_active: Option<u64>,
    /// Replicas it submitted.
    pub submitted: u32,
    /// Replicas of accepted tasks in whose quorum it was (the quorum column is a JSON list of
    /// addresses; the worker column holds lowercase hex).
    pub in_quorum: u32,
}

fn read_replica(row: &AnyRow) -> Result<ExplorerReplica> {
    Ok(ExplorerReplica {
        job_id: column(row, "job_id")?,
        index: int_column(row, "idx")?,
        worker: column(row, "worker")?,
        state: column(row, "state")?,
        leased_at: int_column(row, "leased_at")?,
        submitted_at: row
            .try_get::<Option<i64>, _>("submitted_at")?
            .map(|t| u64::try_from(t).unwrap_or(0)),
        result_hash: optional_column(row, "result_hash")?,
        signature: optional_column(row, "signature")?,
    })
}

/// A job row with its counts; `$1`..`$4` are bound by [`bind_job_counts`].
const JOB_SELECT: &str = "SELECT j.job_id, j.state, j.kind, j.requester, j.task_count, \
    j.redundancy, j.deadline, j.created_at, \
    (SELECT COUNT(*) FROM tasks t WHERE t.job_id = j.job_id AND t.state = $1) AS accepted, \
    (SELECT COUNT(*) FROM tasks t WHERE t.job_id = j.job_id AND t.state = $2) AS failed, \
    (SELECT COUNT(*) FROM tasks t WHERE t.job_id = j.job_id AND t.state = $3 AND t.live > 0) \
        AS in_progress, \
    (SELECT COUNT(*) FROM replicas r WHERE r.job_id = j.job_id AND r.state = $4) AS submitted \
    FROM jobs j";

fn bind_job_counts<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(TaskState::Accepted.as_str())
        .bind(TaskState::Failed.as_str())
        .bind(TaskState::Open.as_str())
        .bind(ReplicaState::Submitted.as_str())
}

fn read_job(r: &AnyRow) -> Result<ExplorerJob> {
    Ok(ExplorerJob {
        job_id: column(r, "job_id")?,
        state: column(r, "state")?,
        kind: r.try_get("kind")?,
        requester: column(r, "requester")?,
        task_count: int_column(r, "task_count")?,
        redundancy: int_column(r, "redundancy")?,
        deadline: int_column(r, "deadline")?,
        created_at: int_column(r, "created_at")?,
        accepted: int_column(r, "accepted")?,
        failed: int_column(r, "failed")?,
        in_progress: int_column(r, "in_progress")?,
        submitted: int_column(r, "submitted")?,
    })
}

const REPLICA_COLUMNS: &str =
    "job_id, idx, worker, state, leased_at, submitted_at, result_hash, signature";

impl Store {
    /// The newest [`EXPLORER_JOBS`] jobs with their task counts.
    pub async fn explorer_jobs(&self) -> Result<Vec<ExplorerJob>> {
        let sql = format!(
            "{JOB_SELECT} ORDER BY j.created_at DESC, LENGTH(j.job_id) DESC, j.job_id DESC \
             LIMIT $5"
        );
        let rows = bind_job_counts(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .bind(to_bigint(EXPLORER_JOBS)?)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(read_job).collect()
    }

    /// One job with its task counts.
    pub async fn explorer_job(&self, job_id: U256) -> Result<Option<ExplorerJob>> {
        let sql = format!("{JOB_SELECT} WHERE j.job_id = $5");
        let row = bind_job_counts(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .bind(job_id.to_string())
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(read_job).transpose()
    }

    /// Every task of a job with its decision, in order.
    pub async fn explorer_tasks(&self, job_id: U256) -> Result<Vec<ExplorerTask>> {
        let rows = sqlx::query(
            "SELECT idx, state, cost, replicas_needed, accepted_result, quorum FROM tasks \
             WHERE job_id = $1 ORDER BY idx",
        )
        .bind(job_id.to_string())
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let quorum = r
                    .try_get::<Option<String>, _>("quorum")?
                    .and_then(|json| serde_json::from_str(&json).ok())
                    .unwrap_or_default();
                Ok(ExplorerTask {
                    index: int_column(r, "idx")?,
                    state: column(r, "state")?,
                    cost: r.try_get("cost")?,
                    replicas_needed: int_column(r, "replicas_needed")?,
                    accepted_result: optional_column(r, "accepted_result")?,
                    quorum,
                })
            })
            .collect()
    }

    /// Every replica of a job (expired and released ones too), by task then lease time.
    pub async fn explorer_replicas(&self, job_id: U256) -> Result<Vec<ExplorerReplica>> {
        let sql = format!(
            "SELECT {REPLICA_COLUMNS} FROM replicas WHERE job_id = $1 \
             ORDER BY idx, leased_at, lease_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(job_id.to_string())
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(read_replica).collect()
    }

    /// The newest [`EXPLORER_WORKER_REPLICAS`] replicas of one worker.
    pub async fn explorer_worker_replicas(&self, worker: Address) -> Result<Vec<ExplorerReplica>> {
        let sql = format!(
            "SELECT {REPLICA_COLUMNS} FROM replicas WHERE worker = $1 \
             ORDER BY leased_at DESC, lease_id LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_hex(&worker))
            .bind(to_bigint(EXPLORER_WORKER_REPLICAS)?)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(read_replica).collect()
    }

    /// Workers that signed in as workers or hold replicas (not the verifier), with counts.
    pub async fn explorer_workers(&self) -> Result<Vec<ExplorerWorker>> {
        let rows = sqlx::query(
            "SELECT w.address, w.capabilities, w.gflops, w.last_seen, \
             (SELECT MAX(COALESCE(r.submitted_at, r.leased_at)) FROM replicas r \
                WHERE r.worker = w.address) AS last_active, \
             (SELECT COUNT(*) FROM replicas r WHERE r.worker = w.address AND r.state = $1) \
                AS submitted, \
             (SELECT COUNT(*) FROM replicas r JOIN tasks t ON t.job_id = r.job_id \
                AND t.idx = r.idx WHERE r.worker = w.address AND r.state = $1 \
                AND t.state = $2 AND LOWER(t.quorum) LIKE '%' || r.worker || '%') AS in_quorum \
             FROM workers w WHERE \
             EXISTS (SELECT 1 FROM replicas r WHERE r.worker = w.address) OR \
             EXISTS (SELECT 1 FROM sessions s WHERE s.address = w.address AND s.role = $3) \
             ORDER BY w.address",
        )
        .bind(ReplicaState::Submitted.as_str())
        .bind(TaskState::Accepted.as_str())
        .bind("worker")
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let capabilities: String = r.try_get("capabilities")?;
                Ok(ExplorerWorker {
                    address: column(r, "address")?,
                    capabilities: serde_json::from_str(&capabilities)
                        .unwrap_or(serde_json::Value::Null),
                    gflops: r.try_get("gflops")?,
                    last_seen: int_column(r, "last_seen")?,
                    last_active: r
                        .try_get::<Option<i64>, _>("last_active")?
                        .map(|t| u64::try_from(t).unwrap_or(0)),
                    submitted: int_column(r, "submitted")?,
                    in_quorum: int_column(r, "in_quorum")?,
                })
            })
            .collect()
    }

    /// Replicas submitted per minute since `since` (unix seconds): `(minute start, count)`,
    /// minutes without any left out.
    pub async fn explorer_throughput(&self, since: u64) -> Result<Vec<(u64, u32)>> {
        let rows = sqlx::query(
            "SELECT (submitted_at / 60) * 60 AS minute, COUNT(*) AS n FROM replicas \
             WHERE state = $1 AND submitted_at >= $2 GROUP BY (submitted_at / 60) * 60 \
             ORDER BY minute",
        )
        .bind(ReplicaState::Submitted.as_str())
        .bind(to_bigint(since)?)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| Ok((int_column(r, "minute")?, int_column(r, "n")?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::jobs::tests::posted;
    use super::*;

    #[tokio::test]
    async fn the_explorer_reads_jobs_tasks_and_counts() {
        let store = Store::memory().await;
        posted(&store, 1, 3, 2, "embed").await;
        posted(&store, 2, 1, 1, "generate").await;
        let jobs = store.explorer_jobs().await.unwrap();
        assert_eq!(jobs.len(), 2);
        let one = jobs.iter().find(|j| j.job_id == U256::from(1)).unwrap();
        assert_eq!(
            (one.kind.as_str(), one.task_count, one.redundancy, one.state),
            ("embed", 3, 2, JobState::Posted)
        );
        assert_eq!((one.accepted, one.failed, one.in_progress), (0, 0, 0));
        let tasks = store.explorer_tasks(U256::from(1)).await.unwrap();
        assert_eq!(tasks.len(), 3);
        assert_eq!(tasks[2].index, 2);
        assert_eq!(tasks[0].state, TaskState::Open);
        assert!(tasks[0].quorum.is_empty());
        store
            .accept_task(U256::from(1), 1, B256::repeat_byte(7), &[Address::ZERO])
            .await
            .unwrap();
        let tasks = store.explorer_tasks(U256::from(1)).await.unwrap();
        assert_eq!(tasks[1].quorum, [Address::ZERO]);
        assert_eq!(tasks[1].accepted_result, Some(B256::repeat_byte(7)));
        let jobs = store.explorer_jobs().await.unwrap();
        let one = jobs.iter().find(|j| j.job_id == U256::from(1)).unwrap();
        assert_eq!(one.accepted, 1);
        assert_eq!(
            store.explorer_job(U256::from(1)).await.unwrap().as_ref(),
            Some(one)
        );
        assert!(store.explorer_job(U256::from(3)).await.unwrap().is_none());
        assert!(
            store
                .explorer_replicas(U256::from(1))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.explorer_workers().await.unwrap().is_empty());
        assert!(store.explorer_throughput(0).await.unwrap().is_empty());
    }
}
