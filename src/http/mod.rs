//! The only module that knows axum: routes, extractors, handlers and layers.

mod cache;
mod commands;
mod extract;
mod fast;
mod gate;
mod health;
mod operations;
mod serve;
mod sse;
mod state;

use axum::routing::{any, get, post};
use axum::Router;

pub use fast::App;
pub use serve::serve;
pub use state::{AppState, Limits};

/// Builds the application hyper serves: the router with every route behind the
/// gate, the CORS layer when `cors_origins` are set, and the direct routes.
pub fn app(state: AppState, cors_origins: &[String]) -> App {
    let gate = gate::GateLayer::new(&state);
    let router = with_cors(router(state.clone(), &gate), cors_origins);
    App::new(router, &state, &gate, !cors_origins.is_empty())
}

/// The routes, each behind the gate.
fn router(state: AppState, gate: &gate::GateLayer) -> Router {
    let api = Router::new()
        .route("/", post(commands::json_command))
        .route("/pipeline", post(commands::pipeline))
        .route("/multi-exec", post(commands::multi_exec))
        .route(
            "/{*path}",
            get(commands::path_command)
                .post(commands::path_command)
                .put(commands::path_command),
        )
        // The cache-aside API; never a Redis command.
        .route("/cache", any(gate::not_found))
        .route("/cache/{*rest}", any(cache::dispatch))
        // Server-Sent Events: Pub/Sub and MONITOR.
        .route(
            "/subscribe/{*channel}",
            get(sse::subscribe).post(sse::subscribe),
        )
        .route(
            "/psubscribe/{*pattern}",
            get(sse::psubscribe).post(sse::psubscribe),
        )
        .route(
            "/ssubscribe/{*channel}",
            get(sse::ssubscribe).post(sse::ssubscribe),
        )
        // The wildcard needs a character: an empty channel is refused by the handler.
        .route("/ssubscribe/", get(sse::ssubscribe).post(sse::ssubscribe))
        .route("/monitor", get(sse::monitor).post(sse::monitor))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(operations::metrics))
        .route("/openapi.yaml", get(operations::openapi))
        .fallback(gate::not_found)
        .with_state(state.clone());
    // The body limit is `RawBody`'s (every body is read through it).
    api.layer(gate.clone())
}

/// Answers CORS preflights and adds CORS headers for `origins` (`*`: any origin), so
/// browsers can call restash directly (with a read-only token); no origins, no CORS.
/// `upstash-sync-token` and the cache headers are exposed to scripts.
fn with_cors(router: Router, origins: &[String]) -> Router {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return router;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let names = |list: &[&'static str]| -> Vec<HeaderName> {
        list.iter().map(|n| HeaderName::from_static(n)).collect()
    };
    let cors = CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
        ])
        .allow_headers(
            [
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_NONE_MATCH,
            ]
            .into_iter()
            .chain(names(&[
                "upstash-encoding",
                "upstash-response-format",
                "upstash-sync-token",
                // @upstash/redis sends its telemetry headers by default.
                "upstash-telemetry-sdk",
                "upstash-telemetry-platform",
                "upstash-telemetry-runtime",
                "x-cache-lease",
                "x-request-id",
            ]))
            .collect::<Vec<_>>(),
        )
        .expose_headers(
            [
                header::ETAG,
                header::AGE,
                header::CACHE_CONTROL,
                header::RETRY_AFTER,
            ]
            .into_iter()
            .chain(names(&[
                "upstash-sync-token",
                "x-request-id",
                "x-cache",
                "x-cache-lease",
            ]))
            .collect::<Vec<_>>(),
        )
        .max_age(std::time::Duration::from_secs(600));
    router.layer(cors)
}
