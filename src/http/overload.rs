//! Load shedding: at most `RESTASH_MAX_CONCURRENCY` requests are handled at once;
//! the next ones get a JSON 503 at once instead of queueing without bound.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::Semaphore;

use crate::error::json_error;

/// Marks a response produced by load shedding (so metrics do not count it as a Redis error).
#[derive(Debug, Clone, Copy)]
pub struct Shed;

/// Error text of a shed request.
pub const BUSY_TEXT: &str = "ERR server busy: too many requests in flight, retry later";

/// Runs the request if a permit is free, else answers 503 with `Retry-After: 1`.
/// The liveness probe and `/metrics` are never shed.
pub async fn limit(
    State(permits): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(request.uri().path(), "/healthz" | "/metrics") {
        return next.run(request).await;
    }
    match permits.try_acquire_owned() {
        Ok(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(_) => {
            crate::metrics::record_load_shed();
            let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, BUSY_TEXT);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response.extensions_mut().insert(Shed);
            response
        }
    }
}
