//! The store: one sqlx `Any` code path for SQLite (default) and PostgreSQL.
//!
//! Every multi-step write runs in one transaction. SQLite transactions that write begin with
//! `BEGIN IMMEDIATE` (one writer at a time, no upgrade deadlocks); PostgreSQL leasing locks the
//! chosen task row with `FOR UPDATE SKIP LOCKED`, so several coordinators can share a database.
//! A partial unique index (`replicas_distinct_workers`) makes "two live replicas of one task on
//! one worker" impossible whatever the code above does.

use std::str::FromStr;

use alloy::primitives::{Address, B256, Bytes, U256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::error::{Error, Result};
use crate::scheduler;

/// Job states in the store.
pub mod job_state {
    /// Manifest accepted, root not yet posted (or not yet confirmed).
    pub const REGISTERED: &str = "registered";
    /// Root posted and confirmed: tasks are leased.
    pub const POSTED: &str = "posted";
    /// The verifier settled it on-chain.
    pub const SETTLED: &str = "settled";
    /// Cancelled by the requester before posting.
    pub const CANCELLED: &str = "cancelled";
    /// Reclaimed after the deadline, or the deadline passed before posting.
    pub const EXPIRED: &str = "expired";
    /// Someone posted a root that is not ours: never leased.
    pub const ROOT_MISMATCH: &str = "root_mismatch";
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// SQLite (file or memory).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    kind: DbKind,
}

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
    /// One of [`job_state`].
    pub state: String,
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

/// A replica as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    /// Lease id.
    pub lease_id: String,
    /// Job.
    pub job_id: U256,
    /// Task index.
    pub index: u32,
    /// Worker.
    pub worker: Address,
    /// `leased`, `submitted`, `expired`, `released`.
    pub state: String,
    /// Lease expiry.
    pub expires_at: u64,
    /// Output blob, once submitted.
    pub result_hash: Option<B256>,
    /// Result signature, once submitted.
    pub signature: Option<Bytes>,
}

/// A fresh lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedTask {
    /// Lease id.
    pub lease_id: String,
    /// Job.
    pub job_id: U256,
    /// Task index.
    pub index: u32,
    /// Task hash.
    pub task_hash: B256,
    /// Input blob.
    pub input_hash: B256,
    /// Lease expiry.
    pub expires_at: u64,
}

/// A task with its decision state, as the verifier sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// Task index.
    pub index: u32,
    /// Task hash.
    pub task_hash: B256,
    /// Replicas wanted (redundancy plus any extra the verifier asked for).
    pub replicas_needed: u32,
    /// `open`, `accepted`, `failed`.
    pub state: String,
    /// Accepted output.
    pub accepted_result: Option<B256>,
    /// Accepted cluster.
    pub quorum: Vec<Address>,
}

/// Lease counts for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Replicas wanted but not leased, in leasable jobs.
    pub queued: u64,
    /// Replicas leased now.
    pub leased: u64,
}

/// Hex of an address or hash, lowercase, 0x-prefixed: the one form stored.
pub(crate) fn hx<T: std::fmt::LowerHex>(v: &T) -> String {
    format!("{v:#x}")
}

fn parse<T: FromStr>(s: &str, what: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| Error::Internal(format!("stored {what} {s:?} is corrupt: {e}")))
}

fn opt_parse<T: FromStr>(s: Option<String>, what: &str) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    s.map(|s| parse(&s, what)).transpose()
}

/// 32 random bytes as hex (session tokens, lease ids), from the OS CSPRNG through k256.
pub(crate) fn random_hex() -> String {
    hex::encode(alloy::signers::local::PrivateKeySigner::random().to_bytes())
}

fn i(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::BadRequest(format!("{v} is out of range")))
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

const JOB_COLS: &str = "job_id, manifest, spec_hash, requester, redundancy, task_count, deadline, \
                        state, tasks_root, post_tx, report_hash";

fn job_row(r: &AnyRow) -> Result<JobRow> {
    Ok(JobRow {
        job_id: parse(&r.try_get::<String, _>("job_id")?, "job id")?,
        manifest: r.try_get("manifest")?,
        spec_hash: parse(&r.try_get::<String, _>("spec_hash")?, "spec hash")?,
        requester: parse(&r.try_get::<String, _>("requester")?, "requester")?,
        redundancy: u16::try_from(r.try_get::<i64, _>("redundancy")?).unwrap_or(0),
        task_count: u32::try_from(r.try_get::<i64, _>("task_count")?).unwrap_or(0),
        deadline: u(r.try_get("deadline")?),
        state: r.try_get("state")?,
        tasks_root: parse(&r.try_get::<String, _>("tasks_root")?, "tasks root")?,
        post_tx: opt_parse(r.try_get("post_tx")?, "post tx")?,
        report_hash: opt_parse(r.try_get("report_hash")?, "report hash")?,
    })
}

fn replica_row(r: &AnyRow) -> Result<ReplicaRow> {
    Ok(ReplicaRow {
        lease_id: r.try_get("lease_id")?,
        job_id: parse(&r.try_get::<String, _>("job_id")?, "job id")?,
        index: u32::try_from(r.try_get::<i64, _>("idx")?).unwrap_or(u32::MAX),
        worker: parse(&r.try_get::<String, _>("worker")?, "worker")?,
        state: r.try_get("state")?,
        expires_at: u(r.try_get("expires_at")?),
        result_hash: opt_parse(r.try_get("result_hash")?, "result hash")?,
        signature: opt_parse(r.try_get("signature")?, "signature")?,
    })
}

impl Store {
    /// Connects to `url` (`sqlite://PATH?mode=rwc`, `sqlite::memory:`, `postgres://...`) and runs
    /// the embedded migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            DbKind::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            DbKind::Postgres
        } else {
            return Err(Error::BadRequest(format!(
                "database url {url:?}: use sqlite://PATH?mode=rwc or postgres://USER@HOST/DB"
            )));
        };
        // SQLite has one writer anyway; one connection also makes `sqlite::memory:` one database.
        let max = if kind == DbKind::Sqlite { 1 } else { 16 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect(url)
            .await?;
        match kind {
            DbKind::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            DbKind::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Self { pool, kind })
    }

    /// Which database this is.
    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// Closes the pool (waits for connections to finish).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.kind {
            DbKind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            DbKind::Postgres => self.pool.begin().await?,
        })
    }

    // ------------------------------------------------------------------ blobs

    /// Stores a blob under its sha256 (idempotent).
    pub async fn put_blob(&self, hash: B256, bytes: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO blobs (hash, size, bytes) VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hx(&hash))
        .bind(i(bytes.len() as u64)?)
        .bind(bytes.to_vec())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A blob's bytes.
    pub async fn blob(&self, hash: B256) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT bytes FROM blobs WHERE hash = $1")
            .bind(hx(&hash))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<Vec<u8>, _>("bytes")).transpose()?)
    }

    /// Whether a blob is stored.
    pub async fn has_blob(&self, hash: B256) -> Result<bool> {
        let row = sqlx::query("SELECT 1 AS one FROM blobs WHERE hash = $1")
            .bind(hx(&hash))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// The hashes among `hashes` that are not stored (each once, in first-seen order).
    pub async fn missing_blobs(&self, hashes: &[B256]) -> Result<Vec<B256>> {
        let mut seen = std::collections::HashSet::new();
        let mut missing = Vec::new();
        for h in hashes {
            if seen.insert(*h) && !self.has_blob(*h).await? {
                missing.push(*h);
            }
        }
        Ok(missing)
    }

    // ------------------------------------------------------------------ jobs

    /// A registered job.
    pub async fn job(&self, job_id: U256) -> Result<Option<JobRow>> {
        let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE job_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(job_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_row).transpose()
    }

    /// Jobs in one state, earliest deadline first.
    pub async fn jobs_in_state(&self, state: &str) -> Result<Vec<JobRow>> {
        let sql = format!(
            "SELECT {JOB_COLS} FROM jobs WHERE state = $1 ORDER BY deadline, LENGTH(job_id), job_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(state.to_owned())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_row).collect()
    }

    /// Inserts a job and its tasks in one transaction. Returns `false` (and writes nothing) when
    /// the job id is already registered.
    pub async fn insert_job(&self, job: &JobRow, tasks: &[NewTask], now: u64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 AS one FROM jobs WHERE job_id = $1")
            .bind(job.job_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Ok(false);
        }
        // The API registers only validated manifests; anything without a kind counts as embed.
        let kind = serde_json::from_str::<serde_json::Value>(&job.manifest)
            .ok()
            .and_then(|m| m["kind"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "embed".to_owned());
        sqlx::query(
            "INSERT INTO jobs (job_id, manifest, spec_hash, requester, redundancy, task_count, \
             deadline, state, tasks_root, post_tx, report_hash, created_at, kind) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, $10, $11)",
        )
        .bind(job.job_id.to_string())
        .bind(job.manifest.clone())
        .bind(hx(&job.spec_hash))
        .bind(hx(&job.requester))
        .bind(i64::from(job.redundancy))
        .bind(i64::from(job.task_count))
        .bind(i(job.deadline)?)
        .bind(job.state.clone())
        .bind(hx(&job.tasks_root))
        .bind(i(now)?)
        .bind(kind)
        .execute(&mut *tx)
        .await?;
        for (idx, t) in tasks.iter().enumerate() {
            sqlx::query(
                "INSERT INTO tasks (job_id, idx, task_hash, input_hash, cost, replicas_needed, \
                 state, accepted_result, quorum) VALUES ($1, $2, $3, $4, $5, $6, 'open', NULL, NULL)",
            )
            .bind(job.job_id.to_string())
            .bind(idx as i64)
            .bind(hx(&t.task_hash))
            .bind(hx(&t.input_hash))
            .bind(t.cost.to_string())
            .bind(i64::from(job.redundancy))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Moves a job from one state to another; `false` when it was not in `from`.
    pub async fn set_job_state(&self, job_id: U256, from: &str, to: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE jobs SET state = $1 WHERE job_id = $2 AND state = $3")
            .bind(to.to_owned())
            .bind(job_id.to_string())
            .bind(from.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Records (or clears) our `postTasks` transaction.
    pub async fn set_post_tx(&self, job_id: U256, tx: Option<B256>) -> Result<()> {
        sqlx::query("UPDATE jobs SET post_tx = $1 WHERE job_id = $2")
            .bind(tx.map(|t| hx(&t)))
            .bind(job_id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// (replicas submitted, tasks accepted, tasks failed) of a job.
    pub async fn job_progress(&self, job_id: U256) -> Result<(u32, u32, u32)> {
        let id = job_id.to_string();
        let count = |sql: &'static str| {
            let id = id.clone();
            async move {
                let r = sqlx::query(sql).bind(id).fetch_one(&self.pool).await?;
                Ok::<u32, Error>(u32::try_from(r.try_get::<i64, _>("n")?).unwrap_or(u32::MAX))
            }
        };
        Ok((
            count("SELECT COUNT(*) AS n FROM replicas WHERE job_id = $1 AND state = 'submitted'")
                .await?,
            count("SELECT COUNT(*) AS n FROM tasks WHERE job_id = $1 AND state = 'accepted'")
                .await?,
            count("SELECT COUNT(*) AS n FROM tasks WHERE job_id = $1 AND state = 'failed'").await?,
        ))
    }

    /// Every task of a job, in order.
    pub async fn tasks(&self, job_id: U256) -> Result<Vec<TaskRow>> {
        let rows = sqlx::query(
            "SELECT idx, task_hash, replicas_needed, state, accepted_result, quorum FROM tasks \
             WHERE job_id = $1 ORDER BY idx",
        )
        .bind(job_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let quorum: Option<String> = r.try_get("quorum")?;
                let quorum = match quorum {
                    Some(q) => serde_json::from_str(&q)
                        .map_err(|e| Error::Internal(format!("stored quorum is corrupt: {e}")))?,
                    None => Vec::new(),
                };
                Ok(TaskRow {
                    index: u32::try_from(r.try_get::<i64, _>("idx")?).unwrap_or(u32::MAX),
                    task_hash: parse(&r.try_get::<String, _>("task_hash")?, "task hash")?,
                    replicas_needed: u32::try_from(r.try_get::<i64, _>("replicas_needed")?)
                        .unwrap_or(0),
                    state: r.try_get("state")?,
                    accepted_result: opt_parse(r.try_get("accepted_result")?, "result")?,
                    quorum,
                })
            })
            .collect()
    }

    /// Submitted replicas of a job, by task index then submission order.
    pub async fn submitted_replicas(&self, job_id: U256) -> Result<Vec<ReplicaRow>> {
        let rows = sqlx::query(
            "SELECT lease_id, job_id, idx, worker, state, expires_at, result_hash, signature \
             FROM replicas WHERE job_id = $1 AND state = 'submitted' \
             ORDER BY idx, submitted_at, lease_id",
        )
        .bind(job_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(replica_row).collect()
    }

    // ------------------------------------------------------------------ sessions

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
        let nonce = i(nonce)?;
        let mut tx = self.begin_write().await?;
        let last = sqlx::query("SELECT last_nonce FROM workers WHERE address = $1")
            .bind(hx(&address))
            .fetch_optional(&mut *tx)
            .await?;
        match last {
            Some(r) => {
                let last: i64 = r.try_get("last_nonce")?;
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
                .bind(i(now)?)
                .bind(hx(&address))
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO workers (address, capabilities, gflops, last_nonce, last_seen) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(hx(&address))
                .bind(capabilities_json.to_owned())
                .bind(gflops)
                .bind(nonce)
                .bind(i(now)?)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(i(now)?)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (token, address, role, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token.to_owned())
        .bind(hx(&address))
        .bind(role.to_owned())
        .bind(i(expires_at)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The (address, role) of an unexpired session.
    pub async fn session(&self, token: &str, now: u64) -> Result<Option<(Address, String)>> {
        let row =
            sqlx::query("SELECT address, role FROM sessions WHERE token = $1 AND expires_at > $2")
                .bind(token.to_owned())
                .bind(i(now)?)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok((
                parse(&r.try_get::<String, _>("address")?, "address")?,
                r.try_get::<String, _>("role")?,
            ))
        })
        .transpose()
    }

    /// A worker's last nonce.
    pub async fn last_nonce(&self, address: Address) -> Result<Option<u64>> {
        let row = sqlx::query("SELECT last_nonce FROM workers WHERE address = $1")
            .bind(hx(&address))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>("last_nonce").map(u))
            .transpose()?)
    }

    // ------------------------------------------------------------------ leasing

    /// Returns expired leases to the queue; the number returned.
    pub async fn expire_leases(&self, now: u64) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE replicas SET state = 'expired' WHERE state = 'leased' AND expires_at <= $1",
        )
        .bind(i(now)?)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Leases one replica to `worker`, atomically, or `None` when there is no work for it: no
    /// open replica of a task it does not already hold or did not already submit, or it holds
    /// its proportional share already (see [`scheduler::share`]).
    ///
    /// Workers seen within `active_secs` count as active for the share.
    pub async fn lease(
        &self,
        worker: Address,
        now: u64,
        lease_secs: u64,
        active_secs: u64,
    ) -> Result<Option<LeasedTask>> {
        // A conflicting concurrent lease (PostgreSQL) is retried a few times.
        for _ in 0..4 {
            match self.try_lease(worker, now, lease_secs, active_secs).await {
                Err(Error::Db(sqlx::Error::Database(e))) if e.is_unique_violation() => continue,
                Err(Error::Conflict(_)) => continue,
                other => return other,
            }
        }
        Ok(None)
    }

    async fn try_lease(
        &self,
        worker: Address,
        now: u64,
        lease_secs: u64,
        active_secs: u64,
    ) -> Result<Option<LeasedTask>> {
        let w = hx(&worker);
        let now_i = i(now)?;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE replicas SET state = 'expired' WHERE state = 'leased' AND expires_at <= $1",
        )
        .bind(now_i)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE workers SET last_seen = $1 WHERE address = $2")
            .bind(now_i)
            .bind(w.clone())
            .execute(&mut *tx)
            .await?;

        // The caller's share of the work now open or in flight.
        let scores = sqlx::query(
            "SELECT address, gflops FROM workers WHERE last_seen >= $1 ORDER BY address",
        )
        .bind(i(now.saturating_sub(active_secs))?)
        .fetch_all(&mut *tx)
        .await?;
        let mut me = None;
        let mut gflops = Vec::with_capacity(scores.len());
        for (k, r) in scores.iter().enumerate() {
            if r.try_get::<String, _>("address")? == w {
                me = Some(k);
            }
            gflops.push(r.try_get::<f64, _>("gflops")?);
        }
        let Some(me) = me else {
            return Ok(None);
        };
        let demand = sqlx::query(
            "SELECT t.replicas_needed AS needed, \
             (SELECT COUNT(*) FROM replicas r WHERE r.job_id = t.job_id AND r.idx = t.idx \
              AND r.state IN ('leased', 'submitted')) AS live \
             FROM tasks t JOIN jobs j ON j.job_id = t.job_id \
             WHERE j.state = 'posted' AND j.deadline > $1 AND t.state = 'open'",
        )
        .bind(now_i)
        .fetch_all(&mut *tx)
        .await?;
        let mut open = 0u64;
        for r in &demand {
            let needed: i64 = r.try_get("needed")?;
            let live: i64 = r.try_get("live")?;
            open += u(needed - live);
        }
        let leased_rows = sqlx::query("SELECT worker FROM replicas WHERE state = 'leased'")
            .fetch_all(&mut *tx)
            .await?;
        let mut held = 0u64;
        for r in &leased_rows {
            if r.try_get::<String, _>("worker")? == w {
                held += 1;
            }
        }
        let cap = scheduler::share(open + leased_rows.len() as u64, &gflops, me);
        if open == 0 || held >= cap {
            tx.commit().await?;
            return Ok(None);
        }

        // Only the kinds the worker signed in with (workers from before kinds existed: embed).
        let caps: Option<String> =
            sqlx::query("SELECT capabilities FROM workers WHERE address = $1")
                .bind(w.clone())
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("capabilities"))
                .transpose()?;
        let kinds: Vec<String> = caps
            .and_then(|c| serde_json::from_str::<gleaner_protocol::api::Capabilities>(&c).ok())
            .map_or_else(
                || vec!["embed".to_owned()],
                |c| c.kinds.iter().map(|k| k.as_str().to_owned()).collect(),
            );
        let Some(first_kind) = kinds.first().cloned() else {
            tx.commit().await?;
            return Ok(None);
        };
        let pick = match self.kind {
            DbKind::Sqlite => PICK_SQL,
            DbKind::Postgres => PICK_SQL_PG,
        };
        let Some(row) = sqlx::query(pick)
            .bind(w.clone())
            .bind(now_i)
            .bind(first_kind.clone())
            .bind(kinds.get(1).cloned().unwrap_or(first_kind))
            .fetch_optional(&mut *tx)
            .await?
        else {
            tx.commit().await?;
            return Ok(None);
        };
        let job_id: String = row.try_get("job_id")?;
        let idx: i64 = row.try_get("idx")?;
        // Under READ COMMITTED another coordinator may have committed a replica of this task
        // after our statement began: count again now that the task row is locked.
        let again = sqlx::query(
            "SELECT t.replicas_needed AS needed, \
             (SELECT COUNT(*) FROM replicas r WHERE r.job_id = t.job_id AND r.idx = t.idx \
              AND r.state IN ('leased', 'submitted')) AS live, \
             (SELECT COUNT(*) FROM replicas r WHERE r.job_id = t.job_id AND r.idx = t.idx \
              AND r.state IN ('leased', 'submitted') AND r.worker = $3) AS mine \
             FROM tasks t WHERE t.job_id = $1 AND t.idx = $2",
        )
        .bind(job_id.clone())
        .bind(idx)
        .bind(w.clone())
        .fetch_one(&mut *tx)
        .await?;
        if again.try_get::<i64, _>("live")? >= again.try_get::<i64, _>("needed")?
            || again.try_get::<i64, _>("mine")? > 0
        {
            tx.rollback().await?;
            return Err(Error::Conflict("lease race".into()));
        }
        let lease_id = random_hex();
        let expires_at = now.saturating_add(lease_secs);
        sqlx::query(
            "INSERT INTO replicas (lease_id, job_id, idx, worker, state, leased_at, expires_at, \
             result_hash, signature, submitted_at) \
             VALUES ($1, $2, $3, $4, 'leased', $5, $6, NULL, NULL, NULL)",
        )
        .bind(lease_id.clone())
        .bind(job_id.clone())
        .bind(idx)
        .bind(w)
        .bind(now_i)
        .bind(i(expires_at)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(LeasedTask {
            lease_id,
            job_id: parse(&job_id, "job id")?,
            index: u32::try_from(idx).unwrap_or(u32::MAX),
            task_hash: parse(&row.try_get::<String, _>("task_hash")?, "task hash")?,
            input_hash: parse(&row.try_get::<String, _>("input_hash")?, "input hash")?,
            expires_at,
        }))
    }

    /// A replica by lease id.
    pub async fn replica(&self, lease_id: &str) -> Result<Option<ReplicaRow>> {
        let row = sqlx::query(
            "SELECT lease_id, job_id, idx, worker, state, expires_at, result_hash, signature \
             FROM replicas WHERE lease_id = $1",
        )
        .bind(lease_id.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(replica_row).transpose()
    }

    /// The task hash of a task.
    pub async fn task_hash(&self, job_id: U256, index: u32) -> Result<Option<B256>> {
        let row = sqlx::query("SELECT task_hash FROM tasks WHERE job_id = $1 AND idx = $2")
            .bind(job_id.to_string())
            .bind(i64::from(index))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| parse(&r.try_get::<String, _>("task_hash")?, "task hash"))
            .transpose()
    }

    /// Gives a live lease back; `false` when it was no longer leased.
    pub async fn release(&self, lease_id: &str, now: u64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE replicas SET state = 'released' WHERE lease_id = $1 AND state = 'leased' \
             AND expires_at > $2",
        )
        .bind(lease_id.to_owned())
        .bind(i(now)?)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Records a result on a live lease; `false` when the lease was no longer live.
    pub async fn submit(
        &self,
        lease_id: &str,
        result_hash: B256,
        signature: &Bytes,
        now: u64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE replicas SET state = 'submitted', result_hash = $1, signature = $2, \
             submitted_at = $3 WHERE lease_id = $4 AND state = 'leased' AND expires_at > $3",
        )
        .bind(hx(&result_hash))
        .bind(signature.to_string())
        .bind(i(now)?)
        .bind(lease_id.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Replicas queued and leased, for the gauges.
    pub async fn queue_stats(&self, now: u64) -> Result<QueueStats> {
        let demand = sqlx::query(
            "SELECT t.replicas_needed AS needed, \
             (SELECT COUNT(*) FROM replicas r WHERE r.job_id = t.job_id AND r.idx = t.idx \
              AND r.state IN ('leased', 'submitted') AND (r.state = 'submitted' OR r.expires_at > $1)) AS live \
             FROM tasks t JOIN jobs j ON j.job_id = t.job_id \
             WHERE j.state = 'posted' AND j.deadline > $1 AND t.state = 'open'",
        )
        .bind(i(now)?)
        .fetch_all(&self.pool)
        .await?;
        let mut queued = 0;
        for r in &demand {
            queued += u(r.try_get::<i64, _>("needed")? - r.try_get::<i64, _>("live")?);
        }
        let leased = sqlx::query(
            "SELECT COUNT(*) AS n FROM replicas WHERE state = 'leased' AND expires_at > $1",
        )
        .bind(i(now)?)
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueStats {
            queued,
            leased: u(leased.try_get("n")?),
        })
    }

    // ------------------------------------------------------------------ verifier

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
        let r = sqlx::query(
            "UPDATE tasks SET state = 'accepted', accepted_result = $1, quorum = $2 \
             WHERE job_id = $3 AND idx = $4 AND state = 'open'",
        )
        .bind(hx(&result))
        .bind(quorum)
        .bind(job_id.to_string())
        .bind(i64::from(index))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Fails an open task for good.
    pub async fn fail_task(&self, job_id: U256, index: u32) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE tasks SET state = 'failed' WHERE job_id = $1 AND idx = $2 AND state = 'open'",
        )
        .bind(job_id.to_string())
        .bind(i64::from(index))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Asks for `extra` more replicas of an open task.
    pub async fn more_replicas(&self, job_id: U256, index: u32, extra: u16) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE tasks SET replicas_needed = replicas_needed + $1 \
             WHERE job_id = $2 AND idx = $3 AND state = 'open'",
        )
        .bind(i64::from(extra))
        .bind(job_id.to_string())
        .bind(i64::from(index))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Marks a job settled with its report hash (from `posted`, or from `settled` with the same
    /// hash: idempotent). `false` when neither applies.
    pub async fn settle(&self, job_id: U256, report_hash: B256) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET state = 'settled', report_hash = $1 WHERE job_id = $2 \
             AND (state = 'posted' OR (state = 'settled' AND (report_hash IS NULL OR report_hash = $1)))",
        )
        .bind(hx(&report_hash))
        .bind(job_id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    // ------------------------------------------------------------------ chain

    /// Processed blocks at or above `from`, newest first.
    pub async fn chain_blocks(&self, limit: i64) -> Result<Vec<(u64, B256)>> {
        let rows =
            sqlx::query("SELECT number, hash FROM chain_blocks ORDER BY number DESC LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    u(r.try_get("number")?),
                    parse(&r.try_get::<String, _>("hash")?, "block hash")?,
                ))
            })
            .collect()
    }

    /// Records a processed range: its events, then the hashes of the blocks seen (the range end
    /// and every block with an event), in one transaction. Returns the job ids of new events.
    pub async fn record_chain(
        &self,
        blocks: &[(u64, B256)],
        events: &[ChainEvent],
    ) -> Result<Vec<(U256, String)>> {
        let mut tx = self.begin_write().await?;
        let mut fresh = Vec::new();
        for e in events {
            let r = sqlx::query(
                "INSERT INTO chain_events (block_hash, tx_hash, log_index, block_number, event, \
                 job_id, data) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (block_hash, tx_hash, log_index) DO NOTHING",
            )
            .bind(hx(&e.block_hash))
            .bind(hx(&e.tx_hash))
            .bind(i(e.log_index)?)
            .bind(i(e.block_number)?)
            .bind(e.event.clone())
            .bind(e.job_id.to_string())
            .bind(e.data.clone())
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 1 {
                fresh.push((e.job_id, e.event.clone()));
            }
        }
        for (n, h) in blocks {
            sqlx::query(
                "INSERT INTO chain_blocks (number, hash) VALUES ($1, $2) \
                 ON CONFLICT (number) DO UPDATE SET hash = excluded.hash",
            )
            .bind(i(*n)?)
            .bind(hx(h))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(fresh)
    }

    /// Forgets every block and event at or above `number` (a reorg). Jobs whose state came from
    /// a forgotten event go back to `registered`, so the watcher derives their state afresh from
    /// the chain. Returns those job ids.
    pub async fn rollback_chain(&self, number: u64) -> Result<Vec<U256>> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query("SELECT DISTINCT job_id FROM chain_events WHERE block_number >= $1")
            .bind(i(number)?)
            .fetch_all(&mut *tx)
            .await?;
        let mut jobs = Vec::new();
        for r in &rows {
            let id: String = r.try_get("job_id")?;
            sqlx::query(
                "UPDATE jobs SET state = 'registered' WHERE job_id = $1 \
                 AND state IN ('posted', 'cancelled', 'expired', 'root_mismatch')",
            )
            .bind(id.clone())
            .execute(&mut *tx)
            .await?;
            jobs.push(parse(&id, "job id")?);
        }
        sqlx::query("DELETE FROM chain_events WHERE block_number >= $1")
            .bind(i(number)?)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM chain_blocks WHERE number >= $1")
            .bind(i(number)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(jobs)
    }

    /// Number of stored chain events (for tests and metrics).
    pub async fn chain_event_count(&self) -> Result<u64> {
        let r = sqlx::query("SELECT COUNT(*) AS n FROM chain_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(u(r.try_get("n")?))
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
    /// Event name (`TasksPosted`, ...).
    pub event: String,
    /// Job the event is about.
    pub job_id: U256,
    /// Event-specific data (JSON).
    pub data: String,
}

const PICK_SQL: &str = "SELECT t.job_id AS job_id, t.idx AS idx, t.task_hash AS task_hash, \
     t.input_hash AS input_hash FROM tasks t JOIN jobs j ON j.job_id = t.job_id \
     WHERE j.state = 'posted' AND j.deadline > $2 AND t.state = 'open' \
     AND j.kind IN ($3, $4) \
     AND (SELECT COUNT(*) FROM replicas r WHERE r.job_id = t.job_id AND r.idx = t.idx \
          AND r.state IN ('leased', 'submitted')) < t.replicas_needed \
     AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.job_id = t.job_id AND r.idx = t.idx \
          AND r.worker = $1 AND r.state IN ('leased', 'submitted')) \
     ORDER BY j.deadline, LENGTH(j.job_id), j.job_id, t.idx LIMIT 1";

const PICK_SQL_PG: &str = "SELECT t.job_id AS job_id, t.idx AS idx, t.task_hash AS task_hash, \
     t.input_hash AS input_hash FROM tasks t JOIN jobs j ON j.job_id = t.job_id \
     WHERE j.state = 'posted' AND j.deadline > $2 AND t.state = 'open' \
     AND j.kind IN ($3, $4) \
     AND (SELECT COUNT(*) FROM replicas r WHERE r.job_id = t.job_id AND r.idx = t.idx \
          AND r.state IN ('leased', 'submitted')) < t.replicas_needed \
     AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.job_id = t.job_id AND r.idx = t.idx \
          AND r.worker = $1 AND r.state IN ('leased', 'submitted')) \
     ORDER BY j.deadline, LENGTH(j.job_id), j.job_id, t.idx LIMIT 1 FOR UPDATE OF t SKIP LOCKED";
