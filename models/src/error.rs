//! Errors of the models crate.

use std::path::PathBuf;

/// Everything that can go wrong while finding, loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model file is not in the cache.
    #[error(
        "model file {path} is missing; fetch the weights with `scripts/setup` \
         (or point --home / GLEANER_HOME at the directory that holds models/)"
    )]
    MissingModel {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// A model file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The tokenizer file is invalid or tokenization failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The weights do not fit the model.
    #[error("weights in {path} do not fit the model: {detail}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What did not fit.
        detail: String,
    },
    /// The requested backend cannot be used on this machine.
    #[error("backend {backend}: {detail}")]
    Backend {
        /// The backend that was asked for.
        backend: &'static str,
        /// Why it cannot be used.
        detail: String,
    },
    /// An input cannot be embedded.
    #[error("input {index}: {detail}")]
    Input {
        /// Zero-based index of the input.
        index: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// Two outputs that should have the same shape do not.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Reading tensor data back from a device failed.
    #[error("tensor data: {0}")]
    Data(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
