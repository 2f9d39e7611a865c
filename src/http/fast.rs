//! The service hyper calls: the hottest endpoints (`POST /`, `POST /pipeline`
//! and path-style commands) go straight to their handlers, everything else
//! through the router.
//!
//! Skipping the router for these saves its route match, the boxed route
//! service and the `MatchedPath`/path-parameter extensions on every request
//! (issue 7); the handlers, extractors, body limit and [`Gate`] are the same
//! ones the router would use. With CORS configured every request goes through
//! the router, where the CORS layer lives.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::Router;
use futures::future::Either;
use hyper::body::Incoming;
use tower::{Layer, Service};

use super::commands;
use super::extract::{Caller, RawBody, ReplyFormat, SyncToken};
use super::gate::{Gate, GateLayer};
use super::AppState;

/// One endpoint served outside the router: gate, body limit, handler.
type Direct = Gate<<DefaultBodyLimit as Layer<Endpoint>>::Service>;

/// The application as hyper sees it.
#[derive(Clone)]
pub struct App {
    router: Router,
    /// `None` when every request must go through the router (CORS).
    direct: Option<DirectRoutes>,
}

#[derive(Clone)]
struct DirectRoutes {
    command: Direct,
    pipeline: Direct,
    path: Direct,
}

/// First path segments of the router's own routes; any other path is a
/// path-style command (the router's `/{*path}`).
const ROUTED_SEGMENTS: &[&str] = &[
    "",
    "pipeline",
    "multi-exec",
    "cache",
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "monitor",
    "healthz",
    "readyz",
    "metrics",
    "openapi.yaml",
];

/// Whether the router would send `path` to its `/{*path}` route.
fn is_path_command(path: &str) -> bool {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let first = rest.split('/').next().unwrap_or_default();
    !ROUTED_SEGMENTS.contains(&first)
}

impl App {
    /// `router` with its gated routes, plus the direct routes unless `cors` is on.
    pub fn new(router: Router, state: &AppState, gate: &GateLayer, cors: bool) -> App {
        let direct = (!cors).then(|| {
            let limit = DefaultBodyLimit::max(state.max_body_bytes());
            let route = |path: &'static str, kind: Kind| {
                gate.for_route(path).layer(limit.layer(Endpoint {
                    state: state.clone(),
                    kind,
                }))
            };
            DirectRoutes {
                command: route("/", Kind::Command),
                pipeline: route("/pipeline", Kind::Pipeline),
                path: route("/{*path}", Kind::Path),
            }
        });
        App { router, direct }
    }
}

impl Service<axum::http::Request<Incoming>> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<<Direct as Service<Request>>::Future, RouteFuture<Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router and the direct routes are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<Incoming>) -> Self::Future {
        let request = request.map(Body::new);
        if let Some(direct) = &mut self.direct {
            let method = request.method();
            let path = request.uri().path();
            if method == Method::POST && path == "/" {
                return Either::Left(direct.command.call(request));
            }
            if method == Method::POST && path == "/pipeline" {
                return Either::Left(direct.pipeline.call(request));
            }
            let path_method = matches!(*method, Method::GET | Method::POST | Method::PUT);
            if path_method && is_path_command(path) {
                return Either::Left(direct.path.call(request));
            }
        }
        Either::Right(self.router.call(request))
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Command,
    Pipeline,
    Path,
}

/// A handler with its extractors, run in the order the router would run them.
#[derive(Clone)]
pub struct Endpoint {
    state: AppState,
    kind: Kind,
}

impl Service<Request> for Endpoint {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let state = self.state.clone();
        let kind = self.kind;
        Box::pin(async move { Ok(run(kind, state, request).await) })
    }
}

async fn run(kind: Kind, state: AppState, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = match Caller::from_request_parts(&mut parts, &state).await {
        Ok(caller) => caller,
        Err(refusal) => return refusal,
    };
    let format = match ReplyFormat::from_request_parts(&mut parts, &state).await {
        Ok(format) => format,
        Err(error) => return error.into_response(),
    };
    let sync = match SyncToken::from_request_parts(&mut parts, &state).await {
        Ok(sync) => sync,
        Err(error) => return error.into_response(),
    };
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    let body = match RawBody::from_request(Request::from_parts(parts, body), &state).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let answer = match kind {
        Kind::Command => commands::json_command(State(state), caller, format, sync, body).await,
        Kind::Pipeline => commands::pipeline(State(state), caller, format, sync, body).await,
        Kind::Path => {
            commands::path_command(State(state), caller, format, sync, method, uri, body).await
        }
    };
    answer.into_response()
}

#[cfg(test)]
mod tests {
    use super::is_path_command;

    #[test]
    fn the_routers_own_paths_are_not_commands() {
        for path in [
            "/",
            "/pipeline",
            "/multi-exec",
            "/cache",
            "/cache/ns/key",
            "/subscribe/ch",
            "/psubscribe/p*",
            "/ssubscribe/",
            "/monitor",
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.yaml",
            "//get/k",
        ] {
            assert!(!is_path_command(path), "{path}");
        }
        for path in [
            "/get/k",
            "/GET/k",
            "/cachex/k",
            "/%63ache/k",
            "/dbsize",
            "/set/a/b",
        ] {
            assert!(is_path_command(path), "{path}");
        }
    }
}
