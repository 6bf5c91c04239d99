//! The Gleaner coordinator: HTTP API, store, scheduler and chain watcher.
//!
//! - `http/`: [`app`] is the axum router of the API in `gleaner_protocol::api`, over an
//!   [`AppState`] (a [`Store`], a [`Chain`] and [`ApiSettings`]), one module per resource.
//!   Tests drive it in-process with `oneshot`.
//! - `db/`: [`Store`] is one sqlx `Any` code path for SQLite (default) and PostgreSQL, with
//!   embedded migrations, one module per table family; every multi-step write is a
//!   transaction, so nothing accepted is lost on a crash. States are enums ([`JobState`],
//!   [`TaskState`], [`ReplicaState`]) that the database's CHECK constraints mirror.
//! - [`scheduler`] decides how many leases a worker may hold (speed-proportional shares).
//! - `chain/`: the reader ([`RpcChain`]), the [`Watcher`] (ingests JobMarket events after N
//!   confirmations, survives reorgs, derives job states) and the [`Poster`] (`postTasks`, once
//!   per job). The watcher shares only the store, a wake-up `Notify` and the [`Metrics`].
//! - `server`: [`serve_http`] is the accept loop (hyper's HTTP/1 over the router) with the
//!   limits on connections: a header-read timeout that also closes idle keep-alive connections,
//!   a cap on concurrent connections (503 beyond it), a write timeout and a bounded graceful
//!   shutdown ([`ServerSettings`]).
//! - `explorer/`: the read-only web pages at `/` ([`Explorer`]): jobs, tasks, workers and
//!   money, live; money from chain events and the published report, progress from the store.
//!   `gleaner explorer` serves the same pages apart from the coordinator ([`serve_explorer`]).
//! - [`serve`] wires it all: binds, migrates, spawns the watcher (whose failure stops the
//!   service) and serves the API and the explorer until shutdown.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod cache;
mod chain;
mod db;
mod error;
mod explorer;
mod http;
mod metrics;
pub mod scheduler;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use alloy::signers::local::PrivateKeySigner;

pub use cache::BoundedCache;
pub use chain::{BoxFuture, Chain, OnChainJob, Poster, RpcChain, Watcher, WatcherConfig};
pub use db::{
    BlobUses, ChainEvent, DbKind, ExplorerJob, ExplorerReplica, ExplorerTask, ExplorerWorker,
    JobEvent, JobRow, LeasedTask, NewTask, QueueStats, ReplicaRow, ReplicaState, ReviewTask, Store,
    TaskRow, TaskState, WriterCpu, set_writer_cpu,
};
pub use error::{Error, Result};
pub use explorer::{
    Distance, Explorer, ExplorerConfig, JobData, NetworkData, ReplicaData, WorkerData,
    serve_explorer,
};
pub use gleaner_protocol::api::JobState;
pub use http::{
    ApiSettings, AppState, DEFAULT_MAX_REPORT_BYTES, MAX_EXPIRY_AHEAD_SECS, MAX_HEADER_BYTES,
    MAX_HEADERS, MAX_WAIT_MS, app,
};
pub use metrics::Metrics;
pub use server::{ServerSettings, serve_http};

/// Everything `gleaner coordinator run` configures.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `sqlite://PATH?mode=rwc` or `postgres://...`.
    pub database_url: String,
    /// Most database connections (`None`: 1 for SQLite, 16 for PostgreSQL).
    pub db_pool_size: Option<u32>,
    /// SQLite: the CPU the store's writer runs on ([`WriterCpu`]).
    pub sqlite_writer_cpu: WriterCpu,
    /// The HTTP API's settings (leases, sessions, limits, the verifier).
    pub api: ApiSettings,
    /// The HTTP server's settings (header timeout, connection cap, shutdown grace).
    pub server: ServerSettings,
    /// The chain watcher's settings (RPC, market, confirmations, polling, reorgs).
    pub watcher: WatcherConfig,
}

/// Runs the coordinator until `shutdown` resolves or the chain watcher fails. On shutdown, no
/// new connection is accepted and in-flight requests have [`ServerSettings::shutdown_grace`] to
/// finish.
pub async fn serve(
    config: CoordinatorConfig,
    signer: PrivateKeySigner,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    set_writer_cpu(config.sqlite_writer_cpu)
        .map_err(|why| Error::BadRequest(format!("--sqlite-writer-cpu: {why}")))?;
    let store = Store::connect_with(&config.database_url, config.db_pool_size).await?;
    let (chain, info) = RpcChain::connect(
        &config.watcher.rpc_url,
        config.watcher.market,
        config.api.max_blob_bytes,
    )
    .await?;
    let state = AppState::new(store.clone(), Arc::new(chain), info, config.api.clone());
    let explorer = ExplorerConfig {
        rpc_url: config.watcher.rpc_url.clone(),
        market: config.watcher.market,
        from_block: config.watcher.from_block,
        coordinator_url: self_url(config.listen),
    };
    let explorer = Explorer::for_store(store.clone(), config.api.active_secs(), &explorer).await?;
    let watcher = Watcher::new(
        store.clone(),
        state.work_notifier(),
        config.watcher.clone(),
        signer,
    )?
    .with_metrics(state.shared_metrics());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            Error::BadRequest(format!(
                "cannot listen on {}: {e}; choose another --listen address",
                config.listen
            ))
        })?;
    tracing::info!(target: "coordinator", addr = %config.listen, db = ?store.kind(), "listening");
    tracing::info!(target: "coordinator", url = %format!("{}/", self_url(config.listen)), "explorer");
    let router = app(state)
        .merge(explorer.router())
        .layer(tower_http::trace::TraceLayer::new_for_http());
    // The watcher is critical: if it ends, the service ends (reth's spawn_critical_task).
    let watcher = Arc::new(watcher);
    let mut watching = tokio::spawn({
        let watcher = watcher.clone();
        async move { watcher.run().await }
    });
    let server = serve_http(listener, router, config.server.clone(), shutdown);
    let result = tokio::select! {
        () = server => Ok(()),
        r = &mut watching => match r {
            Ok(Ok(())) => Err(Error::Internal("chain watcher stopped".into())),
            Ok(Err(e)) => Err(Error::Internal(format!("chain watcher failed: {e}"))),
            Err(e) => Err(Error::Internal(format!("chain watcher panicked: {e}"))),
        },
    };
    watching.abort();
    // Hand the lead over at once rather than after its lease runs out.
    if let Err(e) = watcher.resign().await {
        tracing::warn!(target: "coordinator", error = %e, "could not give up the lead");
    }
    store.close().await;
    result
}

/// The URL this process reaches itself at: the listen address, loopback when it listens on
/// every interface.
fn self_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}
