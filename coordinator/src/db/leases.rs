//! The `replicas` table: leasing a replica to a worker, results, release and expiry.
//!
//! Leasing counts in the database: the replicas still wanted (open tasks of posted jobs) and
//! the leases held are `COUNT`/`SUM` queries, never rows loaded into Rust. Task kinds are plain
//! strings here: a worker is leased only jobs whose `kind` is among the kinds its signed
//! capabilities list, whatever those kinds are and however many.

use std::sync::atomic::Ordering;

use alloy::primitives::{Address, B256, Bytes, U256};
use gleaner_protocol::api::JobState;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::codec::{
    ReplicaState, TaskState, column, int_column, lease_id, live_list, optional_column, to_bigint,
    to_hex,
};
use super::jobs::LEGACY_KIND;
use super::{DbKind, Store, WriteOp};
use crate::error::{Error, Result};
use crate::scheduler;

/// A statement with its arguments.
type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

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
    /// Lease state.
    pub state: ReplicaState,
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

/// Lease counts for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Replicas wanted but not leased, in leasable jobs.
    pub queued: u64,
    /// Replicas leased now.
    pub leased: u64,
}

const REPLICA_COLUMNS: &str =
    "lease_id, job_id, idx, worker, state, expires_at, result_hash, signature";

pub(super) fn read_replica(row: &AnyRow) -> Result<ReplicaRow> {
    Ok(ReplicaRow {
        lease_id: row.try_get("lease_id")?,
        job_id: column(row, "job_id")?,
        index: int_column(row, "idx")?,
        worker: column(row, "worker")?,
        state: column(row, "state")?,
        expires_at: int_column(row, "expires_at")?,
        result_hash: optional_column(row, "result_hash")?,
        signature: optional_column(row, "signature")?,
    })
}

/// Flips the leases past their expiry at `$1` = now to expired. The states are literals, so
/// that the planner can use the partial index on leased replicas (migration 0011).
fn sweep_sql() -> String {
    format!(
        "UPDATE replicas SET state = '{}' WHERE state = '{}' AND expires_at <= $1",
        ReplicaState::Expired.as_str(),
        ReplicaState::Leased.as_str()
    )
}

/// The live leases at `$1` = now: a walk over every live lease's index entry (1 ms and more a
/// lease with 16,384 out), so the lease path runs it only when it can change the answer.
fn leased_sql() -> String {
    format!(
        "(SELECT COUNT(*) FROM replicas WHERE state = '{}' AND expires_at > $1)",
        ReplicaState::Leased.as_str()
    )
}

/// `queued` (replicas still wanted in leasable jobs: `job_wanted`, kept by triggers), with
/// `leased` also [`leased_sql`] (at `$1`), and `mine` (worker `$2`'s live leases, through
/// `replicas_worker`: the unary `+` keeps SQLite from walking every live lease through the
/// index on leased replicas' expiry instead, 2.3 ms a lease with 16,384 out), at `now` (a
/// parameter's name), in one query.
fn counts_sql(leased: bool, now: &str) -> String {
    format!(
        "SELECT \
         (SELECT CAST(COALESCE(SUM(w.wanted), 0) AS BIGINT) FROM jobs j \
          JOIN job_wanted w ON w.job_id = j.job_id \
          WHERE j.state = '{posted}' AND j.deadline > {now}) AS queued, \
         {all} \
         (SELECT COUNT(*) FROM replicas WHERE state = '{live}' AND +expires_at > {now} \
          AND worker = $2) AS mine",
        posted = JobState::Posted.as_str(),
        live = ReplicaState::Leased.as_str(),
        all = if leased {
            format!("{} AS leased,", leased_sql())
        } else {
            String::new()
        },
    )
}

/// The active workers (seen since `$1`): how many, the sum of their scores and worker `$2`'s
/// score (`NULL` when it is not among them), each score that is not a positive finite number
/// counting as zero (as [`scheduler::share`] counts it), summed in the database instead of
/// sending every worker's row: 2.1 ms a lease with 256 workers, in the bench's statement log.
/// (`NaN` is greater than every number in PostgreSQL and `NULL` in SQLite: both fail the test.)
fn scores_sql() -> &'static str {
    "SELECT COUNT(*) AS active, \
     CAST(COALESCE(SUM(w.score), 0.0) AS DOUBLE PRECISION) AS total, \
     CAST(MAX(CASE WHEN w.address = $2 THEN w.score END) AS DOUBLE PRECISION) AS mine \
     FROM (SELECT address, \
           CASE WHEN gflops > 0 AND gflops < 1e308 THEN gflops ELSE 0.0 END AS score \
           FROM workers WHERE last_seen >= $1) w"
}

/// [`scores_sql`] (`$1` the oldest `last_seen` that counts as active, `$2` the worker) and
/// [`counts_sql`] without `leased` (`$3` now) in one statement: `active`, `total`, `mine`,
/// `queued` and `held` (the worker's live leases).
fn share_sql() -> String {
    format!(
        "SELECT s.active AS active, s.total AS total, s.mine AS mine, \
         c.queued AS queued, c.mine AS held FROM ({}) s CROSS JOIN ({}) c",
        scores_sql(),
        counts_sql(false, "$3")
    )
}

/// `$first, .., $(first + n - 1)`: the kind filter's parameters.
fn numbered_params(first: usize, n: usize) -> String {
    let params: Vec<String> = (first..first + n).map(|k| format!("${k}")).collect();
    params.join(", ")
}

/// SQLite: the leasable jobs (posted, before the deadline `$1`) of kinds `$2..$(1+kinds)`,
/// earliest deadline first: the order [`pick_sql`] takes jobs in.
fn leasable_jobs_sql(kinds: usize) -> String {
    format!(
        "SELECT job_id FROM jobs WHERE state = '{posted}' AND deadline > $1 \
         AND kind IN ({kinds}) ORDER BY deadline, LENGTH(job_id), job_id",
        posted = JobState::Posted.as_str(),
        kinds = numbered_params(2, kinds),
    )
}

/// SQLite: the first `limit` tasks of job `$1` that still want a replica and worker `$2` holds
/// no live replica of, in index order, read through the `tasks_wanting` index (so that the
/// tasks already leased in full are never visited).
fn job_pick_sql(limit: u64) -> String {
    format!(
        "SELECT t.job_id AS job_id, t.idx AS idx, t.task_hash AS task_hash, \
         t.input_hash AS input_hash FROM tasks t INDEXED BY tasks_wanting \
         WHERE t.job_id = $1 AND t.state = '{open}' AND t.live < t.replicas_needed \
         AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.job_id = t.job_id AND r.idx = t.idx \
              AND r.worker = $2 AND r.state IN {live_states}) \
         ORDER BY t.idx LIMIT {limit}",
        open = TaskState::Open.as_str(),
        live_states = live_list(),
    )
}

/// PostgreSQL: the next `limit` replicas for worker `$2` at `$1` = now among jobs of kinds
/// `$3..$(2+kinds)`: the earliest deadline first, tasks it holds no live replica of, each with a
/// slot free (one replica per task: a worker never holds two of the same task). Jobs in order,
/// then each job's open tasks through the `tasks_open` index: the join sorted as one made
/// PostgreSQL read and sort every open task under `SKIP LOCKED` for each lease (51 round
/// trips/s on a 2,000-task job, 181 on 600). A lateral pick locks at most `limit` tasks per
/// leasable job. (SQLite: [`leasable_jobs_sql`], then [`job_pick_sql`] per job.)
fn pick_sql(kinds: usize, limit: u64) -> String {
    format!(
        "SELECT x.job_id AS job_id, x.idx AS idx, x.task_hash AS task_hash, \
         x.input_hash AS input_hash \
         FROM (SELECT j.job_id, j.deadline FROM jobs j WHERE j.state = '{posted}' \
               AND j.deadline > $1 AND j.kind IN ({kinds})) j \
         CROSS JOIN LATERAL (SELECT t.job_id, t.idx, t.task_hash, t.input_hash \
               FROM tasks t WHERE t.job_id = j.job_id AND t.state = '{open}' \
               AND t.live < t.replicas_needed \
               AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.job_id = t.job_id \
                    AND r.idx = t.idx AND r.worker = $2 AND r.state IN {live_states}) \
               ORDER BY t.idx LIMIT {limit} FOR UPDATE OF t SKIP LOCKED) x \
         ORDER BY j.deadline, LENGTH(j.job_id), j.job_id, x.idx LIMIT {limit}",
        posted = JobState::Posted.as_str(),
        open = TaskState::Open.as_str(),
        kinds = numbered_params(3, kinds),
        live_states = live_list(),
    )
}

/// The kinds a worker's stored capabilities list, as plain strings. Capabilities without a
/// `kinds` list (sign-ins from before kinds existed) mean [`LEGACY_KIND`].
fn declared_kinds(capabilities_json: Option<&str>) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Declared {
        kinds: Vec<String>,
    }
    capabilities_json
        .and_then(|json| serde_json::from_str::<Declared>(json).ok())
        .map_or_else(|| vec![LEGACY_KIND.to_owned()], |d| d.kinds)
}

/// Rows per multi-row statement: at most 7 parameters a row, well under either database's limit
/// on parameters (SQLite 32,766, PostgreSQL 65,535).
const CHUNK: usize = 256;

/// `($k+1, .., $k+width), ($k+width+1, ..), ...` for `rows` rows after `skip` parameters.
fn placeholders(rows: usize, width: usize, skip: usize) -> String {
    let mut out = String::with_capacity(rows * width * 6);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..width {
            if c > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("${}", skip + r * width + c + 1));
        }
        out.push(')');
    }
    out
}

/// The rows of a multi-row statement that binds them before any other parameter:
/// [`placeholders`] on PostgreSQL, and on SQLite `(?, .., ?), ...`, parameters it numbers by
/// position.
///
/// To bind `$N`, sqlx asks SQLite the name of each parameter, and SQLite finds it by walking
/// the statement's list of names from its start: binding `n` numbered parameters takes about
/// `n²/2` steps, and with 448 a statement (64 leases of 7 columns) that was 4% of the
/// coordinator's time in `gleaner bench coordinator`. Unnamed parameters have no name to find.
fn row_placeholders(kind: DbKind, rows: usize, width: usize) -> String {
    match kind {
        DbKind::Postgres => placeholders(rows, width, 0),
        DbKind::Sqlite => {
            let row = format!("({})", vec!["?"; width].join(", "));
            vec![row.as_str(); rows].join(", ")
        }
    }
}

/// The statement that records `rows` results (`$1` the submitted state, `$2` now, `$3` the
/// leased state; with `owned`, `$4` the worker; then per result its lease id, result hash and
/// signature, and with `owned` its task hash): only on live leases, and with `owned` only on
/// the worker's leases of the tasks named.
///
/// On SQLite the rows come first ([`row_placeholders`]) and the four others are numbered after
/// them ([`record_params`]).
fn record_sql(kind: DbKind, rows: usize, owned: bool) -> String {
    let (width, skip) = if owned { (4, 4) } else { (3, 3) };
    let values = match kind {
        DbKind::Postgres => placeholders(rows, width, skip),
        DbKind::Sqlite => row_placeholders(kind, rows, width),
    };
    let columns = if owned {
        "lease_id, result_hash, signature, task_hash"
    } else {
        "lease_id, result_hash, signature"
    };
    // The task hash is the one column of the task's row (found by primary key) the check reads.
    let task_hash = "(SELECT t.task_hash FROM tasks t \
                     WHERE t.job_id = replicas.job_id AND t.idx = replicas.idx)";
    let [submitted, now, leased, worker] = record_params(kind, rows, owned);
    match kind {
        // Rows found by primary key (`IN`), values looked up in the small list.
        DbKind::Postgres => {
            let owner = if owned {
                format!(
                    " AND worker = {worker} AND {task_hash} = \
                     (SELECT v.task_hash FROM v WHERE v.lease_id = replicas.lease_id)"
                )
            } else {
                String::new()
            };
            format!(
                "WITH v ({columns}) AS (VALUES {values}) \
                 UPDATE replicas SET state = {submitted}, \
                 result_hash = (SELECT v.result_hash FROM v WHERE v.lease_id = replicas.lease_id), \
                 signature = (SELECT v.signature FROM v WHERE v.lease_id = replicas.lease_id), \
                 submitted_at = {now} \
                 WHERE lease_id IN (SELECT v.lease_id FROM v) AND state = {leased} \
                 AND expires_at > {now}\
                 {owner}"
            )
        }
        // The list joined to replicas by primary key. The unary `+` keeps SQLite off the index
        // on leased replicas' expiry (and `replicas_worker`): with it, SQLite walked every live
        // lease for each batch and scanned the list twice for each row (O(leases + k²): 1.9 ms
        // for 64 results with 1,024 leases out, in the bench's statement log).
        DbKind::Sqlite => {
            let owner = if owned {
                format!(" AND +replicas.worker = {worker} AND {task_hash} = v.task_hash")
            } else {
                String::new()
            };
            format!(
                "WITH v ({columns}) AS (VALUES {values}) \
                 UPDATE replicas SET state = {submitted}, result_hash = v.result_hash, \
                 signature = v.signature, submitted_at = {now} \
                 FROM v WHERE replicas.lease_id = v.lease_id \
                 AND +replicas.state = {leased} AND +replicas.expires_at > {now}{owner}"
            )
        }
    }
}

/// The names of [`record_sql`]'s parameters other than the rows (the submitted state, now, the
/// leased state, the worker): `$1..$4` before the rows on PostgreSQL, after them on SQLite.
fn record_params(kind: DbKind, rows: usize, owned: bool) -> [String; 4] {
    let first = match kind {
        DbKind::Postgres => 1,
        DbKind::Sqlite => rows * if owned { 4 } else { 3 } + 1,
    };
    std::array::from_fn(|i| format!("${}", first + i))
}

impl Store {
    /// Returns expired leases to the queue; the number returned.
    pub async fn expire_leases(&self, now: u64) -> Result<u64> {
        let done = self
            .execute_write(sqlx::query(sqlx::AssertSqlSafe(sweep_sql())).bind(to_bigint(now)?))
            .await?;
        Ok(done.rows_affected())
    }

    /// Leases one replica to `worker`, atomically, or `None` when there is no work for it: no
    /// open replica of a task it does not already hold or did not already submit, of a kind it
    /// runs, or it holds its proportional share already (see [`scheduler::share`]).
    ///
    /// Workers seen within `active_secs` count as active for the share.
    pub async fn lease(
        &self,
        worker: Address,
        now: u64,
        lease_secs: u64,
        active_secs: u64,
    ) -> Result<Option<LeasedTask>> {
        Ok(self
            .lease_many(worker, now, lease_secs, active_secs, 1)
            .await?
            .into_iter()
            .next())
    }

    /// Leases up to `max` replicas of distinct tasks to `worker` in one transaction (fewer
    /// when less work is open or its share is smaller; none when there is no work for it, as
    /// for [`Self::lease`]).
    pub async fn lease_many(
        &self,
        worker: Address,
        now: u64,
        lease_secs: u64,
        active_secs: u64,
        max: u64,
    ) -> Result<Vec<LeasedTask>> {
        // A conflicting concurrent lease (PostgreSQL) is retried a few times.
        for _ in 0..4 {
            let this = self.clone();
            let op: WriteOp<_> = Box::new(move |conn| {
                Box::pin(async move {
                    let leased = this
                        .try_lease(conn, worker, now, lease_secs, active_secs, max)
                        .await?;
                    Ok((leased, true))
                })
            });
            match self.write(op).await {
                Err(Error::Db(sqlx::Error::Database(e))) if e.is_unique_violation() => continue,
                Err(Error::Conflict(_)) => continue,
                other => return other,
            }
        }
        Ok(Vec::new())
    }

    /// [`Self::lease_many`]'s statements, in the transaction `tx` is in.
    async fn try_lease(
        &self,
        tx: &mut sqlx::AnyConnection,
        worker: Address,
        now: u64,
        lease_secs: u64,
        active_secs: u64,
        max: u64,
    ) -> Result<Vec<LeasedTask>> {
        let worker_hex = to_hex(&worker);
        let now_param = to_bigint(now)?;
        // Leases expire by the second: one sweep a second is enough (a sweep rolled back with
        // its group comes a second later).
        if self.swept.fetch_max(now, Ordering::Relaxed) < now {
            sqlx::query(sqlx::AssertSqlSafe(sweep_sql()))
                .bind(now_param)
                .execute(&mut *tx)
                .await?;
        }
        let capabilities: Option<String> = sqlx::query(
            "UPDATE workers SET last_seen = $1 WHERE address = $2 RETURNING capabilities",
        )
        .bind(now_param)
        .bind(worker_hex.clone())
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get("capabilities"))
        .transpose()?;

        // The caller's share of the work now open or in flight.
        let share = sqlx::query(sqlx::AssertSqlSafe(share_sql()))
            .bind(to_bigint(now.saturating_sub(active_secs))?)
            .bind(worker_hex.clone())
            .bind(now_param)
            .fetch_one(&mut *tx)
            .await?;
        let Some(mine) = share.try_get::<Option<f64>, _>("mine")? else {
            return Ok(Vec::new());
        };
        let active: u64 = int_column(&share, "active")?;
        let total: f64 = share.try_get("total")?;
        let cap = |replicas| scheduler::share_of(replicas, mine, total, active);
        let queued: u64 = int_column(&share, "queued")?;
        let held: u64 = int_column(&share, "held")?;
        // The share grows with the replicas open or in flight (`queued + leased`): when the
        // queued ones alone allow all that can be leased, the live leases need no counting.
        let mut wanted = max.min(queued);
        if cap(queued).saturating_sub(held) < wanted {
            let all = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {} AS leased",
                leased_sql()
            )))
            .bind(now_param)
            .fetch_one(&mut *tx)
            .await?;
            let leased: u64 = int_column(&all, "leased")?;
            wanted = wanted.min(cap(queued.saturating_add(leased)).saturating_sub(held));
        }
        if wanted == 0 {
            return Ok(Vec::new());
        }

        let kinds = declared_kinds(capabilities.as_deref());
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let rows = match self.kind {
            DbKind::Postgres => {
                let mut pick = sqlx::query(sqlx::AssertSqlSafe(pick_sql(kinds.len(), wanted)))
                    .bind(now_param)
                    .bind(worker_hex.clone());
                for kind in &kinds {
                    pick = pick.bind(kind);
                }
                pick.fetch_all(&mut *tx).await?
            }
            // The leasable jobs in order, then each job's first wanting tasks through the
            // `tasks_wanting` index until `wanted` are found: SQLite sorted the join of every
            // open task instead (its plan sorts "the right part of the ORDER BY"): 33 ms per
            // lease on a 20,000-task job against 0.3 ms per job this way in `sqlite3`; in the
            // bench's statement log at 8,000 tasks, 13.6 ms became 9.4 ms. A worker holding
            // every wanting task of many jobs costs one query per job.
            DbKind::Sqlite => {
                let mut jobs = sqlx::query(sqlx::AssertSqlSafe(leasable_jobs_sql(kinds.len())))
                    .bind(now_param);
                for kind in &kinds {
                    jobs = jobs.bind(kind);
                }
                let jobs = jobs.fetch_all(&mut *tx).await?;
                let mut rows = Vec::new();
                for job in &jobs {
                    let left = wanted - rows.len() as u64;
                    if left == 0 {
                        break;
                    }
                    let job_id: String = job.try_get("job_id")?;
                    rows.extend(
                        sqlx::query(sqlx::AssertSqlSafe(job_pick_sql(left)))
                            .bind(job_id)
                            .bind(worker_hex.clone())
                            .fetch_all(&mut *tx)
                            .await?,
                    );
                }
                rows
            }
        };
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let expires_at = now.saturating_add(lease_secs);
        // Under READ COMMITTED another coordinator may have committed a replica of a picked task
        // after our statement began: count again, in one query, now that the task rows are
        // locked. (SQLite's write transactions run one at a time: nothing can come between.)
        let still_free: Option<std::collections::HashSet<(String, i64)>> =
            if self.kind == DbKind::Postgres {
                let pairs = placeholders(rows.len(), 2, 1);
                let mut again = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT t.job_id AS job_id, t.idx AS idx, t.replicas_needed AS needed, \
                     (SELECT COUNT(*) FROM replicas r WHERE r.job_id = t.job_id AND r.idx = t.idx \
                      AND r.state IN {live}) AS live, \
                     (SELECT COUNT(*) FROM replicas r WHERE r.job_id = t.job_id AND r.idx = t.idx \
                      AND r.state IN {live} AND r.worker = $1) AS mine \
                     FROM tasks t WHERE (t.job_id, t.idx) IN ({pairs})",
                    live = live_list()
                )))
                .bind(worker_hex.clone());
                for row in &rows {
                    again = again
                        .bind(row.try_get::<String, _>("job_id")?)
                        .bind(row.try_get::<i64, _>("idx")?);
                }
                let mut free = std::collections::HashSet::new();
                for row in again.fetch_all(&mut *tx).await? {
                    if row.try_get::<i64, _>("live")? < row.try_get::<i64, _>("needed")?
                        && row.try_get::<i64, _>("mine")? == 0
                    {
                        free.insert((row.try_get("job_id")?, row.try_get("idx")?));
                    }
                }
                Some(free)
            } else {
                None
            };
        let mut leased = Vec::with_capacity(rows.len());
        for row in &rows {
            let job_id: String = row.try_get("job_id")?;
            let index: i64 = row.try_get("idx")?;
            if let Some(free) = &still_free
                && !free.contains(&(job_id.clone(), index))
            {
                continue;
            }
            leased.push((
                job_id,
                index,
                LeasedTask {
                    lease_id: lease_id(),
                    job_id: U256::ZERO,
                    index: int_column(row, "idx")?,
                    task_hash: column(row, "task_hash")?,
                    input_hash: column(row, "input_hash")?,
                    expires_at,
                },
            ));
        }
        if leased.is_empty() {
            return Err(Error::Conflict("lease race".into()));
        }
        // One statement per chunk of rows.
        for chunk in leased.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO replicas (lease_id, job_id, idx, worker, state, leased_at, \
                 expires_at) VALUES {}",
                row_placeholders(self.kind, chunk.len(), 7)
            );
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (job_id, index, t) in chunk {
                insert = insert
                    .bind(t.lease_id.clone())
                    .bind(job_id.clone())
                    .bind(*index)
                    .bind(worker_hex.clone())
                    .bind(ReplicaState::Leased.as_str())
                    .bind(now_param)
                    .bind(to_bigint(expires_at)?);
            }
            insert.execute(&mut *tx).await?;
        }
        leased
            .into_iter()
            .map(|(job_id, _, t)| {
                Ok(LeasedTask {
                    job_id: super::codec::parse_stored(&job_id, "job id")?,
                    ..t
                })
            })
            .collect()
    }

    /// A replica by lease id.
    pub async fn replica(&self, lease_id: &str) -> Result<Option<ReplicaRow>> {
        let sql = format!("SELECT {REPLICA_COLUMNS} FROM replicas WHERE lease_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(lease_id.to_owned())
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(read_replica).transpose()
    }

    /// Submitted replicas of a job, by task index then submission order.
    pub async fn submitted_replicas(&self, job_id: U256) -> Result<Vec<ReplicaRow>> {
        let sql = format!(
            "SELECT {REPLICA_COLUMNS} FROM replicas WHERE job_id = $1 AND state = $2 \
             ORDER BY idx, submitted_at, lease_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(job_id.to_string())
            .bind(ReplicaState::Submitted.as_str())
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(read_replica).collect()
    }

    /// Gives a live lease back; `false` when it was no longer leased.
    pub async fn release(&self, lease_id: &str, now: u64) -> Result<bool> {
        let done = self.execute_write(sqlx::query(
            "UPDATE replicas SET state = $3 WHERE lease_id = $1 AND state = $4 AND expires_at > $2",
        )
        .bind(lease_id.to_owned())
        .bind(to_bigint(now)?)
        .bind(ReplicaState::Released.as_str())
        .bind(ReplicaState::Leased.as_str()))
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a result on a live lease; `false` when the lease was no longer live.
    pub async fn submit(
        &self,
        lease_id: &str,
        result_hash: B256,
        signature: &Bytes,
        now: u64,
    ) -> Result<bool> {
        let done = self
            .execute_write(
                sqlx::query(
                    "UPDATE replicas SET state = $5, result_hash = $1, signature = $2, \
             submitted_at = $3 WHERE lease_id = $4 AND state = $6 AND expires_at > $3",
                )
                .bind(to_hex(&result_hash))
                .bind(signature.to_string())
                .bind(to_bigint(now)?)
                .bind(lease_id.to_owned())
                .bind(ReplicaState::Submitted.as_str())
                .bind(ReplicaState::Leased.as_str()),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The replicas `lease_ids` name, each with its task's hash, in one query (unknown ids are
    /// left out).
    pub async fn replicas_with_tasks(
        &self,
        lease_ids: &[String],
    ) -> Result<Vec<(ReplicaRow, B256)>> {
        let mut out = Vec::with_capacity(lease_ids.len());
        for chunk in lease_ids.chunks(512) {
            let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let columns: Vec<String> = REPLICA_COLUMNS
                .split(", ")
                .map(|c| format!("r.{c} AS {c}"))
                .collect();
            let sql = format!(
                "SELECT {}, t.task_hash AS task_hash FROM replicas r \
                 JOIN tasks t ON t.job_id = r.job_id AND t.idx = r.idx \
                 WHERE r.lease_id IN ({})",
                columns.join(", "),
                params.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id.clone());
            }
            for row in q.fetch_all(&self.read).await? {
                out.push((read_replica(&row)?, column(&row, "task_hash")?));
            }
        }
        Ok(out)
    }

    /// Records results on live leases and stores their outputs, all in one transaction:
    /// either every `(lease_id, result_hash, signature)` is recorded (and every blob stored) or
    /// nothing is, and the lease id that was no longer live is returned.
    pub async fn submit_many(
        &self,
        results: Vec<(String, B256, Bytes)>,
        blobs: Vec<(B256, Vec<u8>)>,
        now: u64,
    ) -> Result<std::result::Result<(), String>> {
        let this = self.clone();
        let op: WriteOp<_> = Box::new(move |conn| {
            Box::pin(async move {
                let recorded = this.record(conn, &results, None, &blobs, now).await?;
                Ok(((recorded, results), recorded.is_ok()))
            })
        });
        let (Err(first), results) = self.write(op).await? else {
            return Ok(Ok(()));
        };
        // Which one: the first of the refused statement's that is not live (a read, after the
        // rollback).
        let chunk = &results[first..(first + CHUNK).min(results.len())];
        for (lease_id, _, _) in chunk {
            match self.replica(lease_id).await? {
                Some(r) if r.state == ReplicaState::Leased && r.expires_at > now => {}
                _ => return Ok(Err(lease_id.clone())),
            }
        }
        Ok(Err(chunk[0].0.clone()))
    }

    /// [`Self::submit_many`] for results that must also be `worker`'s and for the tasks named
    /// (`tasks[i]`, the task hash of `results[i]`'s lease), checked by the writing statement
    /// itself, so that a batch needs no read before it: `Ok` when every result was recorded;
    /// when one was not live, not `worker`'s or not for its task, nothing changed and the
    /// blobs come back (`Err`), for the caller's other way.
    pub async fn submit_many_owned(
        &self,
        worker: Address,
        results: Vec<(String, B256, Bytes)>,
        tasks: Vec<B256>,
        blobs: Vec<(B256, Vec<u8>)>,
        now: u64,
    ) -> Result<std::result::Result<(), Vec<(B256, Vec<u8>)>>> {
        if tasks.len() != results.len() {
            return Err(Error::Internal(format!(
                "{} results with {} task hashes",
                results.len(),
                tasks.len()
            )));
        }
        let this = self.clone();
        let op: WriteOp<_> = Box::new(move |conn| {
            Box::pin(async move {
                let owner = Some((worker, tasks.as_slice()));
                Ok(
                    match this.record(conn, &results, owner, &blobs, now).await? {
                        Ok(()) => (Ok(()), true),
                        Err(_) => (Err(blobs), false),
                    },
                )
            })
        });
        self.write(op).await
    }

    /// The statements of [`Self::submit_many`] and [`Self::submit_many_owned`], in the
    /// transaction `tx` is in: the blobs, then the results a statement per [`CHUNK`], each
    /// required to be on a live lease (and, with `owner`, that worker's, for the task hash
    /// given). On the first statement that leaves a result out, stops and gives the index of
    /// its first result: the caller rolls back.
    async fn record(
        &self,
        tx: &mut sqlx::AnyConnection,
        results: &[(String, B256, Bytes)],
        owner: Option<(Address, &[B256])>,
        blobs: &[(B256, Vec<u8>)],
        now: u64,
    ) -> Result<std::result::Result<(), usize>> {
        let now_param = to_bigint(now)?;
        // A few statements per batch, not one per result: each statement costs a round trip
        // to the database (sqlx runs SQLite on a thread of its own).
        for chunk in blobs.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO blobs (hash, size, bytes) VALUES {} ON CONFLICT (hash) DO NOTHING",
                row_placeholders(self.kind, chunk.len(), 3)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (hash, bytes) in chunk {
                q = q
                    .bind(to_hex(hash))
                    .bind(to_bigint(bytes.len() as u64)?)
                    .bind(bytes.clone());
            }
            q.execute(&mut *tx).await?;
        }
        for (c, chunk) in results.chunks(CHUNK).enumerate() {
            let sql = record_sql(self.kind, chunk.len(), owner.is_some());
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            // The statement's other parameters: before the rows on PostgreSQL, after them on
            // SQLite ([`record_params`]).
            let others = |mut q: AnyQuery<'static>| {
                q = q
                    .bind(ReplicaState::Submitted.as_str())
                    .bind(now_param)
                    .bind(ReplicaState::Leased.as_str());
                if let Some((worker, _)) = owner {
                    q = q.bind(to_hex(&worker));
                }
                q
            };
            if self.kind == DbKind::Postgres {
                q = others(q);
            }
            for (i, (lease_id, result_hash, signature)) in chunk.iter().enumerate() {
                q = q
                    .bind(lease_id.clone())
                    .bind(to_hex(result_hash))
                    .bind(signature.to_string());
                if let Some((_, tasks)) = owner {
                    q = q.bind(to_hex(&tasks[c * CHUNK + i]));
                }
            }
            if self.kind == DbKind::Sqlite {
                q = others(q);
            }
            let done = q.execute(&mut *tx).await?;
            if done.rows_affected() != chunk.len() as u64 {
                return Ok(Err(c * CHUNK));
            }
        }
        Ok(Ok(()))
    }

    /// Replicas queued and leased, for the gauges.
    pub async fn queue_stats(&self, now: u64) -> Result<QueueStats> {
        let counts = sqlx::query(sqlx::AssertSqlSafe(counts_sql(true, "$1")))
            .bind(to_bigint(now)?)
            .bind(String::new())
            .fetch_one(&self.read)
            .await?;
        Ok(QueueStats {
            queued: int_column(&counts, "queued")?,
            leased: int_column(&counts, "leased")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::jobs::tests::posted;
    use super::*;

    async fn worker(store: &Store, address: Address, kinds: Option<&[&str]>) {
        let capabilities = match kinds {
            Some(kinds) => serde_json::json!({"adapter": "cpu", "gflops": 1.0, "kinds": kinds}),
            None => serde_json::json!({}),
        };
        store
            .sign_in(
                address,
                &capabilities.to_string(),
                1.0,
                1,
                100,
                &address.to_string(),
                "worker",
                3700,
            )
            .await
            .unwrap();
    }

    #[test]
    fn placeholders_number_rows_after_the_skipped_parameters() {
        assert_eq!(placeholders(2, 3, 0), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(1, 2, 3), "($4, $5)");
        assert_eq!(placeholders(0, 3, 0), "");
        assert_eq!(
            row_placeholders(DbKind::Sqlite, 2, 3),
            "(?, ?, ?), (?, ?, ?)"
        );
        assert_eq!(
            row_placeholders(DbKind::Postgres, 2, 3),
            placeholders(2, 3, 0)
        );
        // SQLite: the others after the rows, and no number used twice.
        let sql = record_sql(DbKind::Sqlite, 2, true);
        assert!(sql.contains("(?, ?, ?, ?), (?, ?, ?, ?)"), "{sql}");
        assert_eq!(
            record_params(DbKind::Sqlite, 2, true),
            ["$9", "$10", "$11", "$12"]
        );
        assert!(!sql.contains("$1 ") && !sql.contains("$13"), "{sql}");
        assert_eq!(record_params(DbKind::Postgres, 2, false)[0], "$1");
    }

    #[test]
    fn the_kind_filter_has_one_parameter_per_kind() {
        for kinds in [1, 3, 7] {
            let sql = leasable_jobs_sql(kinds);
            assert!(sql.contains(&format!("${}", kinds + 1)), "{sql}");
            assert!(!sql.contains(&format!("${}", kinds + 2)), "{sql}");
            let sql = pick_sql(kinds, 1);
            assert!(sql.contains(&format!("${}", kinds + 2)), "{sql}");
            assert!(!sql.contains(&format!("${}", kinds + 3)), "{sql}");
        }
        assert!(pick_sql(2, 1).contains("FOR UPDATE OF t SKIP LOCKED"));
        assert!(!job_pick_sql(5).contains("FOR UPDATE"));
        assert!(job_pick_sql(5).ends_with("LIMIT 5"));
        assert_eq!(declared_kinds(None), [LEGACY_KIND]);
        assert_eq!(declared_kinds(Some("{}")), [LEGACY_KIND]);
        assert_eq!(declared_kinds(Some(r#"{"kinds":["a","b"]}"#)), ["a", "b"]);
        assert!(declared_kinds(Some(r#"{"kinds":[]}"#)).is_empty());
    }

    #[tokio::test]
    async fn leasing_works_for_any_number_of_kinds() {
        let store = Store::memory().await;
        for (id, kind) in [
            (1, "embed"),
            (2, "generate"),
            (3, "train"),
            (4, "registered-later"),
        ] {
            posted(&store, id, 1, 2, kind).await;
        }
        let (legacy, trainer, three) = (
            Address::repeat_byte(1),
            Address::repeat_byte(2),
            Address::repeat_byte(3),
        );
        worker(&store, legacy, None).await;
        worker(&store, trainer, Some(&["train"])).await;
        worker(
            &store,
            three,
            Some(&["embed", "generate", "registered-later"]),
        )
        .await;
        let mut leased = Vec::new();
        // 8 replicas among 3 equal workers: each may hold 3, one replica of a task each.
        for w in [three, trainer, legacy] {
            while let Some(l) = store.lease(w, 100, 60, 600).await.unwrap() {
                leased.push((w, l.job_id.to::<u64>()));
            }
        }
        assert_eq!(
            leased,
            [
                (three, 1),
                (three, 2),
                (three, 4),
                (trainer, 3),
                (legacy, 1)
            ]
        );
        assert_eq!(
            store.queue_stats(100).await.unwrap(),
            QueueStats {
                queued: 3,
                leased: 5
            }
        );
    }

    #[tokio::test]
    async fn leases_expire_release_and_take_one_result() {
        let store = Store::memory().await;
        posted(&store, 1, 1, 2, "embed").await;
        let (w1, w2) = (Address::repeat_byte(1), Address::repeat_byte(2));
        worker(&store, w1, None).await;
        worker(&store, w2, None).await;
        let a = store.lease(w1, 100, 60, 600).await.unwrap().unwrap();
        assert!(
            store.lease(w1, 100, 60, 600).await.unwrap().is_none(),
            "one replica per worker"
        );
        let b = store.lease(w2, 100, 60, 600).await.unwrap().unwrap();
        assert_eq!(
            store.queue_stats(100).await.unwrap(),
            QueueStats {
                queued: 0,
                leased: 2
            }
        );
        let sig = Bytes::from(vec![1u8; 65]);
        assert!(
            store
                .submit(&a.lease_id, B256::repeat_byte(7), &sig, 120)
                .await
                .unwrap()
        );
        assert!(
            !store
                .submit(&a.lease_id, B256::repeat_byte(7), &sig, 120)
                .await
                .unwrap()
        );
        assert!(!store.release(&a.lease_id, 120).await.unwrap());
        assert!(store.release(&b.lease_id, 120).await.unwrap());
        assert_eq!(
            store.replica(&b.lease_id).await.unwrap().unwrap().state,
            ReplicaState::Released
        );
        let c = store.lease(w2, 130, 60, 600).await.unwrap().unwrap();
        assert_eq!(store.expire_leases(190).await.unwrap(), 1);
        assert_eq!(
            store.replica(&c.lease_id).await.unwrap().unwrap().state,
            ReplicaState::Expired
        );
        let submitted = store.submitted_replicas(U256::from(1)).await.unwrap();
        assert_eq!(submitted.len(), 1);
        assert_eq!(
            (submitted[0].worker, submitted[0].state),
            (w1, ReplicaState::Submitted)
        );
        assert_eq!(submitted[0].signature.as_ref(), Some(&sig));
        assert_eq!(store.job_progress(U256::from(1)).await.unwrap(), (1, 0, 0));
    }
}

#[cfg(test)]
mod live_counts {
    use super::super::jobs::tests::posted;
    use super::*;

    /// Tasks whose `live` column differs from a recount of their leased and submitted
    /// replicas.
    async fn drifted(store: &Store) -> i64 {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM tasks t WHERE t.live <> (SELECT COUNT(*) FROM replicas r \
             WHERE r.job_id = t.job_id AND r.idx = t.idx AND r.state IN ('leased', 'submitted'))",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap();
        row.try_get("n").unwrap()
    }

    /// Every way a replica changes state (lease, submit, release, expiry, a worker's end)
    /// keeps each task's `live` count equal to a recount, so leasing may read it.
    #[tokio::test]
    async fn the_live_count_follows_every_state_change() {
        let store = Store::memory().await;
        posted(&store, 1, 6, 2, "embed").await;
        let workers: Vec<Address> = (1..=4).map(Address::repeat_byte).collect();
        for (i, w) in workers.iter().enumerate() {
            store
                .sign_in(
                    *w,
                    r#"{"kinds":["embed"]}"#,
                    1.0,
                    1,
                    100,
                    &format!("t{i}"),
                    "worker",
                    9999,
                )
                .await
                .unwrap();
        }
        let mut leases = Vec::new();
        for w in &workers {
            while let Some(l) = store.lease(*w, 100, 60, 600).await.unwrap() {
                leases.push(l);
            }
        }
        assert!(leases.len() >= 4);
        assert_eq!(drifted(&store).await, 0);
        assert!(
            store
                .submit(
                    &leases[0].lease_id,
                    B256::repeat_byte(1),
                    &Bytes::from(vec![1u8; 65]),
                    101
                )
                .await
                .unwrap()
        );
        assert!(store.release(&leases[1].lease_id, 101).await.unwrap());
        assert_eq!(drifted(&store).await, 0);
        store.end_worker(workers[3]).await.unwrap();
        assert_eq!(drifted(&store).await, 0);
        // Past the lease time: expiry flips the rest, and a new lease sees free slots.
        assert!(store.expire_leases(1_000).await.unwrap() > 0);
        assert_eq!(drifted(&store).await, 0);
        assert!(
            store
                .lease(workers[0], 1_000, 60, 10_000)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(drifted(&store).await, 0);
    }
}
