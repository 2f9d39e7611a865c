//! Cross-cutting layers: request ids, tracing without secrets, JSON for every
//! error answer, the `upstash-sync-token` header, and panic containment.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use super::AppState;
use crate::error::{json_error, ApiError, TOO_LARGE_TEXT};

/// The response header clients echo for read-your-writes.
pub const SYNC_TOKEN_HEADER: HeaderName = HeaderName::from_static("upstash-sync-token");

/// Wraps the router in every layer, outermost first.
pub fn apply(router: Router, state: &AppState) -> Router {
    let x_request_id = HeaderName::from_static("x-request-id");
    // Install the recorder before any request records a metric.
    crate::metrics::handle();
    let limits = state.limits();
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrency));
    router.layer(
        ServiceBuilder::new()
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                super::metered::track,
            ))
            .layer(SetSensitiveRequestHeadersLayer::new([
                header::AUTHORIZATION,
            ]))
            .layer(SetRequestIdLayer::new(
                x_request_id.clone(),
                CountingRequestIds::default(),
            ))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
            )
            .layer(PropagateRequestIdLayer::new(x_request_id))
            .layer(CatchPanicLayer::custom(|_| {
                tracing::error!("handler panicked");
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "ERR internal error")
            }))
            .layer(axum::middleware::map_response_with_state(
                state.clone(),
                finish_response,
            ))
            .layer(axum::middleware::from_fn_with_state(
                permits,
                super::overload::limit,
            ))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                limits.request_timeout,
            )),
    )
}

/// Request ids `<process-random>-<counter>`: unique, cheap, and sortable per process.
#[derive(Clone)]
struct CountingRequestIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl Default for CountingRequestIds {
    fn default() -> Self {
        CountingRequestIds {
            prefix: format!("{:08x}", rand::random::<u32>()).into(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for CountingRequestIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

/// The span of one request: id, method and path, never the query (`_token`) or headers.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    )
}

/// Adds `upstash-sync-token` and turns any non-JSON error answer (405 from the
/// router, 413 from a body limit, …) into Upstash's `{"error": …}` shape.
async fn finish_response(State(state): State<AppState>, response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let mut response = if (status.is_client_error() || status.is_server_error()) && !is_json {
        let mut replaced = json_error(status, &default_error_text(status));
        if let Some(allow) = response.headers().get(header::ALLOW) {
            replaced.headers_mut().insert(header::ALLOW, allow.clone());
        }
        replaced
    } else {
        response
    };
    // Handlers that track read-your-writes set their own token.
    response
        .headers_mut()
        .entry(SYNC_TOKEN_HEADER)
        .or_insert_with(|| state.sync_token());
    response
}

fn default_error_text(status: StatusCode) -> String {
    match status {
        StatusCode::NOT_FOUND => "ERR not found".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "ERR method not allowed".to_string(),
        StatusCode::PAYLOAD_TOO_LARGE => TOO_LARGE_TEXT.to_string(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "ERR unsupported media type".to_string(),
        other => format!(
            "ERR {}",
            other
                .canonical_reason()
                .unwrap_or("request failed")
                .to_lowercase()
        ),
    }
}

/// Fallback for routes that do not exist.
pub async fn not_found(uri: Uri) -> Response {
    ApiError::NotFound(format!("ERR no such endpoint: {}", uri.path())).into_response()
}
