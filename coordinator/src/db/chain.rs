//! The chain cursor (`chain_blocks`) and the JobMarket events ingested (`chain_events`).
//!
//! Events are typed ([`JobEvent`]): the watcher decodes each log once; the `event` column holds
//! [`JobEvent::name`] and `data` the variant's fields as JSON (serde).

use alloy::primitives::{B256, U256};
use gleaner_protocol::api::JobState;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::Store;
use super::codec::{column, int_column, parse_stored, sql_list, to_bigint, to_hex};
use crate::error::{Error, Result};

/// A JobMarket event about a job, as the coordinator uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all_fields = "camelCase")]
pub enum JobEvent {
    /// `JobCreated`.
    JobCreated {
        /// keccak256 of the manifest.
        spec_hash: B256,
    },
    /// `TasksPosted`.
    TasksPosted {
        /// The posted root.
        tasks_root: B256,
        /// Number of tasks.
        count: u32,
    },
    /// `JobSettled`.
    JobSettled {
        /// The settlement report's hash.
        report_hash: B256,
    },
    /// `JobCancelled`.
    JobCancelled,
    /// `JobReclaimed`.
    JobReclaimed,
}

impl JobEvent {
    /// The `event` column of a `TasksPosted` event.
    pub const TASKS_POSTED: &'static str = "TasksPosted";

    /// The Solidity event name (the `event` column).
    pub fn name(&self) -> &'static str {
        match self {
            Self::JobCreated { .. } => "JobCreated",
            Self::TasksPosted { .. } => Self::TASKS_POSTED,
            Self::JobSettled { .. } => "JobSettled",
            Self::JobCancelled => "JobCancelled",
            Self::JobReclaimed => "JobReclaimed",
        }
    }
}

/// A JobMarket log, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEvent {
    /// Block hash.
    pub block_hash: B256,
    /// Block number.
    pub block_number: u64,
    /// Transaction hash.
    pub tx_hash: B256,
    /// Log index in the block.
    pub log_index: u64,
    /// Job the event is about.
    pub job_id: U256,
    /// What happened.
    pub event: JobEvent,
}

impl Store {
    /// The newest `limit` processed blocks, newest first.
    pub async fn chain_blocks(&self, limit: u64) -> Result<Vec<(u64, B256)>> {
        let rows =
            sqlx::query("SELECT number, hash FROM chain_blocks ORDER BY number DESC LIMIT $1")
                .bind(to_bigint(limit)?)
                .fetch_all(&self.read)
                .await?;
        rows.iter()
            .map(|r| Ok((int_column(r, "number")?, column(r, "hash")?)))
            .collect()
    }

    /// Records a processed range: its events, then the hashes of the blocks seen (the range end
    /// and every block with an event), in one transaction. Returns the events not seen before.
    pub async fn record_chain(
        &self,
        blocks: &[(u64, B256)],
        events: &[ChainEvent],
    ) -> Result<Vec<ChainEvent>> {
        let mut tx = self.begin_write().await?;
        let mut fresh = Vec::new();
        for e in events {
            let event = serde_json::to_value(&e.event)
                .map_err(|err| Error::Internal(format!("event json: {err}")))?;
            // Unit variants serialise as a bare name; the others as {name: fields}.
            let data = event
                .as_object()
                .and_then(|o| o.values().next().cloned())
                .unwrap_or_else(|| serde_json::json!({}));
            let inserted = sqlx::query(
                "INSERT INTO chain_events (block_hash, tx_hash, log_index, block_number, event, \
                 job_id, data) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (block_hash, tx_hash, log_index) DO NOTHING",
            )
            .bind(to_hex(&e.block_hash))
            .bind(to_hex(&e.tx_hash))
            .bind(to_bigint(e.log_index)?)
            .bind(to_bigint(e.block_number)?)
            .bind(e.event.name())
            .bind(e.job_id.to_string())
            .bind(data.to_string())
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 1 {
                fresh.push(e.clone());
            }
        }
        for (number, hash) in blocks {
            sqlx::query(
                "INSERT INTO chain_blocks (number, hash) VALUES ($1, $2) \
                 ON CONFLICT (number) DO UPDATE SET hash = excluded.hash",
            )
            .bind(to_bigint(*number)?)
            .bind(to_hex(hash))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(fresh)
    }

    /// The hash of the block that holds the job's `TasksPosted` event as recorded (for a job
    /// with spot checks, the commitment's block: the beacon of its spot checks).
    pub async fn posted_block_hash(&self, job_id: U256) -> Result<Option<B256>> {
        let row = sqlx::query(
            "SELECT block_hash FROM chain_events WHERE job_id = $1 AND event = $2 \
             ORDER BY block_number DESC LIMIT 1",
        )
        .bind(job_id.to_string())
        .bind(JobEvent::TASKS_POSTED)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(|r| column(r, "block_hash")).transpose()
    }

    /// Forgets every block and event at or above `number` (a reorg). Jobs whose state came from
    /// the chain go back to `registered`, so the watcher derives their state afresh from the
    /// chain. Returns the job ids of the forgotten events.
    pub async fn rollback_chain(&self, number: u64) -> Result<Vec<U256>> {
        let number = to_bigint(number)?;
        let from_chain = sql_list(
            [
                JobState::Posted,
                JobState::Settled,
                JobState::Cancelled,
                JobState::Expired,
                JobState::RootMismatch,
            ]
            .iter()
            .map(JobState::as_str),
        );
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query("SELECT DISTINCT job_id FROM chain_events WHERE block_number >= $1")
            .bind(number)
            .fetch_all(&mut *tx)
            .await?;
        let mut jobs = Vec::new();
        for row in &rows {
            let id: String = row.try_get("job_id")?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE jobs SET state = $2 WHERE job_id = $1 AND state IN {from_chain}"
            )))
            .bind(id.clone())
            .bind(JobState::Registered.as_str())
            .execute(&mut *tx)
            .await?;
            jobs.push(parse_stored(&id, "job id")?);
        }
        sqlx::query("DELETE FROM chain_events WHERE block_number >= $1")
            .bind(number)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM chain_blocks WHERE number >= $1")
            .bind(number)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(jobs)
    }

    /// Settled jobs whose `JobSettled` event is not stored (yet): the verifier reported them
    /// settled, and the watcher has not confirmed it. A settlement a reorg removes stays here.
    pub async fn settled_unconfirmed(&self) -> Result<Vec<U256>> {
        let rows = sqlx::query(
            "SELECT j.job_id FROM jobs j WHERE j.state = $1 AND NOT EXISTS \
             (SELECT 1 FROM chain_events e WHERE e.job_id = j.job_id AND e.event = $2)",
        )
        .bind(JobState::Settled.as_str())
        .bind("JobSettled")
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| parse_stored(&r.try_get::<String, _>("job_id")?, "job id"))
            .collect()
    }

    /// Takes or renews the lease on `role` for `holder` until `now + secs`, unless another
    /// holder's lease is still running; returns whether `holder` holds it now. One statement,
    /// so two coordinators racing for an expired lease cannot both win.
    pub async fn try_lead(&self, role: &str, holder: &str, now: u64, secs: u64) -> Result<bool> {
        let until = to_bigint(now.saturating_add(secs))?;
        self.execute_write(
            sqlx::query(
                "INSERT INTO leader (role, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (role) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE leader.holder = excluded.holder OR leader.expires_at <= $4",
            )
            .bind(role.to_owned())
            .bind(holder.to_owned())
            .bind(until)
            .bind(to_bigint(now)?),
        )
        .await?;
        let row = sqlx::query("SELECT holder FROM leader WHERE role = $1")
            .bind(role.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<String, _>("holder")? == holder,
            None => false,
        })
    }

    /// Gives up `role` if `holder` has it (a clean shutdown hands over at once).
    pub async fn resign(&self, role: &str, holder: &str) -> Result<()> {
        self.execute_write(
            sqlx::query("DELETE FROM leader WHERE role = $1 AND holder = $2")
                .bind(role.to_owned())
                .bind(holder.to_owned()),
        )
        .await?;
        Ok(())
    }

    /// Number of stored chain events (for tests and metrics).
    pub async fn chain_event_count(&self) -> Result<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM chain_events")
            .fetch_one(&self.read)
            .await?;
        int_column(&row, "n")
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn one_holder_leads_until_its_lease_ends_or_it_resigns() {
        let store = Store::memory().await;
        assert!(store.try_lead("watcher", "a", 100, 10).await.unwrap());
        assert!(!store.try_lead("watcher", "b", 105, 10).await.unwrap());
        // Renewed by its holder, then taken over once it lapses.
        assert!(store.try_lead("watcher", "a", 108, 10).await.unwrap());
        assert!(!store.try_lead("watcher", "b", 117, 10).await.unwrap());
        assert!(store.try_lead("watcher", "b", 118, 10).await.unwrap());
        assert!(!store.try_lead("watcher", "a", 119, 10).await.unwrap());
        store.resign("watcher", "a").await.unwrap();
        assert!(!store.try_lead("watcher", "a", 120, 10).await.unwrap());
        store.resign("watcher", "b").await.unwrap();
        assert!(store.try_lead("watcher", "a", 121, 10).await.unwrap());
    }

    use super::super::jobs::tests::{job, posted};
    use super::*;

    fn event(block: u64, job: u64, event: JobEvent) -> ChainEvent {
        ChainEvent {
            block_hash: B256::with_last_byte(block as u8),
            block_number: block,
            tx_hash: B256::repeat_byte(0xee),
            log_index: 0,
            job_id: U256::from(job),
            event,
        }
    }

    #[tokio::test]
    async fn events_are_recorded_once_and_rolled_back() {
        let store = Store::memory().await;
        posted(&store, 1, 1, 1, "embed").await;
        let (row, tasks) = job(2, 1, 1, "{}");
        store.insert_job(&row, &tasks, 1).await.unwrap();
        let posted_event = event(
            5,
            1,
            JobEvent::TasksPosted {
                tasks_root: B256::repeat_byte(2),
                count: 1,
            },
        );
        let cancelled = event(7, 2, JobEvent::JobCancelled);
        let blocks = [(5, B256::with_last_byte(5)), (9, B256::with_last_byte(9))];
        let fresh = store
            .record_chain(&blocks, &[posted_event.clone(), cancelled.clone()])
            .await
            .unwrap();
        assert_eq!(fresh, [posted_event.clone(), cancelled.clone()]);
        assert!(
            store
                .record_chain(&blocks, &[posted_event])
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.chain_event_count().await.unwrap(), 2);
        assert_eq!(
            store.chain_blocks(1).await.unwrap(),
            [(9, B256::with_last_byte(9))]
        );
        let stored: Vec<(String, String)> =
            sqlx::query_as("SELECT event, data FROM chain_events ORDER BY block_number")
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(stored[0].0, "TasksPosted");
        let data: serde_json::Value = serde_json::from_str(&stored[0].1).unwrap();
        assert_eq!(data["count"], 1);
        assert_eq!(data["tasksRoot"], serde_json::json!(B256::repeat_byte(2)));
        assert_eq!(stored[1], ("JobCancelled".to_owned(), "{}".to_owned()));

        store
            .set_job_state(U256::from(2), JobState::Registered, JobState::Cancelled)
            .await
            .unwrap();
        // A reorg from block 6: the cancellation is forgotten, job 1's event stays.
        assert_eq!(store.rollback_chain(6).await.unwrap(), [U256::from(2)]);
        assert_eq!(store.chain_event_count().await.unwrap(), 1);
        assert_eq!(
            store.chain_blocks(10).await.unwrap(),
            [(5, B256::with_last_byte(5))]
        );
        let states = (
            store.job(U256::from(1)).await.unwrap().unwrap().state,
            store.job(U256::from(2)).await.unwrap().unwrap().state,
        );
        assert_eq!(states, (JobState::Posted, JobState::Registered));
    }
}
