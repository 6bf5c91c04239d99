//! Errors of the worker.

/// What can stop or interrupt a worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Talking to the coordinator failed (unreachable, busy, refused, a blob with a wrong hash).
    #[error(transparent)]
    Client(#[from] gleaner_client::Error),
    /// Running the task's kind failed (its model is missing or not the task's, bad input).
    #[error(transparent)]
    Kind(#[from] gleaner_kinds::Error),
    /// None of the worker's kinds can run here: their model files are missing.
    #[error(
        "no task kind can run here ({known}): their model files are missing; fetch them with \
         `scripts/setup` (or point GLEANER_HOME at the directory that holds models/)"
    )]
    NoKinds {
        /// The kinds the worker knows.
        known: String,
    },
    /// The thread that runs the model panicked or was cancelled.
    #[error("model thread: {0}")]
    ModelThread(String),
}

impl Error {
    /// Whether waiting and retrying may succeed (network trouble, coordinator restarts).
    pub fn recoverable(&self) -> bool {
        matches!(self, Self::Client(e) if e.recoverable())
    }

    /// Whether the worker must stop: it was handed a task whose model it does not have, so
    /// every later lease of that job would fail the same way.
    pub fn fatal(&self) -> bool {
        matches!(self, Self::Kind(gleaner_kinds::Error::WrongModel { .. }))
    }

    /// The HTTP status when the coordinator refused the request (401: the session expired).
    pub fn refused_status(&self) -> Option<u16> {
        match self {
            Self::Client(e) => e.refused_status(),
            _ => None,
        }
    }
}

/// Result with the worker's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
