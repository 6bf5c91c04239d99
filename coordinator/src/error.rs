//! The coordinator's error type and its HTTP mapping.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `Result` with the coordinator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the coordinator.
///
/// The first six variants are the caller's fault: they become a 4xx with the message, are not
/// logged, and the request changed nothing. The others are ours: logged, and a generic 500.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed or inconsistent input (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or bad credentials: token, signature (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such resource (404).
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// Body larger than allowed (413).
    #[error("{0}")]
    TooLarge(String),
    /// The route exists but not with this method (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request (its body included) took too long (408).
    #[error("{0}")]
    Timeout(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The chain RPC failed (transient: retried by the watcher).
    #[error("chain: {0}")]
    Chain(String),
    /// Anything else on our side.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The HTTP status and the machine-readable code.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// Whether retrying later may succeed (the chain RPC was down), as opposed to a fault that
    /// should stop a background task (the database).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Chain(_))
    }

    pub(crate) fn chain(e: impl std::fmt::Display) -> Self {
        Self::Chain(e.to_string())
    }
}

impl From<gleaner_protocol::Error> for Error {
    fn from(e: gleaner_protocol::Error) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        let message = if status.is_server_error() {
            tracing::error!(target: "coordinator::api", error = %self, "internal error");
            "internal error; see the coordinator's log".to_owned()
        } else {
            self.to_string()
        };
        let body = gleaner_protocol::api::ApiError {
            code: code.to_owned(),
            message,
        };
        (status, Json(body)).into_response()
    }
}
