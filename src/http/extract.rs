//! Extractors whose rejections speak Upstash's error shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;

use super::AppState;
use crate::auth::presented_token;
use crate::error::ApiError;
use crate::policy::Access;
use crate::protocol::reply::StringEncoding;

/// The authenticated caller: what its token may do.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Access);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = match parts.headers.get(AUTHORIZATION) {
            Some(value) => Some(value.to_str().map_err(|_| ApiError::Unauthorized)?),
            None => None,
        };
        let token = presented_token(header, parts.uri.query()).ok_or(ApiError::Unauthorized)?;
        state
            .tokens()
            .access_for(&token)
            .map(Caller)
            .ok_or(ApiError::Unauthorized)
    }
}

/// How the answer is encoded, from `Upstash-Encoding` and `Upstash-Response-Format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyFormat {
    /// JSON strings as text or base64.
    pub encoding: StringEncoding,
    /// Raw RESP2 bytes instead of JSON.
    pub resp2: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for ReplyFormat {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_ascii_lowercase())
        };
        let encoding = match header("upstash-encoding").as_deref() {
            Some("base64") => StringEncoding::Base64,
            _ => StringEncoding::Utf8,
        };
        let resp2 = match header("upstash-response-format").as_deref() {
            None | Some("") | Some("json") => false,
            Some("resp2") => true,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "ERR invalid Upstash-Response-Format '{other}': expected json or resp2"
                )))
            }
        };
        if resp2 && encoding == StringEncoding::Base64 {
            return Err(ApiError::BadRequest(
                "ERR Upstash-Response-Format: resp2 cannot be combined with Upstash-Encoding: base64"
                    .into(),
            ));
        }
        Ok(ReplyFormat { encoding, resp2 })
    }
}

/// The raw request body, limited by `DefaultBodyLimit`; too large is a JSON 413.
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge)
            }
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "ERR could not read the request body: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// The `upstash-sync-token` a client echoes (any value is accepted).
#[derive(Debug, Clone)]
pub struct SyncToken(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for SyncToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(SyncToken(
            parts
                .headers
                .get("upstash-sync-token")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_string),
        ))
    }
}
