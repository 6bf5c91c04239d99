//! `gleaner bench coordinator`: the coordinator under simulated workers (not the model).
//!
//! Each configuration (one worker count) gets a fresh anvil with the contracts, fresh staked
//! worker keys, a `gleaner coordinator run` child process on a fresh database, the verifier
//! in-process, and one job of `--tasks` tasks of the simulated kind ([`super::sim`]): a task's
//! output is the sha256 of its input, so workers answer at once and the verifier checks by
//! hashing. The workers are tokio tasks, each with its own key and [`Client`]: a real EIP-712
//! sign-in, then lease → blob PUT → signed result over HTTP on loopback, as fast as they can
//! until every replica is in. The job is then decided and settled on-chain, and audited.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy::consensus::Transaction as _;
use alloy::network::{ReceiptResponse as _, TransactionBuilder, TransactionResponse as _};
use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{BlockNumberOrTag, TransactionRequest};
use alloy::signers::local::{LocalSigner, PrivateKeySigner};
use alloy::sol_types::{Eip712Domain, SolCall};
use anyhow::{Context, bail};
use clap::Args;
use gleaner_client::Client;
use gleaner_kinds::Registry;
use gleaner_protocol::api::{BatchItem, Capabilities, JobState, SubmitResult, SubmitResults};
use gleaner_protocol::bindings::{GleanerToken, JobMarket, WorkerRegistry, confirm};
use gleaner_protocol::blob::blob_hash;
use gleaner_protocol::devnet::{ANVIL_MISSING, DeployParams, Deployment, deploy, find_anvil};
use gleaner_protocol::eip712;
use gleaner_protocol::task::KindId;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tracing::instrument::WithSubscriber;

use super::sim::{self, SimKind};
use crate::common::runtime;

/// How long a simulated worker's lease request waits for work (long poll).
const LEASE_WAIT_MS: u32 = 1_000;
/// A configuration fails when no result arrives for this long.
const STALL: Duration = Duration::from_secs(120);
/// A worker gives up after this many failed requests.
const MAX_ERRORS: u64 = 50;
/// The keystore password of the coordinator's key (a throwaway key on a throwaway chain).
const PASSWORD: &str = "gleaner-bench";

/// Options of `gleaner bench coordinator`.
#[derive(Debug, Args)]
pub struct CoordinatorBench {
    /// Simulated worker counts, comma-separated: one configuration each, on a fresh chain,
    /// coordinator, database and job.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    pub workers: Vec<usize>,
    /// Replicas per call, comma-separated: one configuration per worker count and batch size.
    /// 1 is the one-at-a-time protocol (lease, PUT the output, submit the signed result);
    /// K > 1 leases up to K replicas in one call and returns their results, outputs inline,
    /// signed once, in one call (`/v1/leases/batch`, `/v1/results/batch`).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub batch: Vec<u32>,
    /// Tasks in each configuration's job.
    #[arg(long, default_value_t = 2000)]
    pub tasks: u32,
    /// Replicas per task. A worker holds at most one replica of a task, so a configuration
    /// with fewer workers runs with redundancy = its worker count (and says so).
    #[arg(long, default_value_t = 2)]
    pub redundancy: u16,
    /// A PostgreSQL server to store in instead of a SQLite file (`postgres://USER@HOST/DB`):
    /// each configuration creates a fresh database on it and drops it afterwards.
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// More flags for `gleaner coordinator run`, space-separated (e.g. "--db-pool-size 4").
    #[arg(long, allow_hyphen_values = true, value_name = "FLAGS")]
    pub coordinator_flags: Option<String>,
    /// `RUST_LOG` of the coordinator process only, e.g. "info,tower_http=debug,sqlx::query=debug"
    /// to log each request and each SQL statement with its time (with --keep, to read the log).
    #[arg(long, value_name = "FILTER")]
    pub coordinator_log: Option<String>,
    /// Start the verifier only once every replica is in, so that the workers' numbers leave
    /// out its load on the coordinator (by default it decides while the workers run, as in
    /// production).
    #[arg(long)]
    pub verify_after: bool,
    /// Keep each configuration's directory (coordinator log, SQLite databases) and say where.
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON object per configuration instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Latency percentiles of one endpoint, in milliseconds.
#[derive(Debug, Clone, Serialize)]
struct Latency {
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1e3
        };
        Self {
            count: samples.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// Gas of one kind of transaction the job caused.
#[derive(Debug, Clone, Default, Serialize)]
struct GasLine {
    txs: u64,
    gas: u64,
}

/// One configuration's numbers (the JSON line).
#[derive(Debug, Clone, Serialize)]
struct Row {
    backend: &'static str,
    workers: usize,
    /// Replicas per lease call and per result call.
    batch: u32,
    tasks: u32,
    redundancy: u16,
    /// `concurrent` (deciding while the workers run) or `after` (--verify-after).
    verifier: &'static str,
    /// Seconds from the workers' start to the last result.
    secs: f64,
    round_trips_per_s: f64,
    leases_per_s: f64,
    results_per_s: f64,
    /// lease, blob_put, result, and round_trip (lease request to result accepted).
    latencies: BTreeMap<&'static str, Latency>,
    /// Lease requests that came back empty (long poll ran out): at the end, or waiting for a
    /// task the worker does not already hold.
    empty_leases: u64,
    /// Failed requests (each retried or its lease released).
    errors: u64,
    /// The coordinator process's CPU time over the workers' run, in % of one core.
    coordinator_cpu_pct: f64,
    /// Its peak resident memory, MiB.
    coordinator_peak_rss_mib: f64,
    /// Database size after settlement (SQLite: file + WAL; PostgreSQL: pg_database_size).
    db_bytes: u64,
    /// Its size once the coordinator had created the schema, before the job.
    db_bytes_empty: u64,
    /// Growth from the empty schema to after settlement, per task.
    db_bytes_per_task: f64,
    /// Every transaction from the requester's approve to the settlement, by function.
    gas: BTreeMap<String, GasLine>,
    gas_total: u64,
    gas_per_task: f64,
    /// Seconds from the last result to the job settled on-chain (verifier decisions, report,
    /// settlement).
    settle_secs: f64,
    settled: bool,
    /// `OK`, or the audit's differences.
    audit: String,
}

pub(super) fn coordinator(args: CoordinatorBench) -> anyhow::Result<()> {
    if args.workers.is_empty() || args.workers.contains(&0) {
        bail!("--workers needs positive counts, e.g. --workers 1,16,256");
    }
    if args.batch.is_empty()
        || args
            .batch
            .iter()
            .any(|&b| b == 0 || b as usize > eip712::MAX_RESULT_BATCH)
    {
        bail!(
            "--batch needs sizes from 1 to {}, e.g. --batch 1,64",
            eip712::MAX_RESULT_BATCH
        );
    }
    if args.tasks == 0 || args.redundancy == 0 {
        bail!("--tasks and --redundancy must be positive");
    }
    let anvil = anvil_binary()?;
    let rt = runtime()?;
    let mut rows = Vec::new();
    let configurations: Vec<(usize, u32)> = args
        .workers
        .iter()
        .flat_map(|&w| args.batch.iter().map(move |&b| (w, b)))
        .collect();
    for (workers, batch) in configurations {
        match rt.block_on(configuration(&args, &anvil, workers, batch)) {
            Ok(row) => {
                if args.json {
                    println!("{}", serde_json::to_string(&row)?);
                }
                rows.push(row);
            }
            Err(e) => {
                // What was measured before the failure is still worth a look.
                if !args.json && !rows.is_empty() {
                    print_table(&rows);
                }
                return Err(e.context(format!("the configuration with {workers} worker(s)")));
            }
        }
    }
    if !args.json {
        print_table(&rows);
    }
    Ok(())
}

/// anvil from `$GLEANER_ANVIL`, the checkout's node_modules (searched from the current
/// directory, then from this source tree) or the `PATH`.
fn anvil_binary() -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    find_anvil(&cwd)
        .or_else(|| find_anvil(Path::new(env!("CARGO_MANIFEST_DIR"))))
        .with_context(|| ANVIL_MISSING.to_owned())
}

fn say(msg: impl std::fmt::Display) {
    eprintln!("[bench coordinator] {msg}");
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `n` whole tokens in base units.
fn tokens(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18))
}

/// The coordinator child process; killed on drop.
struct CoordinatorProcess {
    child: Child,
    log: PathBuf,
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl CoordinatorProcess {
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(20).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Fails with the log's tail if the process has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the coordinator exited ({status}); the end of {}:\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }
}

/// Where a configuration stores: a SQLite file, or a fresh PostgreSQL database.
enum Db {
    Sqlite(PathBuf),
    Postgres { admin_url: String, name: String },
}

impl Db {
    async fn create(args: &CoordinatorBench, dir: &Path, workers: usize) -> anyhow::Result<Self> {
        let Some(admin_url) = &args.database else {
            return Ok(Self::Sqlite(dir.join("coordinator.db")));
        };
        if !(admin_url.starts_with("postgres://") || admin_url.starts_with("postgresql://")) {
            bail!("--database takes a postgres://USER@HOST/DB URL (SQLite is the default)");
        }
        let name = format!("gleaner_bench_{}_{workers}", std::process::id());
        let mut c = pg_connect(admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .execute(&mut c)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .with_context(|| {
                format!("cannot create database {name} on {admin_url} (the user needs CREATEDB)")
            })?;
        Ok(Self::Postgres {
            admin_url: admin_url.clone(),
            name,
        })
    }

    fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres { .. } => "postgres",
        }
    }

    fn url(&self) -> anyhow::Result<String> {
        Ok(match self {
            Self::Sqlite(path) => format!("sqlite://{}?mode=rwc", path.display()),
            Self::Postgres { admin_url, name } => {
                let mut u = reqwest::Url::parse(admin_url)
                    .with_context(|| format!("bad --database URL {admin_url}"))?;
                u.set_path(&format!("/{name}"));
                u.to_string()
            }
        })
    }

    async fn size(&self) -> anyhow::Result<u64> {
        match self {
            Self::Sqlite(path) => {
                let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
                let mut wal = path.as_os_str().to_owned();
                wal.push("-wal");
                Ok(len(path) + len(Path::new(&wal)))
            }
            Self::Postgres { .. } => {
                let mut c = pg_connect(&self.url()?).await?;
                let (size,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
                    .fetch_one(&mut c)
                    .await?;
                Ok(u64::try_from(size).unwrap_or(0))
            }
        }
    }

    async fn drop_database(&self) -> anyhow::Result<()> {
        if let Self::Postgres { admin_url, name } = self {
            let mut c = pg_connect(admin_url).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut c)
            .await?;
        }
        Ok(())
    }
}

async fn pg_connect(url: &str) -> anyhow::Result<sqlx::postgres::PgConnection> {
    use sqlx::Connection;
    sqlx::postgres::PgConnection::connect(url)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {url}"))
}

/// One simulated worker's view of the run.
#[derive(Debug, Default)]
struct Samples {
    lease: Vec<Duration>,
    put: Vec<Duration>,
    result: Vec<Duration>,
    round_trip: Vec<Duration>,
    empty: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Samples {
    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// What the workers share: counters, the start signal, and the end signal.
struct Shared {
    results: AtomicU64,
    leases: AtomicU64,
    target: u64,
    /// Nanoseconds from the start to the latest accepted result.
    last_result_ns: AtomicU64,
    /// Workers still running.
    alive: AtomicU64,
    done: watch::Sender<bool>,
}

struct SimWorker {
    signer: PrivateKeySigner,
    client: Client,
    domain: Eip712Domain,
    /// Replicas per call (1: the one-at-a-time protocol).
    batch: u32,
}

/// Leases, uploads and submits until every replica is in (or `done` is signalled).
async fn simulate(
    w: SimWorker,
    mut start: watch::Receiver<Option<Instant>>,
    shared: Arc<Shared>,
    outputs: Arc<Vec<Vec<u8>>>,
) -> Samples {
    let mut s = Samples::default();
    let mut done = shared.done.subscribe();
    let t0 = loop {
        if let Some(t) = *start.borrow_and_update() {
            break t;
        }
        if start.changed().await.is_err() {
            return s;
        }
    };
    if w.batch > 1 {
        simulate_batched(&w, &mut s, &mut done, t0, &shared, &outputs).await;
        return s;
    }
    while !*done.borrow() && s.errors < MAX_ERRORS {
        let began = Instant::now();
        let lease = tokio::select! {
            _ = done.changed() => break,
            l = w.client.lease(LEASE_WAIT_MS) => l,
        };
        let lease = match lease {
            Ok(Some(l)) => l,
            Ok(None) => {
                s.empty += 1;
                continue;
            }
            Err(e) => {
                s.error(format!("lease: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        s.lease.push(began.elapsed());
        shared.leases.fetch_add(1, Ordering::Relaxed);
        let Some(output) = outputs.get(lease.index as usize) else {
            s.error(format!("leased task {} beyond the job", lease.index));
            let _ = w.client.release(&lease.lease_id).await;
            continue;
        };
        let t = Instant::now();
        let result_hash = match w.client.put_blob(output.clone()).await {
            Ok(h) => h,
            Err(e) => {
                s.error(format!("blob PUT: {e}"));
                let _ = w.client.release(&lease.lease_id).await;
                continue;
            }
        };
        s.put.push(t.elapsed());
        let signature = match gleaner_client::sign::task_result(
            &w.signer,
            &w.domain,
            lease.task_hash,
            result_hash,
        ) {
            Ok(sig) => sig,
            Err(e) => {
                s.error(format!("sign: {e}"));
                let _ = w.client.release(&lease.lease_id).await;
                continue;
            }
        };
        let body = SubmitResult {
            lease_id: lease.lease_id.clone(),
            task_hash: lease.task_hash,
            result_hash,
            signature,
        };
        let t = Instant::now();
        if let Err(e) = w.client.submit(&body).await {
            s.error(format!("result: {e}"));
            let _ = w.client.release(&lease.lease_id).await;
            continue;
        }
        s.result.push(t.elapsed());
        s.round_trip.push(began.elapsed());
        let at = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        shared.last_result_ns.fetch_max(at, Ordering::Relaxed);
        if shared.results.fetch_add(1, Ordering::Relaxed) + 1 >= shared.target {
            shared.done.send_replace(true);
        }
    }
    s
}

/// [`simulate`] with batches: leases up to `w.batch` replicas in one call, and returns their
/// results (outputs inline, one signature) in one call.
async fn simulate_batched(
    w: &SimWorker,
    s: &mut Samples,
    done: &mut watch::Receiver<bool>,
    t0: Instant,
    shared: &Shared,
    outputs: &[Vec<u8>],
) {
    while !*done.borrow() && s.errors < MAX_ERRORS {
        let began = Instant::now();
        let leases = tokio::select! {
            _ = done.changed() => break,
            l = w.client.lease_batch(LEASE_WAIT_MS, w.batch) => l,
        };
        let leases = match leases {
            Ok(l) if l.is_empty() => {
                s.empty += 1;
                continue;
            }
            Ok(l) => l,
            Err(e) => {
                s.error(format!("lease batch: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        s.lease.push(began.elapsed());
        shared
            .leases
            .fetch_add(leases.len() as u64, Ordering::Relaxed);
        let release_all = || async {
            for l in &leases {
                let _ = w.client.release(&l.lease_id).await;
            }
        };
        let mut items = Vec::with_capacity(leases.len());
        for lease in &leases {
            let Some(output) = outputs.get(lease.index as usize) else {
                s.error(format!("leased task {} beyond the job", lease.index));
                break;
            };
            items.push(BatchItem {
                lease_id: lease.lease_id.clone(),
                task_hash: lease.task_hash,
                result_hash: blob_hash(output),
                output: Some(output.clone().into()),
            });
        }
        if items.len() < leases.len() {
            release_all().await;
            continue;
        }
        let pairs: Vec<_> = items.iter().map(|i| (i.task_hash, i.result_hash)).collect();
        let signature = match gleaner_client::sign::task_results(&w.signer, &w.domain, &pairs) {
            Ok(sig) => sig,
            Err(e) => {
                s.error(format!("sign: {e}"));
                release_all().await;
                continue;
            }
        };
        let t = Instant::now();
        if let Err(e) = w
            .client
            .submit_batch(&SubmitResults { items, signature })
            .await
        {
            s.error(format!("result batch: {e}"));
            release_all().await;
            continue;
        }
        s.result.push(t.elapsed());
        s.round_trip.push(began.elapsed());
        let at = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        shared.last_result_ns.fetch_max(at, Ordering::Relaxed);
        let n = leases.len() as u64;
        if shared.results.fetch_add(n, Ordering::Relaxed) + n >= shared.target {
            shared.done.send_replace(true);
        }
    }
}

/// `utime + stime` of process `pid`, in seconds.
fn cpu_secs(pid: u32, ticks_per_s: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(n - 3)
            .context("short /proc stat")?
            .parse::<u64>()? as f64)
    };
    Ok((field(14)? + field(15)?) / ticks_per_s)
}

/// Peak resident memory of process `pid` (VmHWM), MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Clock ticks per second of /proc's CPU times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Function names of the transactions a job causes, by selector.
fn function_name(input: &[u8]) -> String {
    let table: [([u8; 4], &str); 9] = [
        (GleanerToken::approveCall::SELECTOR, "approve"),
        (GleanerToken::faucetCall::SELECTOR, "faucet"),
        (JobMarket::createJobCall::SELECTOR, "createJob"),
        (JobMarket::postTasksCall::SELECTOR, "postTasks"),
        (JobMarket::settleCall::SELECTOR, "settle"),
        (JobMarket::beginSettlementCall::SELECTOR, "beginSettlement"),
        (JobMarket::settleChunkCall::SELECTOR, "settleChunk"),
        (
            JobMarket::finalizeSettlementCall::SELECTOR,
            "finalizeSettlement",
        ),
        (WorkerRegistry::slashCall::SELECTOR, "slash"),
    ];
    input
        .get(..4)
        .and_then(|sel| table.iter().find(|(s, _)| s == sel))
        .map_or_else(|| "other".to_owned(), |(_, n)| (*n).to_owned())
}

/// `gasUsed` of every transaction in blocks `from..=to`, by function.
async fn gas_by_function(
    p: &DynProvider,
    from: u64,
    to: u64,
) -> anyhow::Result<BTreeMap<String, GasLine>> {
    let mut lines: BTreeMap<String, GasLine> = BTreeMap::new();
    for n in from..=to {
        let block = p
            .get_block_by_number(BlockNumberOrTag::Number(n))
            .full()
            .await?
            .with_context(|| format!("block {n} is missing"))?;
        let receipts = p
            .get_block_receipts(BlockNumberOrTag::Number(n).into())
            .await?
            .unwrap_or_default();
        for tx in block.transactions.txns() {
            let receipt = receipts
                .iter()
                .find(|r| r.transaction_hash() == tx.tx_hash())
                .with_context(|| format!("no receipt for {}", tx.tx_hash()))?;
            let line = lines.entry(function_name(tx.input())).or_default();
            line.txs += 1;
            line.gas += receipt.gas_used();
        }
    }
    Ok(lines)
}

/// Mints, approves and stakes for every worker key, `parallel` at a time.
async fn stake_workers(
    anvil: &AnvilInstance,
    d: &Deployment,
    funder: &PrivateKeySigner,
    workers: &[PrivateKeySigner],
) -> anyhow::Result<()> {
    let p = ProviderBuilder::new()
        .wallet(funder.clone())
        .connect_http(anvil.endpoint_url());
    let mut nonce = p.get_transaction_count(funder.address()).await?;
    let mut pending = tokio::task::JoinSet::new();
    for w in workers {
        let tx = TransactionRequest::default()
            .with_to(w.address())
            .with_value(tokens(1))
            .with_nonce(nonce);
        nonce += 1;
        let sent = p.send_transaction(tx).await?;
        pending.spawn(sent.get_receipt());
    }
    while let Some(r) = pending.join_next().await {
        let receipt = r??;
        if !receipt.status() {
            bail!("funding a worker reverted");
        }
    }
    let rpc = anvil.endpoint();
    let gate = Arc::new(Semaphore::new(32));
    let mut staking = tokio::task::JoinSet::new();
    for w in workers {
        let (w, d, rpc, gate) = (w.clone(), *d, rpc.clone(), gate.clone());
        staking.spawn(async move {
            let _permit = gate.acquire_owned().await;
            gleaner_protocol::devnet::fund_and_stake(&rpc, &d, &w, tokens(1_000), tokens(100)).await
        });
    }
    while let Some(r) = staking.join_next().await {
        r?.context("fund and stake a worker")?;
    }
    Ok(())
}

/// Starts `gleaner coordinator run` and waits until it answers.
async fn start_coordinator(
    args: &CoordinatorBench,
    dir: &Path,
    anvil: &AnvilInstance,
    d: &Deployment,
    key: &PrivateKeySigner,
    verifier: Address,
    db_url: &str,
) -> anyhow::Result<(CoordinatorProcess, String)> {
    std::fs::write(dir.join("password"), PASSWORD)?;
    LocalSigner::encrypt_keystore(
        dir,
        &mut rand08::thread_rng(),
        key.to_bytes(),
        PASSWORD,
        Some("coordinator.json"),
    )?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let log = dir.join("coordinator.log");
    let out = std::fs::File::create(&log)?;
    let mut c = Command::new(std::env::current_exe().context("where is the gleaner binary?")?);
    c.args(["coordinator", "run", "--listen", &listen])
        .args(["--database-url", db_url, "--confirmations", "0"])
        .args(["--verifier", &verifier.to_string()])
        .args(
            args.coordinator_flags
                .iter()
                .flat_map(|f| f.split_whitespace()),
        )
        .env("GLEANER_RPC_URL", anvil.endpoint())
        .env("GLEANER_MARKET", d.market.to_string())
        .env("GLEANER_KEYSTORE", dir.join("coordinator.json"))
        .env("GLEANER_PASSWORD_FILE", dir.join("password"))
        .envs(args.coordinator_log.iter().map(|f| ("RUST_LOG", f)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out));
    let mut proc = CoordinatorProcess {
        child: c
            .spawn()
            .context("cannot start `gleaner coordinator run`")?,
        log,
    };
    let api = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(format!("{api}/healthz")).await.is_err() {
        proc.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "the coordinator did not answer within 60 s; the end of {}:\n{}",
                proc.log.display(),
                proc.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((proc, api))
}

async fn configuration(
    args: &CoordinatorBench,
    anvil_bin: &Path,
    workers: usize,
    batch: u32,
) -> anyhow::Result<Row> {
    let redundancy = args
        .redundancy
        .min(u16::try_from(workers).unwrap_or(u16::MAX));
    if redundancy < args.redundancy {
        say(format_args!(
            "{workers} worker(s): redundancy {redundancy}, not {} (a worker holds at most one \
             replica of a task)",
            args.redundancy
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("gleaner-bench-coordinator-")
        .tempdir()?;
    let db = Db::create(args, dir.path(), workers).await?;
    let result = run_configuration(
        args,
        anvil_bin,
        Shape {
            workers,
            batch,
            redundancy,
        },
        dir.path(),
        &db,
    )
    .await;
    if let Err(e) = db.drop_database().await {
        say(format_args!("could not drop the bench database: {e:#}"));
    }
    if args.keep || result.is_err() {
        let kept = dir.keep();
        say(format_args!("kept {}", kept.display()));
    }
    result
}

/// What a configuration runs.
#[derive(Debug, Clone, Copy)]
struct Shape {
    workers: usize,
    batch: u32,
    redundancy: u16,
}

async fn run_configuration(
    args: &CoordinatorBench,
    anvil_bin: &Path,
    shape: Shape,
    dir: &Path,
    db: &Db,
) -> anyhow::Result<Row> {
    let Shape {
        workers,
        batch,
        redundancy,
    } = shape;
    let tasks = args.tasks;
    say(format_args!(
        "{workers} worker(s), batch {batch}, {tasks} tasks, redundancy {redundancy}, {}: \
         starting anvil",
        db.backend()
    ));
    let anvil = Anvil::at(anvil_bin)
        .try_spawn()
        .with_context(|| format!("cannot start anvil ({})", anvil_bin.display()))?;
    let keys: Vec<PrivateKeySigner> = anvil.keys().iter().map(|k| k.clone().into()).collect();
    let [admin, coordinator_key, verifier_key, requester] = [0, 1, 2, 3].map(|i| keys[i].clone());
    let admin_p = ProviderBuilder::new()
        .wallet(admin.clone())
        .connect_http(anvil.endpoint_url())
        .erased();
    let d = deploy(
        &admin_p,
        &DeployParams {
            admin: admin.address(),
            coordinator: coordinator_key.address(),
            verifier: verifier_key.address(),
            min_stake: tokens(100),
            unbonding_delay: 3600,
        },
    )
    .await
    .context("deploying the contracts (run scripts/build-contracts if the artifacts are stale)")?;
    let budget = tokens(1_000);
    confirm(
        "faucet",
        GleanerToken::new(d.token, &admin_p)
            .faucet(requester.address(), budget)
            .send()
            .await,
    )
    .await?;
    say(format_args!("funding and staking {workers} worker key(s)"));
    let worker_keys: Vec<PrivateKeySigner> =
        (0..workers).map(|_| PrivateKeySigner::random()).collect();
    stake_workers(&anvil, &d, &admin, &worker_keys).await?;

    let (mut coordinator, api) = start_coordinator(
        args,
        dir,
        &anvil,
        &d,
        &coordinator_key,
        verifier_key.address(),
        &db.url()?,
    )
    .await?;
    let db_bytes_empty = db.size().await?;
    let first_block = admin_p.get_block_number().await? + 1;
    let kinds = || Registry::new().with(SimKind);

    // The verifier, in-process, knowing only the simulated kind; its logs: warnings only.
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut vconfig =
        gleaner_verifier::Config::new(&api, anvil.endpoint().as_str(), d.market, kinds());
    vconfig.db_url = format!("sqlite://{}?mode=rwc", dir.join("verifier.db").display());
    vconfig.poll_interval = Duration::from_millis(200);
    let quiet = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .finish();
    // With --verify-after it waits until every replica is in.
    let (go, mut gate) = watch::channel(!args.verify_after);
    let mut verifier = {
        let stop = stop.clone();
        tokio::spawn(
            async move {
                if gate.wait_for(|go| *go).await.is_err() {
                    return Ok(());
                }
                gleaner_verifier::run(vconfig, verifier_key, async move {
                    stop.notified().await;
                })
                .await
            }
            .with_subscriber(quiet),
        )
    };

    // The job, through the requester library.
    let request = gleaner_requester::JobRequest {
        kind: KindId::from_static(sim::SIM),
        batch: 1,
        max_tokens: 1,
        sampling: None,
        chat: false,
        spot_checks: None,
        train: None,
    };
    let input = sim::input_file(tasks);
    let job = gleaner_requester::prepare(&kinds(), &request, &input)?;
    let outputs: Arc<Vec<Vec<u8>>> = Arc::new(
        input
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(sim::output)
            .collect(),
    );
    let client = Client::new(&api)?;
    let requester_p = ProviderBuilder::new()
        .wallet(requester.clone())
        .connect_http(anvil.endpoint_url());
    say(format_args!("submitting a job of {tasks} tasks"));
    let submitted = gleaner_requester::submit(
        &client,
        &requester_p,
        &requester,
        d.market,
        &job,
        redundancy,
        budget,
        unix_now() + 24 * 3600,
        |_| {},
    )
    .await
    .context("submitting the job")?;
    let job_id = submitted.job_id;

    // Workers sign in (EIP-712, stake checked on-chain) before the clock starts.
    let info = client.info().await?;
    let domain = eip712::domain(info.chain_id, info.market);
    let capabilities = Capabilities {
        adapter: "sim".into(),
        backend: "none".into(),
        memory_bytes: 0,
        gflops: 1.0,
        kinds: vec![KindId::from_static(sim::SIM)],
    };
    let mut signing_in = tokio::task::JoinSet::new();
    for signer in worker_keys {
        let (api, domain, caps) = (api.clone(), domain.clone(), capabilities.clone());
        signing_in.spawn(async move {
            let mut client = Client::new(&api)?;
            client
                .sign_in(&signer, &domain, caps, Duration::from_secs(600))
                .await?;
            anyhow::Ok(SimWorker {
                signer,
                client,
                domain,
                batch,
            })
        });
    }
    let mut sim_workers = Vec::with_capacity(workers);
    while let Some(w) = signing_in.join_next().await {
        sim_workers.push(w?.context("a worker's sign-in")?);
    }

    // Wait for the root to be posted, then go.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = client.job_status(job_id).await?;
        if st.state == JobState::Posted {
            break;
        }
        if st.state.is_terminal() || Instant::now() > deadline {
            bail!("job {job_id} is {} instead of posted", st.state);
        }
        coordinator.check_alive()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (done_tx, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        results: AtomicU64::new(0),
        leases: AtomicU64::new(0),
        target: u64::from(tasks) * u64::from(redundancy),
        last_result_ns: AtomicU64::new(0),
        alive: AtomicU64::new(workers as u64),
        done: done_tx,
    });
    let (start_tx, start_rx) = watch::channel(None);
    let mut running = tokio::task::JoinSet::new();
    for w in sim_workers {
        let (start, shared, outputs) = (start_rx.clone(), shared.clone(), outputs.clone());
        running.spawn(async move {
            let s = simulate(w, start, shared.clone(), outputs).await;
            shared.alive.fetch_sub(1, Ordering::Relaxed);
            s
        });
    }
    let pid = coordinator.child.id();
    let ticks = clock_ticks();
    say(format_args!(
        "job {job_id} posted: {workers} worker(s) running {} replicas",
        shared.target
    ));
    let cpu0 = cpu_secs(pid, ticks)?;
    let t0 = Instant::now();
    start_tx.send_replace(Some(t0));

    // Progress and the stall watchdog, until every replica is in.
    let mut done = shared.done.subscribe();
    let mut last = (0, Instant::now());
    let mut stalled = None;
    loop {
        tokio::select! {
            _ = done.wait_for(|d| *d) => break,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let n = shared.results.load(Ordering::Relaxed);
        say(format_args!(
            "  {n}/{} results, {:.0}/s",
            shared.target,
            n as f64 / t0.elapsed().as_secs_f64()
        ));
        if n > last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > STALL {
            stalled = Some(format!(
                "no result for {} s ({n}/{} in)",
                STALL.as_secs(),
                shared.target
            ));
            shared.done.send_replace(true);
            break;
        }
        if shared.alive.load(Ordering::Relaxed) == 0 || coordinator.check_alive().is_err() {
            shared.done.send_replace(true);
            break;
        }
    }
    let cpu1 = cpu_secs(pid, ticks)?;
    let wall = t0.elapsed();
    let mut samples = Vec::with_capacity(workers);
    while let Some(s) = running.join_next().await {
        samples.push(s?);
    }
    coordinator.check_alive()?;
    let results = shared.results.load(Ordering::Relaxed);
    let errors: u64 = samples.iter().map(|s| s.errors).sum();
    let first_error = samples.iter().find_map(|s| s.first_error.clone());
    if let Some(why) = stalled.or_else(|| {
        (results < shared.target).then(|| format!("the workers stopped at {results} results"))
    }) {
        bail!(
            "{why}; {errors} failed requests, the first: {}; the end of {}:\n{}",
            first_error.as_deref().unwrap_or("none"),
            coordinator.log.display(),
            coordinator.log_tail()
        );
    }
    let secs = (shared.last_result_ns.load(Ordering::Relaxed) as f64 / 1e9).max(1e-9);
    let leases = shared.leases.load(Ordering::Relaxed);

    // Decisions and settlement.
    say("every replica is in: waiting for the verifier to decide and settle");
    go.send_replace(true);
    let last_result = t0 + Duration::from_secs_f64(secs);
    let mut progress = (0, Instant::now());
    let mut printed = Instant::now();
    let settled = loop {
        let st = client.job_status(job_id).await?;
        // Settled on-chain (the watcher may see it first) and reported (the report is what
        // the audit reads).
        if st.state == JobState::Settled && st.report_hash.is_some() {
            break true;
        }
        if st.state.is_terminal() && st.state != JobState::Settled {
            bail!("job {job_id} ended {} instead of settled", st.state);
        }
        if verifier.is_finished() {
            let ended = (&mut verifier).await?;
            bail!("the verifier stopped: {ended:?}");
        }
        coordinator.check_alive()?;
        let decided = st.tasks_accepted + st.tasks_failed;
        if decided > progress.0 {
            progress = (decided, Instant::now());
        } else if progress.1.elapsed() > STALL {
            bail!(
                "no decision for {} s ({decided}/{tasks} decided)",
                STALL.as_secs()
            );
        }
        if printed.elapsed() >= Duration::from_secs(5) {
            say(format_args!("  {decided}/{tasks} tasks decided"));
            printed = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let settle_secs = last_result.elapsed().as_secs_f64();
    let db_bytes = db.size().await?;
    let peak_rss = peak_rss_mib(pid);
    let last_block = admin_p.get_block_number().await?;
    let gas = gas_by_function(&admin_p, first_block, last_block).await?;
    let gas_total: u64 = gas.values().map(|g| g.gas).sum();
    let audit = gleaner_audit::audit_job(&admin_p, d.market, &client, job_id, 0)
        .await
        .context("auditing the job")?;
    let audit = if audit.ok() {
        "OK".to_owned()
    } else {
        audit
            .differences
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    stop.notify_waiters();
    match tokio::time::timeout(Duration::from_secs(10), &mut verifier).await {
        Ok(r) => r?.context("the verifier")?,
        Err(_) => verifier.abort(),
    }
    drop(coordinator);

    let mut latencies = BTreeMap::new();
    let all = |f: fn(&Samples) -> &Vec<Duration>| -> Vec<Duration> {
        samples.iter().flat_map(|s| f(s).iter().copied()).collect()
    };
    latencies.insert("lease", Latency::of(all(|s| &s.lease)));
    latencies.insert("blob_put", Latency::of(all(|s| &s.put)));
    latencies.insert("result", Latency::of(all(|s| &s.result)));
    latencies.insert("round_trip", Latency::of(all(|s| &s.round_trip)));
    let row = Row {
        backend: db.backend(),
        workers,
        batch,
        tasks,
        redundancy,
        verifier: if args.verify_after {
            "after"
        } else {
            "concurrent"
        },
        secs,
        round_trips_per_s: results as f64 / secs,
        leases_per_s: leases as f64 / secs,
        results_per_s: results as f64 / secs,
        latencies,
        empty_leases: samples.iter().map(|s| s.empty).sum(),
        errors,
        coordinator_cpu_pct: 100.0 * (cpu1 - cpu0) / wall.as_secs_f64(),
        coordinator_peak_rss_mib: peak_rss,
        db_bytes,
        db_bytes_empty,
        db_bytes_per_task: db_bytes.saturating_sub(db_bytes_empty) as f64 / f64::from(tasks),
        gas,
        gas_total,
        gas_per_task: gas_total as f64 / f64::from(tasks),
        settle_secs,
        settled,
        audit,
    };
    say(format_args!(
        "{workers} worker(s), batch {batch}: {:.0} round trips/s, coordinator CPU {:.0}%, {:.0} gas/task, \
         settled {settle_secs:.1} s after the last result, audit {}",
        row.round_trips_per_s, row.coordinator_cpu_pct, row.gas_per_task, row.audit
    ));
    Ok(row)
}

fn print_table(rows: &[Row]) {
    let lat = |r: &Row, k: &str| {
        r.latencies.get(k).map_or_else(String::new, |l| {
            format!("{:.1}/{:.1}/{:.0}", l.p50_ms, l.p99_ms, l.max_ms)
        })
    };
    println!(
        "{:<8} {:>7} {:>5} {:>6} {:>3} {:>9} {:>8} {:>9} {:>17} {:>17} {:>17} {:>6} {:>9} {:>8} {:>8} {:>5}",
        "backend",
        "workers",
        "batch",
        "tasks",
        "red",
        "rtrips/s",
        "leases/s",
        "results/s",
        "lease ms p50/99/max",
        "put ms p50/99/max",
        "result ms p50/99/max",
        "cpu%",
        "db B/task",
        "gas/task",
        "settle s",
        "audit"
    );
    for r in rows {
        println!(
            "{:<8} {:>7} {:>5} {:>6} {:>3} {:>9.1} {:>8.1} {:>9.1} {:>17} {:>17} {:>17} {:>6.0} {:>9.0} {:>8.0} {:>8.1} {:>5}",
            r.backend,
            r.workers,
            r.batch,
            r.tasks,
            r.redundancy,
            r.round_trips_per_s,
            r.leases_per_s,
            r.results_per_s,
            lat(r, "lease"),
            lat(r, "blob_put"),
            lat(r, "result"),
            r.coordinator_cpu_pct,
            r.db_bytes_per_task,
            r.gas_per_task,
            r.settle_secs,
            r.audit
        );
    }
    if let Some(r) = rows.last() {
        let parts: Vec<String> = r
            .gas
            .iter()
            .map(|(f, g)| format!("{f} {}x {}", g.txs, g.gas))
            .collect();
        println!(
            "gas of the last job ({} tasks): {} = {} in all",
            r.tasks,
            parts.join(", "),
            r.gas_total
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_sample_at_or_above_the_rank() {
        let ms = |n: u64| Duration::from_millis(n);
        let l = Latency::of((1..=100).rev().map(ms).collect());
        assert_eq!(
            (l.count, l.p50_ms, l.p99_ms, l.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        let one = Latency::of(vec![ms(7)]);
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (7.0, 7.0, 7.0));
        assert_eq!(Latency::of(Vec::new()).count, 0);
    }

    #[test]
    fn transactions_are_named_by_selector() {
        let call = JobMarket::postTasksCall {
            jobId: U256::from(1),
            tasksRoot: Default::default(),
            count: 3,
        };
        assert_eq!(function_name(&call.abi_encode()), "postTasks");
        assert_eq!(function_name(&[1, 2]), "other");
    }

    #[test]
    fn proc_stat_is_read_past_a_command_name_with_spaces() {
        let pid = std::process::id();
        assert!(cpu_secs(pid, clock_ticks()).unwrap() >= 0.0);
        assert!(peak_rss_mib(pid) > 0.0);
    }
}
