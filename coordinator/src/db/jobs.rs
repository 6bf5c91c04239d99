//! The `jobs` table: one row per registered job, its state and its task root.
//!
//! A job's tasks are inserted with it (see [`Store::insert_job`]); their decisions are in
//! [`super::tasks`].

use alloy::primitives::{Address, B256, U256};
use gleaner_protocol::api::JobState;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::codec::{
    ReplicaState, TaskState, column, int_column, optional_column, random_hex, to_bigint, to_hex,
};
use super::{DbKind, Store};
use crate::error::Result;

/// The kind of a job whose manifest names none, and of a worker whose capabilities list none:
/// both come from before kinds existed, when everything was `embed`.
pub(crate) const LEGACY_KIND: &str = "embed";

/// A registered job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    /// On-chain id.
    pub job_id: U256,
    /// Canonical manifest JSON.
    pub manifest: String,
    /// keccak256 of the manifest.
    pub spec_hash: B256,
    /// Requester.
    pub requester: Address,
    /// Replicas per task.
    pub redundancy: u16,
    /// Number of tasks.
    pub task_count: u32,
    /// On-chain deadline (unix seconds).
    pub deadline: u64,
    /// Stored state (never [`JobState::Verifying`], which is derived for the API).
    pub state: JobState,
    /// Our Merkle root of the task hashes.
    pub tasks_root: B256,
    /// Our `postTasks` transaction, once sent.
    pub post_tx: Option<B256>,
    /// Settlement report hash.
    pub report_hash: Option<B256>,
}

/// One task of a job being registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// Task hash.
    pub task_hash: B256,
    /// Input blob.
    pub input_hash: B256,
    /// Work units.
    pub cost: u64,
}

/// A job's columns, selected `FROM jobs`: the manifest lives in `job_manifests`, out of the
/// row, so that reading a job's other columns does not walk it (migration 0010).
const JOB_COLUMNS: &str = "job_id, \
     (SELECT m.manifest FROM job_manifests m WHERE m.job_id = jobs.job_id) AS manifest, \
     spec_hash, requester, redundancy, task_count, deadline, state, tasks_root, post_tx, \
     report_hash";

fn read_job(row: &AnyRow) -> Result<JobRow> {
    Ok(JobRow {
        job_id: column(row, "job_id")?,
        manifest: row.try_get("manifest")?,
        spec_hash: column(row, "spec_hash")?,
        requester: column(row, "requester")?,
        redundancy: int_column(row, "redundancy")?,
        task_count: int_column(row, "task_count")?,
        deadline: int_column(row, "deadline")?,
        state: column(row, "state")?,
        tasks_root: column(row, "tasks_root")?,
        post_tx: optional_column(row, "post_tx")?,
        report_hash: optional_column(row, "report_hash")?,
    })
}

/// Whether the manifest asks for spot checks (its tasks then start with one replica wanted).
fn manifest_has_spot_checks(manifest: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(manifest)
        .ok()
        .is_some_and(|m| m.get("spot_checks").is_some_and(|v| !v.is_null()))
}

/// The manifest's `kind`, as a plain string (the store does not care which kinds exist).
fn manifest_kind(manifest: &str) -> String {
    serde_json::from_str::<serde_json::Value>(manifest)
        .ok()
        .and_then(|m| m["kind"].as_str().map(str::to_owned))
        .unwrap_or_else(|| LEGACY_KIND.to_owned())
}

impl Store {
    /// A registered job.
    pub async fn job(&self, job_id: U256) -> Result<Option<JobRow>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(job_id.to_string())
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(read_job).transpose()
    }

    /// A registered job's state alone (no manifest read).
    pub async fn job_state(&self, job_id: U256) -> Result<Option<JobState>> {
        let row = sqlx::query("SELECT state FROM jobs WHERE job_id = $1")
            .bind(job_id.to_string())
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(|r| column(r, "state")).transpose()
    }

    /// Jobs in one state, earliest deadline first.
    pub async fn jobs_in_state(&self, state: JobState) -> Result<Vec<JobRow>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state = $1 \
             ORDER BY deadline, LENGTH(job_id), job_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(state.as_str())
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(read_job).collect()
    }

    /// Inserts a job and its tasks in one transaction. Returns `false` (and writes nothing) when
    /// the job id is already registered. A job whose manifest asks for spot checks gets a fresh
    /// secret ([`Store::check_secret`]) and tasks that want one replica to start with (the
    /// verifier asks for more where trust or a check requires them); any other job's tasks want
    /// `redundancy` replicas.
    pub async fn insert_job(&self, job: &JobRow, tasks: &[NewTask], now: u64) -> Result<bool> {
        let spot = manifest_has_spot_checks(&job.manifest);
        let first_replicas = if spot { 1 } else { i64::from(job.redundancy) };
        let secret = spot.then(|| format!("0x{}", random_hex()));
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 AS one FROM jobs WHERE job_id = $1")
            .bind(job.job_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO jobs (job_id, spec_hash, requester, redundancy, task_count, deadline, \
             state, tasks_root, post_tx, report_hash, created_at, kind, check_secret) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, $9, $10, $11)",
        )
        .bind(job.job_id.to_string())
        .bind(to_hex(&job.spec_hash))
        .bind(to_hex(&job.requester))
        .bind(i64::from(job.redundancy))
        .bind(i64::from(job.task_count))
        .bind(to_bigint(job.deadline)?)
        .bind(job.state.as_str())
        .bind(to_hex(&job.tasks_root))
        .bind(to_bigint(now)?)
        .bind(manifest_kind(&job.manifest))
        .bind(secret)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO job_manifests (job_id, manifest) VALUES ($1, $2)")
            .bind(job.job_id.to_string())
            .bind(job.manifest.clone())
            .execute(&mut *tx)
            .await?;
        for (index, task) in tasks.iter().enumerate() {
            sqlx::query(
                "INSERT INTO tasks (job_id, idx, task_hash, input_hash, cost, replicas_needed, \
                 state, accepted_result, quorum) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL)",
            )
            .bind(job.job_id.to_string())
            .bind(index as i64)
            .bind(to_hex(&task.task_hash))
            .bind(to_hex(&task.input_hash))
            .bind(task.cost.to_string())
            .bind(first_replicas)
            .bind(TaskState::Open.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if self.kind == DbKind::Postgres {
            self.analyze_for_leasing().await;
        }
        Ok(true)
    }

    /// PostgreSQL: fresh planner statistics for the tables a lease reads.
    ///
    /// Autovacuum analyzes a table a minute or more after it changes. Until then a new job's
    /// tasks count as the few rows last seen, and the lease's pick went through
    /// `replicas_distinct_workers` by job and worker only, reading every replica of the job
    /// for each open task it stepped over: in `gleaner bench coordinator --database` (16
    /// workers, 4,000 tasks) one pick grew from 5 ms to 2-5 s as the job filled, and `EXPLAIN
    /// ANALYZE` of it took 822 ms before `ANALYZE` and 1.5 ms after. A failure here leaves the
    /// job in and is logged.
    async fn analyze_for_leasing(&self) {
        if let Err(e) = sqlx::query("ANALYZE tasks, replicas")
            .execute(&self.pool)
            .await
        {
            tracing::warn!(target: "coordinator", error = %e, "ANALYZE after a new job");
        }
    }

    /// The spot-check secret of a job with spot checks (`None` for full replication or an
    /// unknown job).
    pub async fn check_secret(&self, job_id: U256) -> Result<Option<B256>> {
        let row = sqlx::query("SELECT check_secret FROM jobs WHERE job_id = $1")
            .bind(job_id.to_string())
            .fetch_optional(&self.read)
            .await?;
        match row {
            Some(r) => optional_column(&r, "check_secret"),
            None => Ok(None),
        }
    }

    /// Moves a job from one state to another; `false` when it was not in `from`.
    pub async fn set_job_state(&self, job_id: U256, from: JobState, to: JobState) -> Result<bool> {
        let done = self
            .execute_write(
                sqlx::query("UPDATE jobs SET state = $1 WHERE job_id = $2 AND state = $3")
                    .bind(to.as_str())
                    .bind(job_id.to_string())
                    .bind(from.as_str()),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records (or clears) our `postTasks` transaction.
    pub async fn set_post_tx(&self, job_id: U256, tx: Option<B256>) -> Result<()> {
        self.execute_write(
            sqlx::query("UPDATE jobs SET post_tx = $1 WHERE job_id = $2")
                .bind(tx.map(|t| to_hex(&t)))
                .bind(job_id.to_string()),
        )
        .await?;
        Ok(())
    }

    /// (replicas submitted, tasks accepted, tasks failed) of a job, counted in one query.
    pub async fn job_progress(&self, job_id: U256) -> Result<(u32, u32, u32)> {
        let row = sqlx::query(
            "SELECT \
             (SELECT COUNT(*) FROM replicas WHERE job_id = $1 AND state = $2) AS submitted, \
             (SELECT COUNT(*) FROM tasks WHERE job_id = $1 AND state = $3) AS accepted, \
             (SELECT COUNT(*) FROM tasks WHERE job_id = $1 AND state = $4) AS failed",
        )
        .bind(job_id.to_string())
        .bind(ReplicaState::Submitted.as_str())
        .bind(TaskState::Accepted.as_str())
        .bind(TaskState::Failed.as_str())
        .fetch_one(&self.read)
        .await?;
        Ok((
            int_column(&row, "submitted")?,
            int_column(&row, "accepted")?,
            int_column(&row, "failed")?,
        ))
    }

    /// Marks a job settled with its report hash (from `posted`, or from `settled` with the same
    /// hash: idempotent). `false` when neither applies.
    pub async fn settle(&self, job_id: U256, report_hash: B256) -> Result<bool> {
        let done = self
            .execute_write(
                sqlx::query(
                    "UPDATE jobs SET state = $3, report_hash = $1 WHERE job_id = $2 \
             AND (state = $4 OR (state = $3 AND (report_hash IS NULL OR report_hash = $1)))",
                )
                .bind(to_hex(&report_hash))
                .bind(job_id.to_string())
                .bind(JobState::Settled.as_str())
                .bind(JobState::Posted.as_str()),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A job of `tasks` tasks with `redundancy`, deadline 10,000, kind from `manifest`.
    pub(crate) fn job(
        id: u64,
        tasks: u32,
        redundancy: u16,
        manifest: &str,
    ) -> (JobRow, Vec<NewTask>) {
        let row = JobRow {
            job_id: U256::from(id),
            manifest: manifest.to_owned(),
            spec_hash: B256::repeat_byte(1),
            requester: Address::repeat_byte(9),
            redundancy,
            task_count: tasks,
            deadline: 10_000,
            state: JobState::Registered,
            tasks_root: B256::repeat_byte(2),
            post_tx: None,
            report_hash: None,
        };
        let new_tasks = (0..tasks)
            .map(|i| NewTask {
                task_hash: B256::with_last_byte(i as u8 + 1),
                input_hash: B256::with_last_byte(100 + i as u8),
                cost: u64::MAX,
            })
            .collect();
        (row, new_tasks)
    }

    /// Inserts a job and moves it to `posted` (leasable).
    pub(crate) async fn posted(store: &Store, id: u64, tasks: u32, redundancy: u16, kind: &str) {
        let (row, new_tasks) = job(id, tasks, redundancy, &format!(r#"{{"kind":"{kind}"}}"#));
        assert!(store.insert_job(&row, &new_tasks, 1).await.unwrap());
        assert!(
            store
                .set_job_state(row.job_id, JobState::Registered, JobState::Posted)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn jobs_insert_once_and_move_between_states() {
        let store = Store::memory().await;
        let (row, tasks) = job(1, 2, 2, "{}");
        assert!(store.insert_job(&row, &tasks, 1).await.unwrap());
        assert!(!store.insert_job(&row, &tasks, 1).await.unwrap());
        assert_eq!(store.job(U256::from(1)).await.unwrap().unwrap(), row);
        assert!(store.job(U256::from(2)).await.unwrap().is_none());
        let id = row.job_id;
        assert!(
            !store
                .set_job_state(id, JobState::Posted, JobState::Settled)
                .await
                .unwrap()
        );
        assert!(
            store
                .set_job_state(id, JobState::Registered, JobState::RootMismatch)
                .await
                .unwrap()
        );
        assert_eq!(
            store.job(id).await.unwrap().unwrap().state,
            JobState::RootMismatch
        );
        assert_eq!(
            store
                .jobs_in_state(JobState::RootMismatch)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            store
                .jobs_in_state(JobState::Registered)
                .await
                .unwrap()
                .is_empty()
        );
        store
            .set_post_tx(id, Some(B256::repeat_byte(5)))
            .await
            .unwrap();
        assert_eq!(
            store.job(id).await.unwrap().unwrap().post_tx,
            Some(B256::repeat_byte(5))
        );
        assert_eq!(store.job_progress(id).await.unwrap(), (0, 0, 0));
        // Settling needs `posted`.
        assert!(!store.settle(id, B256::repeat_byte(3)).await.unwrap());
    }

    #[tokio::test]
    async fn the_database_refuses_unknown_states() {
        let store = Store::memory().await;
        let (row, tasks) = job(1, 1, 1, "{}");
        store.insert_job(&row, &tasks, 1).await.unwrap();
        let attempts = [
            "UPDATE jobs SET state = 'verifying' WHERE job_id = '1'",
            "UPDATE jobs SET state = 'bogus' WHERE job_id = '1'",
            "UPDATE tasks SET state = 'done' WHERE job_id = '1'",
            "INSERT INTO replicas (lease_id, job_id, idx, worker, state, leased_at, expires_at) \
             VALUES ('l', '1', 0, '0x01', 'live', 0, 1)",
        ];
        for sql in attempts {
            let err = sqlx::query(sql).execute(store.pool()).await.unwrap_err();
            assert!(err.to_string().contains("CHECK"), "{sql}: {err}");
        }
        assert_eq!(
            store.job(row.job_id).await.unwrap().unwrap().state,
            JobState::Registered
        );
    }

    #[test]
    fn the_kind_column_is_the_manifests_kind_as_a_string() {
        assert_eq!(manifest_kind(r#"{"kind":"train"}"#), "train");
        assert_eq!(manifest_kind(r#"{"kind":"my-new-kind"}"#), "my-new-kind");
        assert_eq!(manifest_kind("{}"), LEGACY_KIND);
        assert_eq!(manifest_kind("not json"), LEGACY_KIND);
    }
}
