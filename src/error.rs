//! The one error type of the HTTP API, rendered as Upstash's `{"error": "…"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::backend::BackendError;
use crate::policy::Refusal;
use crate::protocol::reply::write_error_object;
use crate::protocol::request::RequestError;

/// Body of every 401.
pub const UNAUTHORIZED_TEXT: &str = "WRONGPASS invalid or missing auth token";
/// Body of every 413.
pub const TOO_LARGE_TEXT: &str = "ERR max request size exceeded";

/// Everything a request can fail with, each with its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request or unsupported command: 400.
    #[error("{0}")]
    BadRequest(String),
    /// A Redis error reply to a single command, verbatim: 400.
    #[error("{0}")]
    Redis(String),
    /// Missing or wrong token: 401.
    #[error("{UNAUTHORIZED_TEXT}")]
    Unauthorized,
    /// Valid token, command not allowed: 403.
    #[error("{0}")]
    Forbidden(String),
    /// No such route: 404.
    #[error("{0}")]
    NotFound(String),
    /// Body above the configured limit: 413.
    #[error("{TOO_LARGE_TEXT}")]
    PayloadTooLarge,
    /// Redis unreachable or overloaded: 503.
    #[error("{0}")]
    Unavailable(String),
    /// Redis did not answer in time: 504.
    #[error("{0}")]
    Timeout(String),
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Redis(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> Self {
        ApiError::BadRequest(error.to_string())
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unsupported(text) => ApiError::BadRequest(text),
            Refusal::NoPermission(text) => ApiError::Forbidden(text),
            Refusal::NotReady => ApiError::Unavailable(refusal.to_string()),
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(error: BackendError) -> Self {
        match error {
            BackendError::Timeout(_) => ApiError::Timeout(error.to_string()),
            _ => ApiError::Unavailable(error.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, ApiError::Unavailable(_) | ApiError::Timeout(_)) {
            tracing::warn!(error = %self, "request failed");
        }
        let mut response = json_error(self.status(), &self.to_string());
        if matches!(self, ApiError::PayloadTooLarge) {
            // The unread body stays on the wire: the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// A JSON `{"error": text}` response with the given status.
pub fn json_error(status: StatusCode, text: &str) -> Response {
    let mut body = Vec::with_capacity(text.len() + 16);
    write_error_object(&mut body, text);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
