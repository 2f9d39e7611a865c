//! Operator endpoints without a token: `GET /metrics` and `GET /openapi.yaml`.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The OpenAPI 3.1 description of this API, compiled in.
pub const OPENAPI_YAML: &str = include_str!("../../openapi/openapi.yaml");

/// `GET /metrics`: Prometheus text format.
pub async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// `GET /openapi.yaml`: the API description.
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
        OPENAPI_YAML,
    )
        .into_response()
}
