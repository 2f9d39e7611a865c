//! Liveness and readiness probes (no token required).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::ApiError;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

/// `GET /readyz`: Redis answers PING (asked at most once a second while it does)
/// and the command table is loaded.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if let Err(error) = state.redis_ready().await {
        return ApiError::from(error).into_response();
    }
    if state.command_table().is_none() {
        return ApiError::Unavailable("ERR the Redis command table is not loaded yet".into())
            .into_response();
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ready"}"#,
    )
        .into_response()
}
