//! The service hyper calls: the hottest endpoints (`POST /`, `POST /pipeline`
//! and path-style commands) go straight to their handlers, everything else
//! through the router.
//!
//! Skipping the router for these saves its route match, the boxed route
//! service and the `MatchedPath`/path-parameter extensions on every request
//! (issue 7); each such request is one boxed future that runs the gate
//! ([`GateLayer::run`]) around the handler, with hyper's body read as it is
//! (no boxing into axum's `Body`). The handlers, the authentication, the body
//! limit and the gate are the same code the router's routes run. With CORS configured every request goes
//! through the router, where the CORS layer lives.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::State;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::Router;
use futures::future::Either;
use hyper::body::Incoming;
use tower::Service;

use super::commands;
use super::extract::{read_body, Caller, KnownHeaders, RawBody, ReplyFormat, SyncToken};
use super::gate::GateLayer;
use super::AppState;

/// The application as hyper sees it.
#[derive(Clone)]
pub struct App {
    router: Router,
    /// `None` when every request must go through the router (CORS).
    direct: Option<DirectRoutes>,
}

/// The endpoints served outside the router, each with its gate.
#[derive(Clone)]
struct DirectRoutes {
    state: AppState,
    command: GateLayer,
    pipeline: GateLayer,
    path: GateLayer,
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
        let direct = (!cors).then(|| DirectRoutes {
            state: state.clone(),
            command: gate.for_route(Kind::Command.route()),
            pipeline: gate.for_route(Kind::Pipeline.route()),
            path: gate.for_route(Kind::Path.route()),
        });
        App { router, direct }
    }
}

/// What [`App`] answers with: a direct route's future or the router's.
type AppFuture = Either<
    Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>,
    RouteFuture<Infallible>,
>;

impl Service<axum::http::Request<Incoming>> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = AppFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router and the direct routes are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<Incoming>) -> Self::Future {
        if let Some(direct) = &self.direct {
            let method = request.method();
            let path = request.uri().path();
            let route = if method == Method::POST && path == "/" {
                Some((Kind::Command, &direct.command))
            } else if method == Method::POST && path == "/pipeline" {
                Some((Kind::Pipeline, &direct.pipeline))
            } else if matches!(*method, Method::GET | Method::POST | Method::PUT)
                && is_path_command(path)
            {
                Some((Kind::Path, &direct.path))
            } else {
                None
            };
            if let Some((kind, gate)) = route {
                let state = direct.state.clone();
                let handler = move |request| run(kind, state, request);
                return Either::Left(Box::pin(gate.run(request, handler)));
            }
        }
        Either::Right(self.router.call(request.map(Body::new)))
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Command,
    Pipeline,
    Path,
}

impl Kind {
    /// The route pattern the router would have matched (metrics and audit label).
    fn route(self) -> &'static str {
        match self {
            Kind::Command => "/",
            Kind::Pipeline => "/pipeline",
            Kind::Path => "/{*path}",
        }
    }
}

/// A handler with its extractors, run in the order the router would run them.
async fn run(kind: Kind, state: AppState, request: axum::http::Request<Incoming>) -> Response {
    let (parts, body) = request.into_parts();
    let headers = KnownHeaders::of(&parts.headers);
    let caller =
        match Caller::authenticate(&parts, headers.authorization, &state, kind.route()).await {
            Ok(caller) => caller,
            Err(refusal) => return refusal,
        };
    let format = match ReplyFormat::from_headers(&headers) {
        Ok(format) => format,
        Err(error) => return error.into_response(),
    };
    let sync = SyncToken::from_headers(&headers);
    let body = match read_body(body, state.max_body_bytes()).await {
        Ok(body) => RawBody(body),
        Err(error) => return error.into_response(),
    };
    let answer = match kind {
        Kind::Command => commands::json_command(State(state), caller, format, sync, body).await,
        Kind::Pipeline => commands::pipeline(State(state), caller, format, sync, body).await,
        Kind::Path => {
            commands::path_command(
                State(state),
                caller,
                format,
                sync,
                parts.method,
                parts.uri,
                body,
            )
            .await
        }
    };
    answer.into_response()
}

#[cfg(test)]
mod tests {
    use super::is_path_command;

    /// The size of the future `f` returns.
    fn future_size<F, A, B, C, Fut>(_: F) -> usize
    where
        F: Fn(A, B, C) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every request's future is moved, whole, into its box and through the gate's
    /// wrappers. fred's command future (about 8 KB) inlined anywhere on the way made
    /// it 10,160 bytes; with fred's paths boxed it is 2,400 (issue 7).
    #[test]
    fn a_direct_requests_future_stays_small() {
        let size = future_size(super::run);
        assert!(size <= 4096, "the direct routes' future is {size} bytes");
    }

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
