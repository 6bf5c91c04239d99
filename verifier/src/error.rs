//! Errors of the verifier.

/// Something the verifier could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A protocol value was malformed or a checked computation overflowed.
    #[error(transparent)]
    Protocol(#[from] gleaner_protocol::Error),
    /// A request to the coordinator failed (unreachable, busy, refused, a blob with a wrong hash).
    #[error(transparent)]
    Client(#[from] gleaner_client::Error),
    /// The coordinator's state is not yet usable (a session to renew, a blob it does not have
    /// yet); retried with backoff.
    #[error("coordinator not ready: {0}")]
    CoordinatorUnavailable(String),
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
    /// The task's kind is unknown here, or its check could not run (a missing model, the
    /// wrong weights): the verifier's own problem, never held against a worker.
    #[error(transparent)]
    Kind(#[from] gleaner_kinds::Error),
    /// A job or task the verifier cannot handle (unknown kind, inconsistent data).
    #[error("invalid: {0}")]
    Invalid(String),
}

impl Error {
    /// Whether trying again later may succeed (network, node or coordinator hiccups). Everything
    /// else needs a person (a conflict, bad data, a misconfigured role).
    pub fn recoverable(&self) -> bool {
        match self {
            Self::Client(e) => e.recoverable(),
            Self::CoordinatorUnavailable(_) | Self::Chain(_) | Self::Store(_) => true,
            _ => false,
        }
    }
}

/// Result with the verifier's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
