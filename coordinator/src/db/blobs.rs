//! The `blobs` table: content-addressed bytes (inputs, outputs, reports).

use std::collections::HashSet;

use alloy::primitives::{Address, B256, U256};
use sqlx::Row;

use super::Store;
use super::codec::{ReplicaState, column, to_bigint, to_hex};
use crate::error::Result;

/// The jobs that name a blob, and as what: who may read it follows from these (see the blob
/// access rules in `gleaner_protocol::api`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlobUses {
    /// Jobs whose settlement report it is (public).
    pub report_of: Vec<U256>,
    /// Jobs with a task whose input it is.
    pub input_of: Vec<U256>,
    /// Jobs with a replica result or an accepted result that is it.
    pub output_of: Vec<U256>,
}

impl BlobUses {
    /// Whether no job names the blob.
    pub fn is_empty(&self) -> bool {
        self.report_of.is_empty() && self.input_of.is_empty() && self.output_of.is_empty()
    }
}

impl Store {
    /// Stores a blob under its sha256 (idempotent).
    pub async fn put_blob(&self, hash: B256, bytes: &[u8]) -> Result<()> {
        self.execute_write(sqlx::query(
            "INSERT INTO blobs (hash, size, bytes) VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING",
        )
        .bind(to_hex(&hash))
        .bind(to_bigint(bytes.len() as u64)?)
        .bind(bytes.to_vec()))
        .await?;
        Ok(())
    }

    /// A blob's bytes.
    pub async fn blob(&self, hash: B256) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT bytes FROM blobs WHERE hash = $1")
            .bind(to_hex(&hash))
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.try_get::<Vec<u8>, _>("bytes")).transpose()?)
    }

    /// Whether a blob is stored.
    pub async fn has_blob(&self, hash: B256) -> Result<bool> {
        let row = sqlx::query("SELECT 1 AS one FROM blobs WHERE hash = $1")
            .bind(to_hex(&hash))
            .fetch_optional(&self.read)
            .await?;
        Ok(row.is_some())
    }

    /// The jobs that name `hash` as a report, an input or an output (indexed lookups).
    pub async fn blob_uses(&self, hash: B256) -> Result<BlobUses> {
        let rows = sqlx::query(
            "SELECT 'report' AS role, job_id FROM jobs WHERE report_hash = $1 \
             UNION SELECT 'input' AS role, job_id FROM tasks WHERE input_hash = $1 \
             UNION SELECT 'output' AS role, job_id FROM tasks WHERE accepted_result = $1 \
             UNION SELECT 'output' AS role, job_id FROM replicas WHERE result_hash = $1",
        )
        .bind(to_hex(&hash))
        .fetch_all(&self.read)
        .await?;
        let mut uses = BlobUses::default();
        for row in &rows {
            let job: U256 = column(row, "job_id")?;
            let list = match row.try_get::<String, _>("role")?.as_str() {
                "report" => &mut uses.report_of,
                "input" => &mut uses.input_of,
                _ => &mut uses.output_of,
            };
            if !list.contains(&job) {
                list.push(job);
            }
        }
        Ok(uses)
    }

    /// Whether `worker` holds a live (unexpired, not yet submitted) lease on a task whose input
    /// is `hash`.
    pub async fn leases_input(&self, worker: Address, hash: B256, now: u64) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 AS one FROM replicas r JOIN tasks t ON t.job_id = r.job_id AND t.idx = r.idx \
             WHERE r.worker = $1 AND r.state = $2 AND r.expires_at > $3 AND t.input_hash = $4 \
             LIMIT 1",
        )
        .bind(to_hex(&worker))
        .bind(ReplicaState::Leased.as_str())
        .bind(to_bigint(now)?)
        .bind(to_hex(&hash))
        .fetch_optional(&self.read)
        .await?;
        Ok(row.is_some())
    }

    /// The hashes among `hashes` that are not stored (each once, in first-seen order).
    pub async fn missing_blobs(&self, hashes: &[B256]) -> Result<Vec<B256>> {
        let mut seen = HashSet::new();
        let mut missing = Vec::new();
        for hash in hashes {
            if seen.insert(*hash) && !self.has_blob(*hash).await? {
                missing.push(*hash);
            }
        }
        Ok(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_are_stored_once_and_missing_ones_listed() {
        let store = Store::memory().await;
        let (a, b) = (B256::repeat_byte(7), B256::repeat_byte(8));
        store.put_blob(a, b"bytes").await.unwrap();
        store.put_blob(a, b"other").await.unwrap();
        assert_eq!(store.blob(a).await.unwrap().unwrap(), b"bytes");
        assert!(store.blob(b).await.unwrap().is_none());
        assert!(store.has_blob(a).await.unwrap() && !store.has_blob(b).await.unwrap());
        assert_eq!(
            store.missing_blobs(&[a, b, b, B256::ZERO]).await.unwrap(),
            vec![b, B256::ZERO]
        );
    }
}
