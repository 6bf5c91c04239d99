//! The store: one sqlx `Any` code path for SQLite (default) and PostgreSQL.
//!
//! One module per table family: [`jobs`] (jobs), [`tasks`] (tasks and the verifier's
//! decisions), [`leases`] (replicas: leasing, results, expiry), [`sessions`] (workers, nonces,
//! sessions), [`blobs`] and [`chain`] (the watcher's cursor and events). Column encodings and
//! the state enums live in [`codec`], nowhere else.
//!
//! Every multi-step write runs in one transaction. SQLite transactions that write begin with
//! `BEGIN IMMEDIATE` (one writer at a time, no upgrade deadlocks) on the writer's pool, driven
//! by a thread of its own for leases, results, decisions and single-statement writes
//! ([`writer_runtime`]); leases and results that queue together share one transaction, each
//! in a savepoint of its own ([`write_groups`]); and reads outside a transaction use
//! [`SQLITE_READERS`] read-only connections of their own;
//! PostgreSQL leasing locks the chosen task row with `FOR UPDATE SKIP LOCKED`, so several
//! coordinators can share a database.
//! A partial unique index (`replicas_distinct_workers`) makes "two live replicas of one task on
//! one worker" impossible whatever the code above does, and CHECK constraints (migration 0003)
//! refuse any state string the code does not know.

mod affinity;
mod blobs;
mod chain;
pub(crate) mod codec;
mod explorer;
mod jobs;
mod leases;
mod sessions;
mod tasks;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

pub use affinity::{WriterCpu, set_writer_cpu};
pub use blobs::BlobUses;
pub use chain::{ChainEvent, JobEvent};
pub use codec::{ReplicaState, TaskState};
pub use explorer::{ExplorerJob, ExplorerReplica, ExplorerTask, ExplorerWorker};
pub use jobs::{JobRow, NewTask};
pub use leases::{LeasedTask, QueueStats, ReplicaRow};
pub use tasks::{ReviewTask, TaskRow};

use crate::error::{Error, Result};

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// SQLite (file or memory).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl DbKind {
    /// The kind of a database URL.
    pub fn of_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else {
            Err(Error::BadRequest(format!(
                "database url {url:?}: use sqlite://PATH?mode=rwc or postgres://USER@HOST/DB"
            )))
        }
    }

    /// The pool size when none is configured: 1 for SQLite (one writer anyway), 16 for
    /// PostgreSQL.
    pub fn default_pool_size(self) -> u32 {
        match self {
            Self::Sqlite => 1,
            Self::Postgres => 16,
        }
    }
}

/// SQLite connections that only read, beside the one writer ([`Store::connect_with`]).
const SQLITE_READERS: u32 = 2;

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    /// Every write, and reads inside a write's transaction.
    pool: AnyPool,
    /// Reads outside a transaction: on a SQLite file, connections of their own (a write-ahead
    /// log lets them read the last commit while the writer writes), so that sessions, blobs
    /// and lookups do not queue behind the single writer; elsewhere the same pool.
    read: AnyPool,
    /// SQLite: the queue of [`write_groups`], started on first use.
    groups: std::sync::Arc<std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<GroupedOp>>>,
    /// What [`write_groups`] committed: transactions and the ops in them.
    grouped: std::sync::Arc<GroupCount>,
    /// The last second at which a lease swept the expired leases away.
    swept: std::sync::Arc<std::sync::atomic::AtomicU64>,
    kind: DbKind,
}

/// Counts of [`write_groups`]' commits.
#[derive(Debug, Default)]
struct GroupCount {
    commits: std::sync::atomic::AtomicU64,
    ops: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Connects to `url` (`sqlite://PATH?mode=rwc`, `sqlite::memory:`, `postgres://...`) with
    /// the default pool size and runs the embedded migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, None).await
    }

    /// [`Store::connect`] with at most `pool_size` connections (`None`: the kind's default;
    /// `sqlite::memory:` always uses one, since each connection would be its own database).
    pub async fn connect_with(url: &str, pool_size: Option<u32>) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let kind = DbKind::of_url(url)?;
        let memory = url.starts_with("sqlite::memory:");
        let max = if memory {
            1
        } else {
            pool_size.unwrap_or_else(|| kind.default_pool_size()).max(1)
        };
        // A write-ahead log, synced at checkpoints rather than at every commit: each commit is
        // one append, not a handful of fsyncs (the coordinator commits three times per
        // replica). A killed process loses nothing; a power cut may lose the last commits,
        // which workers resubmit. A page cache of up to 64 MiB (SQLite's default is 2 MiB): a
        // large job's hot pages otherwise come back through a read syscall each time.
        // Statement journals (a multi-row write with triggers keeps one) and temporary b-trees
        // in memory: on disk, each batch opened, wrote and deleted a temporary file.
        let options = sqlite_pragmas(
            AnyPoolOptions::new().max_connections(max),
            kind,
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -65536; \
             PRAGMA temp_store = MEMORY;",
        );
        let pool = match kind {
            // The writer's connection is opened on the writer's thread, by the migrations, so
            // that sqlx's thread for it starts on the writer's CPU ([`affinity`]); and it is
            // kept for good (sqlx would close it after 10 minutes idle, and reopen it on
            // whatever thread asked next). With a pool of more than one, the others open on
            // the threads that ask for them, on any CPU. A bad path now fails here, in the
            // migrations' first statement.
            DbKind::Sqlite => {
                let pool = options
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_lazy(url)?;
                let migrating = pool.clone();
                on_writer_thread(async move {
                    Ok(sqlx::migrate!("./migrations/sqlite")
                        .run(&migrating)
                        .await?)
                })
                .await?;
                pool
            }
            DbKind::Postgres => {
                let pool = options.connect(url).await?;
                sqlx::migrate!("./migrations/postgres").run(&pool).await?;
                pool
            }
        };
        let read = if kind == DbKind::Sqlite && !memory {
            sqlite_pragmas(
                AnyPoolOptions::new().max_connections(SQLITE_READERS),
                kind,
                "PRAGMA cache_size = -65536; PRAGMA query_only = ON;",
            )
            .connect(url)
            .await?
        } else {
            pool.clone()
        };
        Ok(Self {
            pool,
            read,
            groups: Default::default(),
            grouped: Default::default(),
            swept: Default::default(),
            kind,
        })
    }

    /// Which database this is.
    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// Closes the pools (waits for connections to finish).
    pub async fn close(&self) {
        self.read.close().await;
        self.pool.close().await;
    }

    /// Runs `write` (a write transaction or statement) to its end on [`writer_runtime`] where
    /// the store is SQLite; PostgreSQL has many writers, and its connections belong to the
    /// server's runtime, so there it runs here.
    async fn on_writer<T: Send + 'static>(
        &self,
        write: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        match self.kind {
            DbKind::Sqlite => on_writer_thread(write).await,
            DbKind::Postgres => write.await,
        }
    }

    /// Runs `op` in a write transaction and commits what it did when it returns `Ok((_, true))`;
    /// with `Ok((_, false))` or an error, nothing it did stays.
    ///
    /// On SQLite the op joins a group ([`write_groups`]): one transaction for the ops waiting
    /// together, each in a savepoint of its own. Either way its answer comes back only once
    /// what it did is committed.
    async fn write<T: Send + 'static>(&self, op: WriteOp<T>) -> Result<T> {
        match self.kind {
            DbKind::Postgres => {
                let mut tx = self.begin_write().await?;
                match op(&mut tx).await {
                    Ok((value, true)) => {
                        tx.commit().await?;
                        Ok(value)
                    }
                    Ok((value, false)) => {
                        tx.rollback().await?;
                        Ok(value)
                    }
                    Err(e) => {
                        // Dropped, the transaction rolls back.
                        drop(tx);
                        Err(e)
                    }
                }
            }
            DbKind::Sqlite => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let grouped: GroupedOp = Box::new(move |conn| {
                    Box::pin(async move {
                        let done = op(conn).await;
                        let keep = matches!(done, Ok((_, true)));
                        let deliver: Deliver = Box::new(move |failed| {
                            let answer = match (failed, done) {
                                (Some(why), Ok(_)) => Err(Error::Internal(format!(
                                    "the write was not committed: {why}"
                                ))),
                                (_, done) => done.map(|(value, _)| value),
                            };
                            let _ = reply.send(answer);
                        });
                        (keep, deliver)
                    })
                });
                self.groups
                    .get_or_init(|| {
                        let (send, receive) = tokio::sync::mpsc::unbounded_channel();
                        writer_runtime().spawn(write_groups(
                            self.pool.clone(),
                            receive,
                            self.grouped.clone(),
                        ));
                        send
                    })
                    .send(grouped)
                    .map_err(|_| Error::Internal("the database writer has stopped".into()))?;
                answer.await.map_err(|_| {
                    Error::Internal(
                        "the database writer dropped a write (see the coordinator's log)".into(),
                    )
                })?
            }
        }
    }

    /// Runs one write statement on the writer ([`Self::on_writer`]).
    async fn execute_write(
        &self,
        query: sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<sqlx::any::AnyQueryResult> {
        let pool = self.pool.clone();
        self.on_writer(async move { Ok(query.execute(&pool).await?) })
            .await
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.kind {
            DbKind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            DbKind::Postgres => self.pool.begin().await?,
        })
    }

    /// SQLite: the transactions [`write_groups`] committed, and the ops in them.
    #[cfg(test)]
    fn group_count(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.grouped.commits.load(Relaxed),
            self.grouped.ops.load(Relaxed),
        )
    }

    /// A fresh in-memory SQLite store (unit tests).
    #[cfg(test)]
    pub(crate) async fn memory() -> Self {
        Self::connect("sqlite::memory:")
            .await
            .expect("in-memory SQLite")
    }

    /// The raw pool (unit tests poke at the schema).
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// A write for [`Store::write`]: statements on the connection (inside a transaction), and
/// whether to keep what they did.
pub(super) type WriteOp<T> =
    Box<dyn for<'c> FnOnce(&'c mut sqlx::AnyConnection) -> BoxFuture<'c, Result<(T, bool)>> + Send>;

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Hands an op's answer over once its group's fate is known: `Some(why)` when the commit
/// failed.
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;

/// A [`WriteOp`] with its answer's way back: whether to keep its savepoint, and the delivery.
type GroupedOp =
    Box<dyn for<'c> FnOnce(&'c mut sqlx::AnyConnection) -> BoxFuture<'c, (bool, Deliver)> + Send>;

/// The most ops one SQLite write transaction takes ([`write_groups`]).
const MAX_GROUP: usize = 32;

/// SQLite's group commit: takes every op waiting (up to [`MAX_GROUP`]), runs them in one
/// `BEGIN IMMEDIATE` transaction, each in a savepoint that is released or rolled back as the op
/// says (an op alone needs none), commits once, and only then answers each.
///
/// A commit writes every page the transaction changed to the log, and the coordinator's writes
/// share many (the tasks a batch leases, the replica indexes' last pages, the job's row): in
/// `gleaner bench coordinator` (16 workers, batch 64), commits were a third of the writer's
/// time, two per round trip. The ops waiting together are those that queued behind the last
/// commit; with one at a time it is a transaction per op, as before.
async fn write_groups(
    pool: AnyPool,
    mut receive: tokio::sync::mpsc::UnboundedReceiver<GroupedOp>,
    count: std::sync::Arc<GroupCount>,
) {
    use sqlx::Acquire;
    use std::sync::atomic::Ordering::Relaxed;
    let mut ops = Vec::with_capacity(MAX_GROUP);
    while receive.recv_many(&mut ops, MAX_GROUP).await > 0 {
        let mut delivered = Vec::with_capacity(ops.len());
        let began = std::time::Instant::now();
        let outcome = async {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            if ops.len() == 1 {
                // Alone, the op needs no savepoint: the transaction is its own.
                let op = ops.remove(0);
                if run_grouped(op, &mut tx, &mut delivered).await {
                    tx.commit().await?;
                } else {
                    tx.rollback().await?;
                }
            } else {
                for op in ops.drain(..) {
                    let mut savepoint = (&mut *tx).begin().await?;
                    if run_grouped(op, &mut savepoint, &mut delivered).await {
                        savepoint.commit().await?;
                    } else {
                        savepoint.rollback().await?;
                    }
                }
                tx.commit().await?;
            }
            tracing::debug!(
                target: "coordinator::db",
                ops = delivered.len(),
                us = began.elapsed().as_micros() as u64,
                "write group done"
            );
            count.commits.fetch_add(1, Relaxed);
            count.ops.fetch_add(delivered.len() as u64, Relaxed);
            Ok::<_, sqlx::Error>(())
        }
        .await;
        let failed = outcome.err().map(|e| {
            tracing::error!(target: "coordinator", error = %e, ops = delivered.len() + ops.len(), "a group of writes failed");
            e.to_string()
        });
        for deliver in delivered {
            deliver(failed.as_deref());
        }
        // Ops the failure kept from running: their callers see the writer drop them.
        ops.clear();
    }
}

/// Runs one op of [`write_groups`] on `conn` and keeps its delivery; whether to keep what it
/// did. An op that panics fails alone: it is rolled back, and its caller sees its write
/// dropped.
async fn run_grouped(
    op: GroupedOp,
    conn: &mut sqlx::AnyConnection,
    delivered: &mut Vec<Deliver>,
) -> bool {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(op(conn)).catch_unwind().await {
        Ok((keep, deliver)) => {
            delivered.push(deliver);
            keep
        }
        Err(_) => {
            tracing::error!(target: "coordinator", "a write panicked; rolled back");
            false
        }
    }
}

/// The thread that drives SQLite's write transactions. SQLite has one writer, and a write
/// transaction holds it from `BEGIN IMMEDIATE` to `COMMIT` across several statements, each a
/// round trip to sqlx's connection thread. Driven from the server's runtime, the step between
/// two statements waited behind requests being parsed and signatures recovered on its two
/// threads, and every other write waited with it: in `gleaner bench coordinator` (16 workers,
/// batch 64) the statements filled about half of the worker phase, and up to 29% of both
/// cores sat idle. Here a thread with nothing else to do takes each step as soon as its
/// statement returns.
///
/// A write spawned here runs to its end even if the request that asked for it is dropped (a
/// client that went away): the transaction commits or rolls back whole, as before.
fn writer_runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("db-writer")
            .on_thread_start(|| {
                if let Some(cpu) = affinity::hold_this_thread() {
                    tracing::debug!(target: "coordinator::db", cpu, "the SQLite writer holds to one CPU");
                }
            })
            .enable_time()
            .build()
            .expect("the writer's runtime")
    })
}

/// Runs `work` to its end on [`writer_runtime`]'s thread (on its CPU, [`affinity`]).
async fn on_writer_thread<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    writer_runtime()
        .spawn(work)
        .await
        .map_err(|e| Error::Internal(format!("write task: {e}")))?
}

/// `options` running `pragmas` on each new connection when `kind` is SQLite.
///
/// SQLite connections are to a local file and do not go stale, so the pool hands them out
/// without pinging them first: a ping is a round trip to sqlx's connection thread, and every
/// write transaction and read began with one.
fn sqlite_pragmas(options: AnyPoolOptions, kind: DbKind, pragmas: &'static str) -> AnyPoolOptions {
    let options = if kind == DbKind::Sqlite {
        options.test_before_acquire(false)
    } else {
        options
    };
    options.after_connect(move |conn, _| {
        Box::pin(async move {
            if kind == DbKind::Sqlite {
                sqlx::Executor::execute(&mut *conn, pragmas).await?;
            }
            Ok(())
        })
    })
}

#[cfg(test)]
mod tests {
    use alloy::primitives::U256;
    use gleaner_protocol::api::JobState;

    use super::*;

    #[test]
    fn urls_name_their_database() {
        let cases = [
            ("sqlite::memory:", Some(DbKind::Sqlite)),
            ("sqlite://x.db?mode=rwc", Some(DbKind::Sqlite)),
            ("postgres://u@h/d", Some(DbKind::Postgres)),
            ("postgresql://u@h/d", Some(DbKind::Postgres)),
            ("mysql://u@h/d", None),
        ];
        for (url, want) in cases {
            assert_eq!(DbKind::of_url(url).ok(), want, "{url}");
        }
        assert_eq!(DbKind::Sqlite.default_pool_size(), 1);
        assert_eq!(DbKind::Postgres.default_pool_size(), 16);
    }

    /// The writer's thread holds to one CPU (with two or more to choose from), and so does
    /// sqlx's thread for the writer's connection, opened from it: each statement's hand-off
    /// stays on that CPU ([`affinity`]).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_sqlite_writer_and_its_connection_share_one_cpu() {
        // Threads by id: those of stores that other tests open before this one are left out
        // (the writer's runtime is the process's, and may have started before).
        fn tasks() -> Vec<std::path::PathBuf> {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|task| Some(task.ok()?.path()))
                .collect()
        }
        let before = tasks();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
        let store = Store::connect(&url).await.unwrap();
        store.expire_leases(1).await.unwrap();
        let allowed = affinity::allowed().unwrap();
        let masks: Vec<(String, String)> = tasks()
            .into_iter()
            .filter_map(|path| {
                let comm = std::fs::read_to_string(path.join("comm")).ok()?;
                if comm.starts_with("sqlx-sqlite") && before.contains(&path) {
                    return None;
                }
                let status = std::fs::read_to_string(path.join("status")).ok()?;
                let mask = status
                    .lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
                    .trim()
                    .to_string();
                Some((comm.trim().to_string(), mask))
            })
            .collect();
        let writer: Vec<&String> = masks
            .iter()
            .filter(|(comm, _)| comm == "db-writer")
            .map(|(_, mask)| mask)
            .collect();
        assert!(!writer.is_empty(), "no writer thread in {masks:?}");
        let want = if allowed.len() >= 2 {
            allowed.last().unwrap().to_string()
        } else {
            return;
        };
        assert!(writer.iter().all(|m| **m == want), "{masks:?}");
        assert!(
            masks
                .iter()
                .any(|(comm, mask)| comm.starts_with("sqlx-sqlite") && *mask == want),
            "no connection thread on CPU {want}: {masks:?}"
        );
        // The readers' connections are not held.
        assert!(
            masks
                .iter()
                .any(|(comm, mask)| comm.starts_with("sqlx-sqlite") && *mask != want),
            "{masks:?}"
        );
    }

    /// On a SQLite file, reads outside a transaction have connections of their own: they
    /// answer while a write transaction holds the single writer, see what it commits, and
    /// cannot write.
    #[tokio::test]
    async fn sqlite_reads_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
        let store = Store::connect(&url).await.unwrap();
        let hash = alloy::primitives::B256::repeat_byte(4);
        let mut tx = store.begin_write().await.unwrap();
        sqlx::query("INSERT INTO blobs (hash, size, bytes) VALUES ($1, $2, $3)")
            .bind(codec::to_hex(&hash))
            .bind(1i64)
            .bind(vec![7u8])
            .execute(&mut *tx)
            .await
            .unwrap();
        let read = tokio::time::timeout(std::time::Duration::from_secs(2), store.has_blob(hash))
            .await
            .expect("a read waited for the open write transaction");
        assert!(!read.unwrap(), "uncommitted rows are not read");
        tx.commit().await.unwrap();
        assert!(store.has_blob(hash).await.unwrap());
        let err = sqlx::query("DELETE FROM blobs")
            .execute(&store.read)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
        // In memory there is one connection: reads share it.
        assert_eq!(
            Store::memory().await.read.options().get_max_connections(),
            1
        );
    }

    /// Writes that queue together share one transaction, and each stays all or nothing: a
    /// refused result among them changes nothing, and the others are committed.
    #[tokio::test]
    async fn queued_writes_commit_together_and_fail_alone() {
        use alloy::primitives::{Address, B256, Bytes};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("g.db").display());
        let store = Store::connect(&url).await.unwrap();
        let now = 100;
        jobs::tests::posted(&store, 3, 8, 1, jobs::LEGACY_KIND).await;
        let w = Address::repeat_byte(5);
        store
            .sign_in(w, "{}", 1.0, 1, now, "tok", "worker", now + 3600)
            .await
            .unwrap();
        let leases = store.lease_many(w, now, 60, 600, 8).await.unwrap();
        assert_eq!(leases.len(), 8);
        let (commits, ops) = store.group_count();

        // The writer's one connection held: the eight results queue up behind it.
        let held = store.pool.acquire().await.unwrap();
        let output = |i: usize| (B256::with_last_byte(0x80 + i as u8), vec![i as u8; 3]);
        let results = leases.iter().enumerate().map(|(i, l)| {
            // The fourth names another task: refused whole.
            let task = if i == 3 {
                B256::repeat_byte(0xee)
            } else {
                l.task_hash
            };
            let result = (l.lease_id.clone(), output(i).0, Bytes::from(vec![1u8; 65]));
            store.submit_many_owned(w, vec![result], vec![task], vec![output(i)], now)
        });
        let (answers, ()) = tokio::join!(futures_util::future::join_all(results), async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            drop(held);
        });

        let (commits, ops) = {
            let (c, o) = store.group_count();
            (c - commits, o - ops)
        };
        assert_eq!(ops, 8);
        assert!(commits <= 2, "8 writes in {commits} transactions");
        for (i, (answer, lease)) in answers.into_iter().zip(&leases).enumerate() {
            let replica = store.replica(&lease.lease_id).await.unwrap().unwrap();
            let stored = store.has_blob(output(i).0).await.unwrap();
            if i == 3 {
                assert_eq!(answer.unwrap(), Err(vec![output(i)]));
                assert_eq!(replica.state, ReplicaState::Leased);
                assert!(!stored, "the refused result's output");
            } else {
                assert_eq!(answer.unwrap(), Ok(()), "result {i}");
                assert_eq!(replica.state, ReplicaState::Submitted, "result {i}");
                assert!(stored, "result {i}'s output");
            }
        }
    }

    /// A write that panics fails alone: its caller gets an error, what it wrote is rolled
    /// back, and the writer goes on.
    #[tokio::test]
    async fn a_panicking_write_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("p.db").display());
        let store = Store::connect(&url).await.unwrap();
        let insert = |hash: u8| {
            sqlx::query("INSERT INTO blobs (hash, size, bytes) VALUES ($1, 1, $2)")
                .bind(codec::to_hex(&alloy::primitives::B256::repeat_byte(hash)))
                .bind(vec![hash])
        };
        let panics: WriteOp<()> = Box::new(move |conn| {
            Box::pin(async move {
                insert(1).execute(&mut *conn).await?;
                panic!("a bug in a write");
            })
        });
        let err = store.write(panics).await.unwrap_err();
        assert!(err.to_string().contains("dropped a write"), "{err}");
        let works: WriteOp<()> = Box::new(move |conn| {
            Box::pin(async move {
                insert(2).execute(&mut *conn).await?;
                Ok(((), true))
            })
        });
        store.write(works).await.unwrap();
        let stored = |b: u8| store.has_blob(alloy::primitives::B256::repeat_byte(b));
        assert!(!stored(1).await.unwrap(), "the panicking write's row");
        assert!(stored(2).await.unwrap());
    }

    #[tokio::test]
    async fn a_file_database_takes_the_configured_pool_size() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("p.db").display());
        let store = Store::connect_with(&url, Some(3)).await.unwrap();
        assert_eq!(store.pool.options().get_max_connections(), 3);
        let memory = Store::connect_with("sqlite::memory:", Some(8))
            .await
            .unwrap();
        assert_eq!(memory.pool.options().get_max_connections(), 1);
    }

    /// Migration 0003 rebuilds the state tables of a database that already holds rows: every
    /// row survives, the foreign keys still hold, and the new CHECKs apply.
    #[tokio::test]
    async fn the_state_checks_migrate_a_populated_database() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let mut before = sqlx::migrate!("./migrations/sqlite");
        before.migrations = std::borrow::Cow::Owned(before.migrations[..2].to_vec());
        before.run(&pool).await.unwrap();
        let (hash, address) = (
            format!("0x{}", "ab".repeat(32)),
            format!("0x{}", "cd".repeat(20)),
        );
        for sql in [
            format!(
                "INSERT INTO jobs (job_id, manifest, spec_hash, requester, redundancy, task_count, \
                 deadline, state, tasks_root, created_at, kind) \
                 VALUES ('7', '{{}}', '{hash}', '{address}', 2, 1, 99, 'posted', '{hash}', 1, 'generate')"
            ),
            format!(
                "INSERT INTO tasks (job_id, idx, task_hash, input_hash, cost, replicas_needed, state) \
                 VALUES ('7', 0, '{hash}', '{hash}', '10', 2, 'open')"
            ),
            format!(
                "INSERT INTO replicas (lease_id, job_id, idx, worker, state, leased_at, expires_at) \
                 VALUES ('l1', '7', 0, '{address}', 'submitted', 1, 2)"
            ),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;

        let store = Store::connect(&url).await.unwrap();
        let job = store.job(U256::from(7)).await.unwrap();
        let job = job.expect("the job survives");
        assert_eq!((job.state, job.deadline), (JobState::Posted, 99));
        assert_eq!(job.manifest, "{}", "the manifest moves to job_manifests");
        let replica = store
            .replica("l1")
            .await
            .unwrap()
            .expect("the replica survives");
        assert_eq!(replica.state, ReplicaState::Submitted);
        assert_eq!(store.tasks(U256::from(7)).await.unwrap().len(), 1);
        let kind: (String,) = sqlx::query_as("SELECT kind FROM jobs WHERE job_id = '7'")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(kind.0, "generate");
        // The foreign keys point at the rebuilt tables.
        let orphan = sqlx::query(
            "INSERT INTO replicas (lease_id, job_id, idx, worker, state, leased_at, expires_at) \
             VALUES ('l2', '7', 5, '0x06', 'leased', 1, 2)",
        )
        .execute(store.pool())
        .await;
        assert!(orphan.is_err(), "a replica of a task that does not exist");
        let dangling: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM sqlite_master \
             WHERE instr(sql, 'jobs_new') > 0 OR instr(sql, 'tasks_new') > 0",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert!(dangling.is_empty(), "{dangling:?}");
        let bad = sqlx::query("UPDATE jobs SET state = 'lost' WHERE job_id = '7'")
            .execute(store.pool())
            .await;
        assert!(bad.is_err());
    }
}
