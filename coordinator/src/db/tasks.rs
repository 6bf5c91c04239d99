//! The `tasks` table: each task's hash, input, replicas wanted and the verifier's decision.

use alloy::primitives::{Address, B256, U256};
use sqlx::Row;

use super::Store;
use super::codec::{ReplicaState, TaskState, column, int_column, optional_column, to_hex};
use super::leases::{ReplicaRow, read_replica};
use crate::error::{Error, Result};

/// A task with its decision state, as the verifier sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// Task index.
    pub index: u32,
    /// Task hash.
    pub task_hash: B256,
    /// Replicas wanted (redundancy plus any extra the verifier asked for).
    pub replicas_needed: u32,
    /// Decision state.
    pub state: TaskState,
    /// Accepted output.
    pub accepted_result: Option<B256>,
    /// Accepted cluster.
    pub quorum: Vec<Address>,
}

/// An open task whose submitted replicas reach the number it wants: up for a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewTask {
    /// Task index.
    pub index: u32,
    /// Task hash.
    pub task_hash: B256,
    /// Its submitted replicas, in submission order.
    pub replicas: Vec<ReplicaRow>,
}

impl Store {
    /// The verifier's view of a job being decided: how many of its tasks are open, and the
    /// open tasks whose submitted replicas reach `replicas_needed` (in task order). It reads
    /// open tasks and their submitted replicas only, driven from the open-task index, so a
    /// poll costs what is undecided rather than the whole job.
    pub async fn review(&self, job_id: U256) -> Result<(u32, Vec<ReviewTask>)> {
        let open = sqlx::query("SELECT COUNT(*) AS n FROM tasks WHERE job_id = $1 AND state = $2")
            .bind(job_id.to_string())
            .bind(TaskState::Open.as_str())
            .fetch_one(&self.read)
            .await?;
        // CROSS JOIN keeps SQLite's loop order as written: open tasks outside, each task's
        // submitted replicas inside (the `replicas_task` index).
        let rows = sqlx::query(
            "SELECT r.lease_id, r.job_id, r.idx, r.worker, r.state, r.expires_at,              r.result_hash, r.signature, t.task_hash, t.replicas_needed              FROM tasks t CROSS JOIN replicas r              WHERE t.job_id = $1 AND t.state = $2              AND r.job_id = t.job_id AND r.idx = t.idx AND r.state = $3              ORDER BY r.idx, r.submitted_at, r.lease_id",
        )
        .bind(job_id.to_string())
        .bind(TaskState::Open.as_str())
        .bind(ReplicaState::Submitted.as_str())
        .fetch_all(&self.read)
        .await?;
        let mut ready: Vec<(ReviewTask, u32)> = Vec::new();
        for row in &rows {
            let replica = read_replica(row)?;
            match ready.last_mut() {
                Some((t, _)) if t.index == replica.index => t.replicas.push(replica),
                _ => ready.push((
                    ReviewTask {
                        index: replica.index,
                        task_hash: column(row, "task_hash")?,
                        replicas: vec![replica],
                    },
                    int_column(row, "replicas_needed")?,
                )),
            }
        }
        Ok((
            int_column(&open, "n")?,
            ready
                .into_iter()
                .filter(|(t, needed)| t.replicas.len() as u32 >= *needed)
                .map(|(t, _)| t)
                .collect(),
        ))
    }

    /// Every task of a job, in order.
    pub async fn tasks(&self, job_id: U256) -> Result<Vec<TaskRow>> {
        let rows = sqlx::query(
            "SELECT idx, task_hash, replicas_needed, state, accepted_result, quorum FROM tasks \
             WHERE job_id = $1 ORDER BY idx",
        )
        .bind(job_id.to_string())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(read_task).collect()
    }

    /// One task of a job (an indexed lookup).
    pub async fn task(&self, job_id: U256, index: u32) -> Result<Option<TaskRow>> {
        let row = sqlx::query(
            "SELECT idx, task_hash, replicas_needed, state, accepted_result, quorum FROM tasks \
             WHERE job_id = $1 AND idx = $2",
        )
        .bind(job_id.to_string())
        .bind(i64::from(index))
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(read_task).transpose()
    }

    /// The workers that submitted a replica of one task (an indexed lookup).
    pub async fn submitters(&self, job_id: U256, index: u32) -> Result<Vec<Address>> {
        let rows = sqlx::query(
            "SELECT worker FROM replicas WHERE job_id = $1 AND idx = $2 AND state = $3",
        )
        .bind(job_id.to_string())
        .bind(i64::from(index))
        .bind(ReplicaState::Submitted.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| column(r, "worker")).collect()
    }

    /// The task hash of a task.
    pub async fn task_hash(&self, job_id: U256, index: u32) -> Result<Option<B256>> {
        let row = sqlx::query("SELECT task_hash FROM tasks WHERE job_id = $1 AND idx = $2")
            .bind(job_id.to_string())
            .bind(i64::from(index))
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| column(&r, "task_hash")).transpose()
    }

    /// Accepts a task's result with its quorum; the task must be open.
    pub async fn accept_task(
        &self,
        job_id: U256,
        index: u32,
        result: B256,
        quorum: &[Address],
    ) -> Result<bool> {
        let quorum = serde_json::to_string(quorum)
            .map_err(|e| Error::Internal(format!("quorum json: {e}")))?;
        let done = self
            .execute_write(
                sqlx::query(
                    "UPDATE tasks SET state = $5, accepted_result = $1, quorum = $2 \
             WHERE job_id = $3 AND idx = $4 AND state = $6",
                )
                .bind(to_hex(&result))
                .bind(quorum)
                .bind(job_id.to_string())
                .bind(i64::from(index))
                .bind(TaskState::Accepted.as_str())
                .bind(TaskState::Open.as_str()),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Fails an open task for good.
    pub async fn fail_task(&self, job_id: U256, index: u32) -> Result<bool> {
        let done = self
            .execute_write(
                sqlx::query(
                    "UPDATE tasks SET state = $3 WHERE job_id = $1 AND idx = $2 AND state = $4",
                )
                .bind(job_id.to_string())
                .bind(i64::from(index))
                .bind(TaskState::Failed.as_str())
                .bind(TaskState::Open.as_str()),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Asks for `extra` more replicas of an open task.
    pub async fn more_replicas(&self, job_id: U256, index: u32, extra: u16) -> Result<bool> {
        let done = self
            .execute_write(
                sqlx::query(
                    "UPDATE tasks SET replicas_needed = replicas_needed + $1 \
             WHERE job_id = $2 AND idx = $3 AND state = $4",
                )
                .bind(i64::from(extra))
                .bind(job_id.to_string())
                .bind(i64::from(index))
                .bind(TaskState::Open.as_str()),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn read_task(row: &sqlx::any::AnyRow) -> Result<TaskRow> {
    let quorum = match row.try_get::<Option<String>, _>("quorum")? {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| Error::Internal(format!("stored quorum is corrupt: {e}")))?,
        None => Vec::new(),
    };
    Ok(TaskRow {
        index: int_column(row, "idx")?,
        task_hash: column(row, "task_hash")?,
        replicas_needed: int_column(row, "replicas_needed")?,
        state: column(row, "state")?,
        accepted_result: optional_column(row, "accepted_result")?,
        quorum,
    })
}

#[cfg(test)]
mod tests {
    use super::super::jobs::tests::job;
    use super::*;

    #[tokio::test]
    async fn decisions_apply_to_open_tasks_only() {
        let store = Store::memory().await;
        let (row, new_tasks) = job(1, 3, 2, "{}");
        store.insert_job(&row, &new_tasks, 1).await.unwrap();
        let id = row.job_id;
        let quorum = [Address::repeat_byte(1), Address::repeat_byte(2)];
        assert!(
            store
                .accept_task(id, 0, B256::repeat_byte(7), &quorum)
                .await
                .unwrap()
        );
        assert!(
            !store
                .accept_task(id, 0, B256::repeat_byte(8), &quorum)
                .await
                .unwrap()
        );
        assert!(!store.fail_task(id, 0).await.unwrap());
        assert!(store.fail_task(id, 1).await.unwrap());
        assert!(!store.more_replicas(id, 1, 1).await.unwrap());
        assert!(store.more_replicas(id, 2, 3).await.unwrap());
        let tasks = store.tasks(id).await.unwrap();
        let states: Vec<_> = tasks.iter().map(|t| t.state).collect();
        assert_eq!(
            states,
            [TaskState::Accepted, TaskState::Failed, TaskState::Open]
        );
        assert_eq!(tasks[0].quorum, quorum);
        assert_eq!(tasks[0].accepted_result, Some(B256::repeat_byte(7)));
        assert_eq!(tasks[2].replicas_needed, 5);
        assert_eq!(
            store.task_hash(id, 2).await.unwrap(),
            Some(new_tasks[2].task_hash)
        );
        assert_eq!(store.task_hash(id, 3).await.unwrap(), None);
        assert_eq!(store.job_progress(id).await.unwrap(), (0, 1, 1));
    }
}
