//! Errors of task kinds.

use gleaner_protocol::task::KindId;

/// What running, checking or assembling a task of some kind can end in.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No kind of that name is registered here.
    #[error("task kind {kind} is not known here (this build knows: {known})")]
    Unknown {
        /// The kind asked for.
        kind: KindId,
        /// The registered kinds, comma-separated.
        known: String,
    },
    /// The task names model weights this host does not have.
    #[error("task needs model weights {want}, this host has {have}")]
    WrongModel {
        /// The task's weights hash.
        want: String,
        /// The local weights hash.
        have: String,
    },
    /// The requester's input or the job's parameters do not fit the kind.
    #[error("{0}")]
    Input(String),
    /// A task's input blob is not what the kind reads (a coordinator or requester problem,
    /// never held against a worker).
    #[error("task {index}: input blob: {detail}")]
    BadInput {
        /// Task index.
        index: u32,
        /// What is wrong.
        detail: String,
    },
    /// Loading or running a model failed.
    #[error(transparent)]
    Model(#[from] gleaner_models::Error),
    /// A protocol value is malformed.
    #[error(transparent)]
    Protocol(#[from] gleaner_protocol::Error),
    /// Writing results failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A kind's own invariant does not hold (a bug, or outputs of two kinds mixed).
    #[error("invalid: {0}")]
    Invalid(String),
}

/// Result with the kinds' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
