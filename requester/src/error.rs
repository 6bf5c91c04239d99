//! Errors of the requester.

use alloy::primitives::U256;

/// What can go wrong for a requester.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request does not fit the kind or the protocol (bad input file, bad parameters).
    #[error(transparent)]
    Kind(#[from] gleaner_kinds::Error),
    /// A protocol value is malformed, or a transaction failed or reverted.
    #[error(transparent)]
    Protocol(#[from] gleaner_protocol::Error),
    /// Talking to the coordinator failed.
    #[error(transparent)]
    Client(#[from] gleaner_client::Error),
    /// A JSON-RPC call failed.
    #[error("chain: {0}")]
    Chain(String),
    /// The coordinator serves another deployment, or stored something else than was sent.
    #[error("{0}")]
    Mismatch(String),
    /// The requester's balance does not cover the budget.
    #[error("{who} holds {} tokens, the budget is {}", tokens(*have), tokens(*budget))]
    Funds {
        /// The requester.
        who: alloy::primitives::Address,
        /// Its balance.
        have: U256,
        /// The budget.
        budget: U256,
    },
    /// The job ended without being settled (cancelled, reclaimed, expired, failed).
    #[error("job {job_id} ended {state}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Ended {
        /// The job.
        job_id: U256,
        /// Its terminal state.
        state: gleaner_protocol::api::JobState,
        /// Why, when the coordinator says.
        reason: Option<String>,
    },
}

/// Result with the requester's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A chain error, with what was being asked.
pub(crate) fn chain(what: &'static str) -> impl Fn(alloy::contract::Error) -> Error {
    move |e| Error::Chain(format!("{what}: {e}"))
}

/// Base units as whole tokens (18 decimals).
fn tokens(v: U256) -> String {
    alloy::primitives::utils::format_units(v, 18).unwrap_or_else(|_| v.to_string())
}
