//! The only module that knows axum: routes, extractors, handlers and layers.

mod cache;
mod commands;
mod extract;
mod health;
mod layers;
mod metered;
mod operations;
mod overload;
mod serve;
mod sse;
mod state;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use axum::Router;

pub use serve::serve;
pub use state::{AppState, Limits};

/// Builds the full application: routes plus every layer.
pub fn router(state: AppState) -> Router {
    let body_limit = state.max_body_bytes();
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
        .route("/cache", any(layers::not_found))
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
        .route("/monitor", get(sse::monitor).post(sse::monitor))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(operations::metrics))
        .route("/openapi.yaml", get(operations::openapi))
        .fallback(layers::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state.clone());
    layers::apply(api, &state)
}
