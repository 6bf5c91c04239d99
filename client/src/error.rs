//! Errors of the coordinator client.

/// What a request to the coordinator can end in.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The coordinator could not be reached, timed out, or the reply was cut off: retry later.
    #[error("coordinator unreachable ({what}): {message}")]
    Transport {
        /// The request.
        what: String,
        /// What the HTTP client said.
        message: String,
    },
    /// The coordinator is overloaded or failing (429, 5xx): retry later.
    #[error("coordinator busy or failing ({what}): {status} {message}")]
    Unavailable {
        /// The request.
        what: String,
        /// HTTP status.
        status: u16,
        /// The coordinator's message.
        message: String,
    },
    /// The coordinator refused the request (4xx other than 429): the same request will not
    /// succeed later. The message is its [`ApiError`](gleaner_protocol::api::ApiError).
    #[error("coordinator refused {what}: {status} {message}")]
    Refused {
        /// The request.
        what: String,
        /// HTTP status.
        status: u16,
        /// The coordinator's `code: message`.
        message: String,
    },
    /// A downloaded blob does not hash to the address it was asked for: the coordinator (or
    /// something between) served wrong bytes; they are never handed to the caller.
    #[error("blob {want} failed its hash check (the bytes hash to {got})")]
    BadBlob {
        /// The hash asked for.
        want: alloy::primitives::B256,
        /// The hash of what arrived.
        got: alloy::primitives::B256,
    },
    /// The coordinator's reply could not be read as the API says it should be.
    #[error("coordinator sent an unreadable {what} reply: {message}")]
    Decode {
        /// The request.
        what: String,
        /// The parse error.
        message: String,
    },
    /// Signing a message failed.
    #[error("signing {what}: {message}")]
    Sign {
        /// The message.
        what: &'static str,
        /// The signer's error.
        message: String,
    },
    /// The client was set up wrongly (a malformed URL, a TLS backend missing).
    #[error("coordinator client: {0}")]
    Config(String),
}

impl Error {
    /// Whether trying the same request later may succeed (network trouble, a coordinator that
    /// restarts or sheds load). Every role backs off and retries exactly these.
    /// An unreadable reply counts: a proxy's error page or a cut-off body is usually
    /// transient, and the role's own loop backs off before asking again.
    pub fn recoverable(&self) -> bool {
        matches!(
            self,
            Self::Transport { .. } | Self::Unavailable { .. } | Self::Decode { .. }
        )
    }

    /// The HTTP status of a refusal (`401` after a session expired, `409` for a conflict).
    pub fn refused_status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Result with the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
