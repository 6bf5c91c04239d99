//! The Gleaner coordinator: HTTP API, store, scheduler and chain watcher.
//!
//! - [`app`] is the axum router of the API in `gleaner_protocol::api`, over an [`AppState`]
//!   (a [`Store`], a [`Chain`] and settings). Tests drive it in-process with `oneshot`.
//! - [`Store`] is one sqlx `Any` code path for SQLite (default) and PostgreSQL, with embedded
//!   migrations; every multi-step write is a transaction, so nothing accepted is lost on a crash.
//! - [`scheduler`] decides how many leases a worker may hold (speed-proportional shares).
//! - [`Watcher`] ingests JobMarket events after N confirmations, survives reorgs, and posts each
//!   registered job's task root once.
//! - [`serve`] wires it all: binds, migrates, spawns the watcher (whose failure stops the
//!   service) and serves until shutdown.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod api;
mod chain;
mod error;
mod metrics;
pub mod scheduler;
mod store;
mod watcher;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;

pub use api::{ApiSettings, AppState, MAX_EXPIRY_AHEAD_SECS, MAX_WAIT_MS, app};
pub use chain::{BoxFuture, Chain, OnChainJob, RpcChain};
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use store::{
    ChainEvent, DbKind, JobRow, LeasedTask, NewTask, QueueStats, ReplicaRow, Store, TaskRow,
    job_state,
};
pub use watcher::{Watcher, WatcherConfig};

/// Everything `gleaner coordinator run` configures.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `sqlite://PATH?mode=rwc` or `postgres://...`.
    pub database_url: String,
    /// JSON-RPC endpoint.
    pub rpc_url: String,
    /// JobMarket address.
    pub market: Address,
    /// Confirmations before an event counts.
    pub confirmations: u64,
    /// Lease duration in seconds.
    pub lease_secs: u64,
    /// Largest blob in bytes.
    pub max_blob_bytes: u64,
    /// The verifier's address.
    pub verifier: Option<Address>,
    /// Pause between chain polls.
    pub poll_interval: Duration,
    /// First block the watcher reads.
    pub from_block: u64,
}

/// Runs the coordinator until `shutdown` resolves or the chain watcher fails.
pub async fn serve(
    config: CoordinatorConfig,
    signer: PrivateKeySigner,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let store = Store::connect(&config.database_url).await?;
    let (chain, info) =
        RpcChain::connect(&config.rpc_url, config.market, config.max_blob_bytes).await?;
    let settings = ApiSettings {
        lease_secs: config.lease_secs,
        max_blob_bytes: config.max_blob_bytes,
        verifier: config.verifier,
        ..ApiSettings::default()
    };
    let state = AppState::new(store.clone(), Arc::new(chain), info, settings);
    let watcher = Watcher::new(
        state.clone(),
        WatcherConfig {
            rpc_url: config.rpc_url.clone(),
            market: config.market,
            confirmations: config.confirmations,
            poll_interval: config.poll_interval,
            from_block: config.from_block,
        },
        signer,
    )?;
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
