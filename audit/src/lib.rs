//! The auditor's role: anyone can rebuild a job's settlement from chain events and the report
//! the verifier published, and see whether it holds.
//!
//! [`audit_job`] replays the job's events (read in bounded block ranges), fetches the
//! settlement report by its sha256 from the coordinator (hash-checked), checks it against the
//! on-chain report hash (keccak256), spec hash and task root, re-verifies every replica
//! signature, recomputes each worker's units with the contribution formula and each payout
//! with the payout formula ([`gleaner_protocol::report::SettlementReport::recompute`], the same
//! function the verifier pays with), and returns every [`Difference`] it finds: none means OK.
//! [`events`] lists the market's and registry's events.
//!
//! Nothing here trusts the coordinator: the report it serves must hash to what the chain
//! holds, and every amount is recomputed from chain values with checked arithmetic.
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod difference;
mod events;
mod job;

pub use difference::Difference;
pub use events::{EventLine, events};
pub use job::{AuditReport, WorkerLine, audit_job};

/// What stops an audit before it can compare anything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A JSON-RPC request failed.
    #[error("chain: {0}")]
    Chain(String),
    /// The coordinator could not serve the report.
    #[error(transparent)]
    Client(#[from] gleaner_client::Error),
    /// A value is malformed (the report does not parse, a formula's input is out of range).
    #[error(transparent)]
    Protocol(#[from] gleaner_protocol::Error),
    /// The job is not in a state that can be audited (not created, not settled).
    #[error("{0}")]
    NotAuditable(String),
    /// The job is settled on-chain but the coordinator has not been told its report yet (the
    /// verifier names it after its settlement and slash transactions): ask again shortly.
    #[error("job {0} is settled on-chain but the coordinator has no report for it yet")]
    ReportPending(alloy::primitives::U256),
}

/// Result with the audit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A chain error, with what was being asked.
pub(crate) fn chain(what: &'static str) -> impl Fn(alloy::contract::Error) -> Error {
    move |e| Error::Chain(format!("{what}: {e}"))
}
