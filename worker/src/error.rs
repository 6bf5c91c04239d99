//! Errors of the worker.

/// What can stop or interrupt a worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The coordinator could not be reached or answered with a server error: retry later.
    #[error("coordinator unreachable: {0}")]
    Transport(String),
    /// The coordinator refused a request (4xx): retrying the same request will not help.
    #[error("coordinator refused {what}: {status} {message}")]
    Refused {
        /// The request.
        what: String,
        /// HTTP status.
        status: u16,
        /// The coordinator's message.
        message: String,
    },
    /// A fetched blob does not have the hash it was asked for.
    #[error("blob {0} failed its hash check")]
    BadBlob(String),
    /// The task names a model this worker does not have.
    #[error("task needs model weights {want}, this worker has {have}")]
    WrongModel {
        /// The task's weights hash.
        want: String,
        /// The local weights hash.
        have: String,
    },
    /// Running the model failed.
    #[error(transparent)]
    Model(#[from] gleaner_models::Error),
    /// A protocol value is malformed.
    #[error(transparent)]
    Protocol(#[from] gleaner_protocol::Error),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(String),
}

impl Error {
    /// Whether waiting and retrying may succeed (network trouble, coordinator restarts).
    pub fn recoverable(&self) -> bool {
        matches!(self, Self::Transport(_))
    }
}

/// Result with the worker's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
