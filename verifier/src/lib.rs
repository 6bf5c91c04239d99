//! Gleaner verifier: compare replicas, decide tasks, settle jobs and slash cheaters on-chain.
//!
//! How the parts fit (DESIGN.md, "The job, end to end" step 4):
//!
//! - [`decide`](decide()) (pure): check each replica's signature and blob, let the task's kind
//!   ([`gleaner_kinds::TaskKind`]) check its output, cluster the outputs with the kind's
//!   comparator, accept the heaviest cluster that reaches quorum, else ask for more replicas,
//!   else fail; [`accepted_blob`] asks the kind for the accepted output (embed: seed 4.1.3).
//! - [`reputation`] (pure): each worker's confidence P_i in basis points, updated per decided task,
//!   and its trust streak evidence; [`single`] and [`provisional_verdict`]: a lone first replica
//!   in a job with spot checks ([`gleaner_protocol::replication`]).
//! - [`sim`]: the economic simulator behind `gleaner sim`, run through the code above.
//! - [`build_report`] (pure): units per worker (seed 4.1.4), slashes and the
//!   [`SettlementReport`](gleaner_protocol::report::SettlementReport); [`SettlementPlan`] is
//!   what the contract is told; [`evidence_hash`] binds each slash to the report.
//! - [`settle_and_slash`]: the transactions, idempotent across restarts.
//! - [`Store`]: reputations, decisions and fixed reports (SQLite or PostgreSQL via sqlx Any).
//! - [`run`]: the service loop that ties it together, talking to the coordinator through
//!   [`gleaner_client::Client`].
//!
//! ```no_run
//! # async fn demo(signer: alloy::signers::local::PrivateKeySigner) -> gleaner_verifier::Result<()> {
//! use gleaner_verifier::{Config, run};
//! let market = "0x5FbDB2315678afecb367f032d93F642f64180aa3".parse().unwrap();
//! let kinds = gleaner_kinds::Registry::new(); // the kinds it can check, e.g. Registry::standard
//! let config = Config::new("http://127.0.0.1:8080", "http://127.0.0.1:8545", market, kinds);
//! run(config, signer, async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod chain;
mod decide;
mod error;
pub mod reputation;
mod service;
mod settlement;
pub mod sim;
mod store;

pub use chain::{
    ChainOutcome, SlashOutcome, commitment_in_block, settle_and_slash, settle_and_slash_in_chunks,
};
pub use decide::{
    Cluster, Fetched, Policy, Replica, Single, Verdict, accepted_blob, attributed, cluster, decide,
    provisional_verdict, signature_valid, single,
};
pub use error::{Error, Result};
pub use gleaner_kinds::Checked;
pub use service::{Config, run};
pub use settlement::{
    JobContext, MAX_SETTLEMENT_CHUNK, SettlementPlan, TaskRecord, build_report, evidence_hash,
    report_blob,
};
pub use store::Store;
