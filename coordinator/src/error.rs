//! The coordinator's error type and its HTTP mapping.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `Result` with the coordinator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the coordinator.
///
/// The variants up to [`Error::HeadersTooLarge`] are the caller's fault: they become a 4xx with
/// the message, are not logged, and the request changed nothing. The others are ours: logged, and
/// a generic 500.
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
    /// The request (its head or its body) took too long (408).
    #[error("{0}")]
    Timeout(String),
    /// The request's headers are too many or too large (431).
    #[error("{0}")]
    HeadersTooLarge(String),
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
        let status = match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, code(status).unwrap_or("internal"))
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

/// The machine-readable code of a status that an [`Error`] variant makes.
fn code(status: StatusCode) -> Option<&'static str> {
    Some(match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::INTERNAL_SERVER_ERROR => "internal",
        _ => return None,
    })
}

/// The machine-readable code of any status: the one [`Error::status`] gives it, else its reason
/// phrase in snake case (415 is `unsupported_media_type`).
pub(crate) fn code_of(status: StatusCode) -> String {
    match code(status) {
        Some(code) => code.to_owned(),
        None => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
            .replace([' ', '-'], "_"),
    }
}

/// A JSON error body with `status`, as [`Error`]'s responses have, for the answers made outside
/// the router (a refused connection, a request head that never finished).
pub(crate) fn api_error(status: StatusCode, message: String) -> gleaner_protocol::api::ApiError {
    gleaner_protocol::api::ApiError {
        code: code_of(status),
        message,
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
