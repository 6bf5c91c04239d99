//! The `workers` and `sessions` tables: sign-ins, their nonces, and bearer sessions.

use alloy::primitives::Address;
use sqlx::Row;

use super::Store;
use super::codec::{column, int_column, to_bigint, to_hex};
use crate::error::{Error, Result};

impl Store {
    /// Records a sign-in: the nonce must exceed the stored one; upserts the worker and creates
    /// the session, all in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn sign_in(
        &self,
        address: Address,
        capabilities_json: &str,
        gflops: f64,
        nonce: u64,
        now: u64,
        token: &str,
        role: &str,
        expires_at: u64,
    ) -> Result<()> {
        let nonce = to_bigint(nonce)?;
        let now = to_bigint(now)?;
        let mut tx = self.begin_write().await?;
        let last = sqlx::query("SELECT last_nonce FROM workers WHERE address = $1")
            .bind(to_hex(&address))
            .fetch_optional(&mut *tx)
            .await?;
        match last {
            Some(row) => {
                let last: i64 = row.try_get("last_nonce")?;
                if nonce <= last {
                    return Err(Error::Unauthorized(format!(
                        "nonce {nonce} was already used (last {last}); sign a larger one"
                    )));
                }
                sqlx::query(
                    "UPDATE workers SET capabilities = $1, gflops = $2, last_nonce = $3, \
                     last_seen = $4 WHERE address = $5",
                )
                .bind(capabilities_json.to_owned())
                .bind(gflops)
                .bind(nonce)
                .bind(now)
                .bind(to_hex(&address))
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO workers (address, capabilities, gflops, last_nonce, last_seen) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(to_hex(&address))
                .bind(capabilities_json.to_owned())
                .bind(gflops)
                .bind(nonce)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (token, address, role, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token.to_owned())
        .bind(to_hex(&address))
        .bind(role.to_owned())
        .bind(to_bigint(expires_at)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends everything a worker that lost its eligibility holds: its worker sessions (its bearer
    /// tokens stop working at once) and its live leases (back to the queue). Returns (sessions,
    /// leases) ended. The verifier's session, on the same address or not, is left alone.
    pub async fn end_worker(&self, worker: Address) -> Result<(u64, u64)> {
        let mut tx = self.pool.begin().await?;
        let sessions = sqlx::query("DELETE FROM sessions WHERE address = $1 AND role = $2")
            .bind(to_hex(&worker))
            .bind("worker")
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let leases = sqlx::query("UPDATE replicas SET state = $1 WHERE worker = $2 AND state = $3")
            .bind(crate::db::ReplicaState::Released.as_str())
            .bind(to_hex(&worker))
            .bind(crate::db::ReplicaState::Leased.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok((sessions, leases))
    }

    /// Every address with a worker session (expired ones included until the next sign-in
    /// sweeps them).
    pub async fn signed_in_workers(&self) -> Result<Vec<Address>> {
        let rows = sqlx::query("SELECT DISTINCT address FROM sessions WHERE role = $1")
            .bind("worker")
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| column(r, "address")).collect()
    }

    /// The (address, role) of an unexpired session.
    pub async fn session(&self, token: &str, now: u64) -> Result<Option<(Address, String)>> {
        let row =
            sqlx::query("SELECT address, role FROM sessions WHERE token = $1 AND expires_at > $2")
                .bind(token.to_owned())
                .bind(to_bigint(now)?)
                .fetch_optional(&self.read)
                .await?;
        row.map(|r| Ok((column(&r, "address")?, r.try_get::<String, _>("role")?)))
            .transpose()
    }

    /// A worker's last nonce.
    pub async fn last_nonce(&self, address: Address) -> Result<Option<u64>> {
        let row = sqlx::query("SELECT last_nonce FROM workers WHERE address = $1")
            .bind(to_hex(&address))
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| int_column(&r, "last_nonce")).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nonces_only_grow_and_sessions_expire() {
        let store = Store::memory().await;
        let w = Address::repeat_byte(1);
        assert_eq!(store.last_nonce(w).await.unwrap(), None);
        store
            .sign_in(w, "{}", 1.0, 5, 100, "t1", "worker", 200)
            .await
            .unwrap();
        for replay in [5, 4] {
            let err = store
                .sign_in(w, "{}", 1.0, replay, 100, "t2", "worker", 200)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Unauthorized(_)), "{err}");
        }
        store
            .sign_in(w, "{}", 1.0, 6, 150, "t3", "verifier", 300)
            .await
            .unwrap();
        assert_eq!(store.last_nonce(w).await.unwrap(), Some(6));
        assert_eq!(
            store.session("t1", 199).await.unwrap(),
            Some((w, "worker".into()))
        );
        assert_eq!(store.session("t1", 200).await.unwrap(), None);
        assert_eq!(store.session("t2", 100).await.unwrap(), None);
        assert_eq!(
            store.session("t3", 299).await.unwrap(),
            Some((w, "verifier".into()))
        );
    }
}
