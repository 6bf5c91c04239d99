//! Gleaner verifier: compare replicas, decide tasks, settle jobs and slash cheaters on-chain.
//!
//! How the parts fit (DESIGN.md, "The job, end to end" step 4):
//!
//! - [`decide`](decide()) (pure): check each replica's signature and blob, cluster the outputs
//!   with the embed comparator, accept the heaviest cluster that reaches quorum, else ask for
//!   more replicas, else fail; [`aggregate`] makes the accepted output (seed 4.1.3).
//! - [`reputation`] (pure): each worker's confidence P_i in basis points, updated per decided task.
//! - [`build_report`] (pure): units per worker (seed 4.1.4), slashes and the
//!   [`SettlementReport`](gleaner_protocol::report::SettlementReport); [`SettlementPlan`] is
//!   what the contract is told; [`evidence_hash`] binds each slash to the report.
//! - [`settle_and_slash`]: the transactions, idempotent across restarts.
//! - [`Store`]: reputations, decisions and fixed reports (SQLite or PostgreSQL via sqlx Any).
//! - [`Client`]: the coordinator's HTTP API; [`run`]: the service loop that ties it together.
//!
//! ```no_run
//! # async fn demo(signer: alloy::signers::local::PrivateKeySigner) -> gleaner_verifier::Result<()> {
//! use gleaner_verifier::{Config, run};
//! let market = "0x5FbDB2315678afecb367f032d93F642f64180aa3".parse().unwrap();
//! let config = Config::new("http://127.0.0.1:8080", "http://127.0.0.1:8545", market);
//! run(config, signer, async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod chain;
mod client;
mod decide;
mod error;
pub mod reputation;
mod service;
mod settlement;
mod store;

pub use chain::{ChainOutcome, SlashOutcome, settle_and_slash};
pub use client::Client;
pub use decide::{
    Checked, Cluster, EMBED_TENSOR, Fetched, Matrix, Policy, Replica, Verdict, accepted_blob,
    aggregate, attributed, check_generations, check_output, check_replica, cluster, decide,
    signature_valid,
};
pub use error::{Error, Result};
pub use service::{Config, run};
pub use settlement::{
    JobContext, MAX_SETTLEMENT_CHUNK, SettlementPlan, TaskRecord, build_report, evidence_hash,
    report_blob,
};
pub use store::Store;
