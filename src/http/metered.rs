//! The metrics middleware: requests by matched route, method and status, latency,
//! in-flight requests, Redis transport failures, and command names by count.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;

use super::overload::Shed;
use super::AppState;
use crate::metrics::{self, BodyShape, InFlight, NameScanner};
use crate::policy::CommandTable;

/// Label for requests that matched no route (never the raw path).
const UNMATCHED: &str = "unmatched";

/// Records one request; see [`crate::metrics`] for the metric names.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::start();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = request.method().clone();
    let route_label = route.as_deref().unwrap_or(UNMATCHED);

    let mut path_name = None;
    let request = match (route_label, &method) {
        ("/", &Method::POST) => scan_body(&state, request, BodyShape::Command),
        ("/pipeline", &Method::POST) | ("/multi-exec", &Method::POST) => {
            scan_body(&state, request, BodyShape::Pipeline)
        }
        ("/{*path}", _) => {
            path_name = metrics::path_command_name(request.uri().path()).map(<[u8]>::to_vec);
            request
        }
        _ => request,
    };

    let response = next.run(request).await;
    let status = response.status().as_u16();
    metrics::record_request(route_label, method.as_str(), status, started.elapsed());
    if let Some(name) = path_name.filter(|_| !matches!(status, 401 | 404 | 405 | 413)) {
        let table = state.command_table();
        metrics::record_commands(&[(name, 1)], table.as_deref());
    }
    let probe = matches!(route_label, "/healthz" | "/readyz" | "/metrics");
    if !probe && response.extensions().get::<Shed>().is_none() {
        metrics::record_redis_error(status);
    }
    response
}

/// Wraps the body so that command names are counted as the handler reads it
/// (an unauthenticated request is refused before its body is read: nothing counts).
fn scan_body(state: &AppState, request: Request, shape: BodyShape) -> Request {
    let (parts, body) = request.into_parts();
    let mut counter = CountOnDrop {
        scanner: Some(NameScanner::new(shape)),
        table: state.command_table(),
    };
    let stream = body.into_data_stream().map(move |chunk| {
        if let (Ok(bytes), Some(scanner)) = (&chunk, counter.scanner.as_mut()) {
            scanner.feed(bytes);
        }
        chunk
    });
    Request::from_parts(parts, Body::from_stream(stream))
}

/// Records the names a scanner found once the body has been read and dropped.
struct CountOnDrop {
    scanner: Option<NameScanner>,
    table: Option<Arc<CommandTable>>,
}

impl Drop for CountOnDrop {
    fn drop(&mut self) {
        if let Some(names) = self.scanner.take().and_then(NameScanner::finish) {
            metrics::record_commands(&names, self.table.as_deref());
        }
    }
}
