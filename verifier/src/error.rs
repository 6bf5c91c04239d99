//! Errors of the verifier.

/// Something the verifier could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A protocol value was malformed or a checked computation overflowed.
    #[error(transparent)]
    Protocol(#[from] gleaner_protocol::Error),
    /// The coordinator could not be reached or answered 5xx; retried with backoff.
    #[error("coordinator unreachable or failing: {0}")]
    CoordinatorUnavailable(String),
    /// The coordinator refused a request (4xx); the message is its [`ApiError`](gleaner_protocol::api::ApiError).
    #[error("coordinator refused {what}: {status} {message}")]
    CoordinatorRefused {
        /// The request.
        what: String,
        /// HTTP status.
        status: u16,
        /// The coordinator's explanation.
        message: String,
    },
    /// A JSON-RPC call or transaction failed (node unreachable, reverted, not mined).
    #[error("chain: {0}")]
    Chain(String),
    /// The chain disagrees with what the coordinator or the report says (spec hash, task root,
    /// a settlement with another report): settling would be wrong, so the job is left alone.
    #[error("chain state conflicts with the job: {0}")]
    Conflict(String),
    /// The verifier's own store failed.
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    /// The store's schema could not be migrated.
    #[error("store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The verifier's model (for generate checks) failed to load or run: its own problem,
    /// never held against a worker. A missing file names `scripts/setup`.
    #[error("model: {0}")]
    Model(#[from] gleaner_models::Error),
    /// A job or task the verifier cannot handle (unknown kind, inconsistent data).
    #[error("invalid: {0}")]
    Invalid(String),
}

impl Error {
    /// Whether trying again later may succeed (network, node or coordinator hiccups). Everything
    /// else needs a person (a conflict, bad data, a misconfigured role).
    pub fn recoverable(&self) -> bool {
        matches!(
            self,
            Self::CoordinatorUnavailable(_) | Self::Chain(_) | Self::Store(_)
        )
    }
}

/// Result with the verifier's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
