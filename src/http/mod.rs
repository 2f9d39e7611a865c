//! The only module that knows axum: routes, extractors, handlers and layers.

mod commands;
mod extract;
mod health;
mod layers;
mod state;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use axum::Router;

pub use state::AppState;

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
        // Reserved for the cache-aside API; never a Redis command.
        .route("/cache", any(layers::not_found))
        .route("/cache/{*rest}", any(layers::not_found))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(layers::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state.clone());
    layers::apply(api, &state)
}
