//! `gleaner coordinator`.

use std::net::SocketAddr;
use std::time::Duration;

use alloy::primitives::Address;
use anyhow::Context;
use clap::{Args, Subcommand};
use gleaner_coordinator::{MAX_EXPIRY_AHEAD_SECS, MAX_WAIT_MS, WatcherConfig};

use crate::common::{ChainArgs, HomeArgs, KeyArgs, runtime};

/// The coordinator: HTTP API, store, scheduler and chain watcher.
///
/// It stores blobs and job manifests, posts each registered job's task root on-chain (its key
/// needs COORDINATOR_ROLE on the market), leases replicas to staked workers in proportion to
/// their measured speed, and serves the verifier. State lives in SQLite by default or in
/// PostgreSQL (several coordinators may share one); a restart loses nothing accepted.
///
/// Examples:
///   gleaner coordinator run --market 0x5FbD...0aa3 --keystore coordinator.json
///   gleaner coordinator run --listen 0.0.0.0:8080 --rpc-url http://anvil:8545 \
///     --market 0x5FbD...0aa3 --keystore coordinator.json --password-file pw.txt \
///     --database-url postgres://gleaner@db/gleaner --verifier 0x7099...79C8 --confirmations 0
#[derive(Debug, Subcommand)]
#[command(verbatim_doc_comment)]
pub enum CoordinatorCommand {
    /// Run the coordinator service until Ctrl-C.
    Run(RunArgs),
}

/// Options of `gleaner coordinator run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    chain: ChainArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// Address to serve the HTTP API on.
    #[arg(long, env = "GLEANER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Store: `sqlite://PATH?mode=rwc` or `postgres://USER@HOST/DB`
    /// [default: sqlite://<home>/coordinator.db?mode=rwc].
    #[arg(long, env = "GLEANER_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Blocks an event must be buried under before it counts (0 on a dev chain).
    #[arg(long, env = "GLEANER_CONFIRMATIONS", default_value_t = 2)]
    pub confirmations: u64,
    /// Seconds a lease lasts before its replica returns to the queue (the result expiry).
    #[arg(long, env = "GLEANER_LEASE_SECS", default_value_t = 120)]
    pub lease_secs: u64,
    /// Seconds a sign-in session lasts before the worker or verifier must sign in again.
    #[arg(long, env = "GLEANER_SESSION_SECS", default_value_t = 3600)]
    pub session_secs: u64,
    /// Largest accepted lead of a signed sign-in's or job registration's expiry over now, in
    /// seconds (a signature valid for longer is refused).
    #[arg(long, env = "GLEANER_MAX_EXPIRY_AHEAD_SECS", default_value_t = MAX_EXPIRY_AHEAD_SECS)]
    pub max_expiry_ahead_secs: u64,
    /// Longest lease long-poll a worker may ask for, in milliseconds.
    #[arg(long, env = "GLEANER_MAX_WAIT_MS", default_value_t = MAX_WAIT_MS)]
    pub max_wait_ms: u32,
    /// Workers seen within this many seconds share the work [default: the lease duration, at
    /// least 60].
    #[arg(long, env = "GLEANER_WORKER_ACTIVE_SECS")]
    pub worker_active_secs: Option<u64>,
    /// Most database connections [default: 1 for SQLite, 16 for PostgreSQL].
    #[arg(long, env = "GLEANER_DB_POOL_SIZE")]
    pub db_pool_size: Option<u32>,
    /// SQLite only: the CPU the store's single writer runs on. Its two threads (the writer's
    /// and sqlx's connection thread) pass every statement back and forth; on one CPU each
    /// pass is a switch, across two a wake-up, slow on virtual machines (`gleaner bench
    /// coordinator`, batch 64, on a 2-core VM: 13.9-18.7k round trips/s with `off`, 18.1-23.6k
    /// with `auto`). `auto`:
    /// the last CPU the process may use, when it may use two or more; `off`: wherever the
    /// system puts them; or a CPU number, which must be one the process may use.
    #[arg(long, env = "GLEANER_SQLITE_WRITER_CPU", default_value = "auto")]
    pub sqlite_writer_cpu: gleaner_coordinator::WriterCpu,
    /// Parsed job manifests kept in memory (least recently used ones are dropped).
    #[arg(long, env = "GLEANER_MANIFEST_CACHE", default_value_t = 1024)]
    pub manifest_cache: usize,
    /// Longest a request may take, its body included, in seconds (a lease's long-poll wait
    /// comes on top); slower clients get 408. A response the client does not read for this
    /// long is dropped too.
    #[arg(long, env = "GLEANER_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    pub request_timeout_secs: u64,
    /// Longest a client may take to send a request's line and headers, and longest a keep-alive
    /// connection may sit idle, in seconds; a client that started a request gets 408.
    #[arg(long, env = "GLEANER_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Most HTTP connections served at once; a connection beyond them is answered 503 (retry
    /// in a moment) and closed. Keep the open-file limit (`ulimit -n`) above it.
    #[arg(long, env = "GLEANER_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Largest blob (and request body) accepted, in bytes.
    #[arg(long, env = "GLEANER_MAX_BLOB_BYTES", default_value_t = 16 << 20)]
    pub max_blob_bytes: u64,
    /// Largest settlement report the verifier may upload, in bytes: a report grows with its
    /// job (~0.8 KB per replica), so it has its own limit.
    #[arg(long, env = "GLEANER_MAX_REPORT_BYTES",
          default_value_t = gleaner_coordinator::DEFAULT_MAX_REPORT_BYTES)]
    pub max_report_bytes: u64,
    /// The verifier's address: its sign-in gets the verifier role.
    #[arg(long, env = "GLEANER_VERIFIER_ADDRESS")]
    pub verifier: Option<Address>,
    /// Milliseconds between chain polls.
    #[arg(long, env = "GLEANER_POLL_MS", default_value_t = 1_000)]
    pub poll_ms: u64,
    /// First block the chain watcher reads (the market's deployment block).
    #[arg(long, env = "GLEANER_FROM_BLOCK", default_value_t = 0)]
    pub from_block: u64,
    /// Processed blocks the chain watcher re-checks each poll: the deepest reorg it notices.
    #[arg(long, env = "GLEANER_REORG_DEPTH", default_value_t = WatcherConfig::DEFAULT_REORG_DEPTH)]
    pub reorg_depth: u64,
    /// Most blocks the chain watcher asks logs for at once (lower it for RPCs that cap ranges).
    #[arg(long, env = "GLEANER_LOGS_RANGE", default_value_t = WatcherConfig::DEFAULT_LOGS_RANGE)]
    pub logs_range: u64,
    /// Several coordinators may share one PostgreSQL: one at a time follows the chain and
    /// posts roots. Seconds its lead lasts without renewal (another takes over after that
    /// when it dies; a clean shutdown hands over at once).
    #[arg(long, env = "GLEANER_LEADER_SECS", default_value_t = WatcherConfig::DEFAULT_LEADER_SECS)]
    pub leader_secs: u64,
    #[command(flatten)]
    home: HomeArgs,
}

impl RunArgs {
    fn config(&self) -> anyhow::Result<gleaner_coordinator::CoordinatorConfig> {
        let database_url = match &self.database_url {
            Some(u) => u.clone(),
            None => {
                let home = self.home.home();
                std::fs::create_dir_all(&home)
                    .with_context(|| format!("cannot create {}", home.display()))?;
                format!(
                    "sqlite://{}?mode=rwc",
                    home.join("coordinator.db").display()
                )
            }
        };
        Ok(gleaner_coordinator::CoordinatorConfig {
            listen: self.listen,
            database_url,
            db_pool_size: self.db_pool_size,
            sqlite_writer_cpu: self.sqlite_writer_cpu,
            api: gleaner_coordinator::ApiSettings {
                lease_secs: self.lease_secs.max(1),
                session_secs: self.session_secs.max(1),
                max_expiry_ahead_secs: self.max_expiry_ahead_secs,
                max_wait_ms: self.max_wait_ms,
                worker_active_secs: self.worker_active_secs,
                manifest_cache: self.manifest_cache,
                request_secs: self.request_timeout_secs.max(1),
                max_blob_bytes: self.max_blob_bytes,
                max_report_bytes: self.max_report_bytes,
                verifier: self.verifier,
            },
            server: gleaner_coordinator::ServerSettings {
                header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
                max_connections: self.max_connections.max(1),
                write_timeout: Duration::from_secs(self.request_timeout_secs.max(1)),
                ..gleaner_coordinator::ServerSettings::default()
            },
            watcher: WatcherConfig {
                rpc_url: self.chain.rpc_url.clone(),
                market: self.chain.market,
                confirmations: self.confirmations,
                poll_interval: Duration::from_millis(self.poll_ms.max(10)),
                from_block: self.from_block,
                reorg_depth: self.reorg_depth.max(1),
                logs_range: self.logs_range.max(1),
                leader_secs: self.leader_secs.max(1),
            },
        })
    }
}

pub(crate) fn run(cmd: CoordinatorCommand) -> anyhow::Result<()> {
    match cmd {
        CoordinatorCommand::Run(args) => {
            let config = args.config()?;
            let signer = args.key.signer()?;
            tracing::info!(coordinator = %signer.address(), market = %config.watcher.market, "starting coordinator");
            runtime()?
                .block_on(gleaner_coordinator::serve(config, signer, async {
                    let _ = tokio::signal::ctrl_c().await;
                }))
                .context("coordinator")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(subcommand)]
        cmd: CoordinatorCommand,
    }

    #[test]
    fn defaults() {
        let t = T::try_parse_from([
            "t",
            "run",
            "--market",
            "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "--keystore",
            "k.json",
        ])
        .unwrap();
        let CoordinatorCommand::Run(a) = t.cmd;
        assert_eq!(a.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            (a.confirmations, a.lease_secs, a.max_blob_bytes),
            (2, 120, 16 << 20)
        );
        assert!(a.verifier.is_none() && a.database_url.is_none());
        assert_eq!(
            (a.session_secs, a.max_expiry_ahead_secs, a.max_wait_ms),
            (3600, 600, 30_000)
        );
        assert_eq!((a.worker_active_secs, a.db_pool_size), (None, None));
        assert_eq!(a.sqlite_writer_cpu, gleaner_coordinator::WriterCpu::Auto);
        assert_eq!(
            (a.manifest_cache, a.reorg_depth, a.logs_range),
            (1024, 64, 1000)
        );
        let c = a.config().unwrap();
        // The API gets the same settings as before these were flags.
        let api = c.api;
        let before = gleaner_coordinator::ApiSettings::default();
        assert_eq!(
            (api.lease_secs, api.session_secs, api.max_expiry_ahead_secs),
            (
                before.lease_secs,
                before.session_secs,
                before.max_expiry_ahead_secs
            )
        );
        assert_eq!(
            (api.max_wait_ms, api.active_secs(), api.manifest_cache),
            (before.max_wait_ms, 120, before.manifest_cache)
        );
        assert_eq!(api.request_secs, before.request_secs);
        assert_eq!((a.header_timeout_secs, a.max_connections), (10, 1024));
        // The server too.
        let server = c.server;
        let before = gleaner_coordinator::ServerSettings::default();
        assert_eq!(
            (server.header_timeout, server.max_connections),
            (before.header_timeout, before.max_connections)
        );
        assert_eq!(
            (server.write_timeout, server.shutdown_grace),
            (before.write_timeout, before.shutdown_grace)
        );
        assert!(
            c.database_url.starts_with("sqlite://")
                && c.database_url.ends_with("coordinator.db?mode=rwc")
        );
    }
}
