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
//! - [`serve`] wires it all: binds, migrates, spawns the watcher (whose failure stops the
//!   service) and serves until shutdown.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod cache;
mod chain;
mod db;
mod error;
mod http;
mod metrics;
pub mod scheduler;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;

pub use cache::BoundedCache;
pub use chain::{BoxFuture, Chain, OnChainJob, Poster, RpcChain, Watcher, WatcherConfig};
pub use db::{
    ChainEvent, DbKind, JobEvent, JobRow, LeasedTask, NewTask, QueueStats, ReplicaRow,
    ReplicaState, Store, TaskRow, TaskState,
};
pub use error::{Error, Result};
pub use gleaner_protocol::api::JobState;
pub use http::{ApiSettings, AppState, MAX_EXPIRY_AHEAD_SECS, MAX_WAIT_MS, app};
pub use metrics::Metrics;

/// Everything `gleaner coordinator run` configures.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `sqlite://PATH?mode=rwc` or `postgres://...`.
    pub database_url: String,
    /// Most database connections (`None`: 1 for SQLite, 16 for PostgreSQL).
    pub db_pool_size: Option<u32>,
    /// JSON-RPC endpoint.
    pub rpc_url: String,
    /// JobMarket address.
    pub market: Address,
    /// Confirmations before an event counts.
    pub confirmations: u64,
    /// Lease duration in seconds (a result not in by then: the replica goes back to the queue).
    pub lease_secs: u64,
    /// Session (sign-in) lifetime in seconds.
    pub session_secs: u64,
    /// How far ahead a signed sign-in or registration's expiry may be, in seconds.
    pub max_expiry_ahead_secs: u64,
    /// Longest lease long-poll, in milliseconds.
    pub max_wait_ms: u32,
    /// Workers seen within this many seconds share the work (`None`: max(lease, 60 s)).
    pub worker_active_secs: Option<u64>,
    /// Parsed job manifests kept in memory.
    pub manifest_cache: usize,
    /// Longest a request may take besides a long-poll wait (see [`ApiSettings::request_secs`]).
    pub request_secs: u64,
    /// Largest blob in bytes.
    pub max_blob_bytes: u64,
    /// The verifier's address.
    pub verifier: Option<Address>,
    /// Pause between chain polls.
    pub poll_interval: Duration,
    /// First block the watcher reads.
    pub from_block: u64,
    /// Stored blocks re-checked for a reorg each poll.
    pub reorg_depth: u64,
    /// Most blocks per `eth_getLogs`.
    pub logs_range: u64,
}

impl CoordinatorConfig {
    /// The API's part of the config.
    pub fn api_settings(&self) -> ApiSettings {
        ApiSettings {
            lease_secs: self.lease_secs,
            max_blob_bytes: self.max_blob_bytes,
            verifier: self.verifier,
            session_secs: self.session_secs,
            max_expiry_ahead_secs: self.max_expiry_ahead_secs,
            max_wait_ms: self.max_wait_ms,
            worker_active_secs: self.worker_active_secs,
            manifest_cache: self.manifest_cache,
            request_secs: self.request_secs,
        }
    }

    /// The watcher's part of the config.
    pub fn watcher_config(&self) -> WatcherConfig {
        WatcherConfig {
            rpc_url: self.rpc_url.clone(),
            market: self.market,
            confirmations: self.confirmations,
            poll_interval: self.poll_interval,
            from_block: self.from_block,
            reorg_depth: self.reorg_depth,
            logs_range: self.logs_range,
        }
    }
}

/// Runs the coordinator until `shutdown` resolves or the chain watcher fails.
pub async fn serve(
    config: CoordinatorConfig,
    signer: PrivateKeySigner,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let store = Store::connect_with(&config.database_url, config.db_pool_size).await?;
    let (chain, info) =
        RpcChain::connect(&config.rpc_url, config.market, config.max_blob_bytes).await?;
    let state = AppState::new(store.clone(), Arc::new(chain), info, config.api_settings());
    let watcher = Watcher::new(
        store.clone(),
        state.work_notifier(),
        config.watcher_config(),
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
    let router = app(state).layer(tower_http::trace::TraceLayer::new_for_http());
    // The watcher is critical: if it ends, the service ends (reth's spawn_critical_task).
    let mut watcher = tokio::spawn(watcher.run());
    let server = axum::serve(listener, router).with_graceful_shutdown(shutdown);
    let result = tokio::select! {
        r = server => r.map_err(|e| Error::Internal(format!("server: {e}"))),
        r = &mut watcher => match r {
            Ok(Ok(())) => Err(Error::Internal("chain watcher stopped".into())),
            Ok(Err(e)) => Err(Error::Internal(format!("chain watcher failed: {e}"))),
            Err(e) => Err(Error::Internal(format!("chain watcher panicked: {e}"))),
        },
    };
    watcher.abort();
    store.close().await;
    result
}
