//! The `blobs` table: content-addressed bytes (inputs, outputs, reports).

use std::collections::HashSet;

use alloy::primitives::B256;
use sqlx::Row;

use super::Store;
use super::codec::{to_bigint, to_hex};
use crate::error::Result;

impl Store {
    /// Stores a blob under its sha256 (idempotent).
    pub async fn put_blob(&self, hash: B256, bytes: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO blobs (hash, size, bytes) VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING",
        )
        .bind(to_hex(&hash))
        .bind(to_bigint(bytes.len() as u64)?)
        .bind(bytes.to_vec())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A blob's bytes.
    pub async fn blob(&self, hash: B256) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT bytes FROM blobs WHERE hash = $1")
            .bind(to_hex(&hash))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<Vec<u8>, _>("bytes")).transpose()?)
    }

    /// Whether a blob is stored.
    pub async fn has_blob(&self, hash: B256) -> Result<bool> {
        let row = sqlx::query("SELECT 1 AS one FROM blobs WHERE hash = $1")
            .bind(to_hex(&hash))
            .fetch_optional(&self.pool)
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
