//! Errors of the protocol crate.

/// A protocol value is malformed or a computation would overflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input violates a rule of the protocol; the message says which.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A checked arithmetic step overflowed.
    #[error("arithmetic overflow")]
    Overflow,
    /// A JSON-RPC request failed (node unreachable, range refused).
    #[error("chain: {0}")]
    Chain(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
