//! Extractors whose rejections speak Upstash's error shape.

use axum::body::{Bytes, HttpBody};
use axum::extract::MatchedPath;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::gate::SYNC_TOKEN_HEADER;
use super::AppState;
use crate::auth::rate::retry_after_seconds;
use crate::auth::{audit, presented_token, AuthError, Principal};
use crate::error::{json_error, ApiError};
use crate::policy::scope::Stream;
use crate::policy::CommandTable;
use crate::protocol::reply::StringEncoding;

/// The authenticated caller: its token's scope (mode, key prefixes, command rules,
/// rate limit, backend). Compares equal to its [`crate::policy::Access`] (`caller == Access::ReadOnly`).
///
/// Extracting it authenticates (401), applies the token's rate limit (429 with
/// `Retry-After`) and, on the Server-Sent Events routes, the stream policy (403):
/// channels under the token's prefixes, `/monitor` for admin tokens, default backend only.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let matched = parts.extensions.get::<MatchedPath>().cloned();
        let endpoint = matched.as_ref().map_or("request", MatchedPath::as_str);
        let authorization = parts.headers.get(AUTHORIZATION);
        Caller::authenticate(parts, authorization, state, endpoint).await
    }
}

/// The request headers the command endpoints read, found in one walk over the
/// header map: a lookup by name hashes the name, and four of them cost more than
/// one pass over the handful of headers a request carries (issue 7). Where a
/// header is repeated, the first counts, as with `HeaderMap::get`.
#[derive(Debug, Default, Clone, Copy)]
pub struct KnownHeaders<'a> {
    /// `Authorization`.
    pub authorization: Option<&'a HeaderValue>,
    /// `Upstash-Encoding`.
    pub encoding: Option<&'a HeaderValue>,
    /// `Upstash-Response-Format`.
    pub response_format: Option<&'a HeaderValue>,
    /// `Upstash-Sync-Token`.
    pub sync_token: Option<&'a HeaderValue>,
}

impl<'a> KnownHeaders<'a> {
    /// Finds the headers in `headers`.
    pub fn of(headers: &'a HeaderMap) -> KnownHeaders<'a> {
        let mut known = KnownHeaders::default();
        for (name, value) in headers {
            let slot = if name == AUTHORIZATION {
                &mut known.authorization
            } else if name == ENCODING_HEADER {
                &mut known.encoding
            } else if name == RESPONSE_FORMAT_HEADER {
                &mut known.response_format
            } else if name == SYNC_TOKEN_HEADER {
                &mut known.sync_token
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        known
    }
}

impl Caller {
    /// What extracting a `Caller` does, for a request on `endpoint` (the route
    /// pattern, as audit logs and stream policies name it). `authorization` is the
    /// request's first `Authorization` value (as `HeaderMap::get` gives it).
    pub async fn authenticate(
        parts: &Parts,
        authorization: Option<&HeaderValue>,
        state: &AppState,
        endpoint: &str,
    ) -> Result<Caller, Response> {
        let unauthorized = |error: AuthError| {
            audit::refused(None, endpoint, error.reason(), error.text());
            json_error(StatusCode::UNAUTHORIZED, error.text())
        };
        let header = match authorization {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| unauthorized(AuthError::Invalid))?,
            ),
            None => None,
        };
        let token = presented_token(header, parts.uri.query())
            .ok_or_else(|| unauthorized(AuthError::Invalid))?;
        let principal = authenticated(state, &token, endpoint)
            .map_err(|error| json_error(StatusCode::UNAUTHORIZED, error.text()))?;
        let table = state.default_command_table();
        if let Some(stream) = stream_route(endpoint) {
            check_stream(&principal, stream, parts.uri.path(), table.as_deref())
                .map_err(|e| e.into_response())?;
        }
        if let Err(wait) = state
            .auth()
            .admit(&principal, state.default_backend(), table.as_deref())
            .await
        {
            return Err(rate_limited(&principal, endpoint, wait));
        }
        Ok(Caller(principal))
    }
}

#[derive(Clone, Copy)]
enum StreamRoute {
    Channel,
    Pattern,
    ShardChannel,
    Monitor,
}

fn stream_route(matched: &str) -> Option<StreamRoute> {
    match matched {
        "/subscribe/{*channel}" => Some(StreamRoute::Channel),
        "/psubscribe/{*pattern}" => Some(StreamRoute::Pattern),
        "/ssubscribe/{*channel}" => Some(StreamRoute::ShardChannel),
        "/monitor" => Some(StreamRoute::Monitor),
        _ => None,
    }
}

/// Whether `token` still opens the stream at `path` (route pattern `endpoint`).
/// Run again while a stream is open, so that an expired, revoked or removed
/// token, or rules that changed, end it; the refusal's text when not.
pub fn recheck_stream(
    state: &AppState,
    token: &str,
    endpoint: &str,
    path: &str,
) -> Result<(), String> {
    let principal = authenticated(state, token, endpoint).map_err(|e| e.text().to_string())?;
    let Some(route) = stream_route(endpoint) else {
        return Ok(());
    };
    let table = state.default_command_table();
    check_stream(&principal, route, path, table.as_deref()).map_err(|error| error.to_string())
}

/// The principal `token` stands for; a refusal is audited under `endpoint`.
fn authenticated(state: &AppState, token: &str, endpoint: &str) -> Result<Principal, AuthError> {
    state
        .auth()
        .authenticate(token)
        .inspect_err(|error| audit::refused(None, endpoint, error.reason(), error.text()))
}

/// The stream policy: the channel (or pattern) is the raw path after its second `/`,
/// percent-decoded as the SSE handlers decode it.
fn check_stream(
    caller: &Principal,
    route: StreamRoute,
    path: &str,
    table: Option<&CommandTable>,
) -> Result<(), ApiError> {
    if let Some(backend) = &caller.scope().backend {
        let text = format!(
            "NOPERM Server-Sent Events use the default backend; this token uses '{backend}'"
        );
        caller.audit("stream", "backend", &text);
        return Err(ApiError::Forbidden(text));
    }
    let rest = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .map_or("", |(_, rest)| rest);
    let name: Vec<u8> = percent_encoding::percent_decode_str(rest).collect();
    let stream = match route {
        StreamRoute::Channel => Stream::Channel(&name),
        StreamRoute::Pattern => Stream::Pattern(&name),
        StreamRoute::ShardChannel => Stream::ShardChannel(&name),
        StreamRoute::Monitor => Stream::Monitor,
    };
    caller.check_stream(stream, table).map_err(ApiError::from)
}

/// 429 with `Retry-After` (whole seconds) and a JSON error.
fn rate_limited(caller: &Principal, endpoint: &str, wait: std::time::Duration) -> Response {
    let seconds = retry_after_seconds(wait);
    let rate = caller.scope().rate;
    let text = format!(
        "ERR rate limit exceeded for token '{}': {} requests per second, burst {}; retry in {seconds} s",
        caller.scope().name,
        rate.map_or(0.0, |r| r.per_second),
        rate.map_or(0, |r| r.burst),
    );
    caller.audit(endpoint, "rate_limited", &text);
    let mut response = json_error(StatusCode::TOO_MANY_REQUESTS, &text);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}

const ENCODING_HEADER: HeaderName = HeaderName::from_static("upstash-encoding");
const RESPONSE_FORMAT_HEADER: HeaderName = HeaderName::from_static("upstash-response-format");

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
        ReplyFormat::from_headers(&KnownHeaders::of(&parts.headers))
    }
}

/// A header's text, trimmed; `None` when absent or not visible ASCII.
fn header_text(value: Option<&HeaderValue>) -> Option<&str> {
    value.and_then(|v| v.to_str().ok()).map(str::trim)
}

impl ReplyFormat {
    /// The format the request's headers ask for.
    pub fn from_headers(headers: &KnownHeaders<'_>) -> Result<ReplyFormat, ApiError> {
        // Compared without allocating: the SDKs send `Upstash-Encoding` on every request.
        let encoding = match header_text(headers.encoding) {
            Some(value) if value.eq_ignore_ascii_case("base64") => StringEncoding::Base64,
            _ => StringEncoding::Utf8,
        };
        let resp2 = match header_text(headers.response_format) {
            None | Some("") => false,
            Some(value) if value.eq_ignore_ascii_case("json") => false,
            Some(value) if value.eq_ignore_ascii_case("resp2") => true,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "ERR invalid Upstash-Response-Format '{}': expected json or resp2",
                    other.to_ascii_lowercase()
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

/// The raw request body, at most `RESTASH_MAX_BODY_BYTES`; too large is a JSON 413.
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        read_body(request.into_body(), state.max_body_bytes())
            .await
            .map(RawBody)
    }
}

/// Reads a whole request body of at most `limit` bytes. A body that arrives in
/// one piece (the usual case) is returned as it is, without a copy. A declared
/// `Content-Length` over the limit is refused before any of it is read (so a
/// client that sent `Expect: 100-continue` gets the 413 instead of `100 Continue`).
pub async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, ApiError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(ApiError::PayloadTooLarge);
    }
    let mut body = std::pin::pin!(Limited::new(body, limit));
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            if error.is::<LengthLimitError>() {
                ApiError::PayloadTooLarge
            } else {
                // The text axum's extractor gave before this function replaced it.
                ApiError::BadRequest(format!(
                    "ERR could not read the request body: Failed to buffer the request body: {error}"
                ))
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        match (&mut joined, first.take()) {
            (Some(joined), _) => joined.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(earlier)) => {
                let mut both = BytesMut::with_capacity(earlier.len() + data.len());
                both.extend_from_slice(&earlier);
                both.extend_from_slice(&data);
                joined = Some(both);
            }
        }
    }
    Ok(match (joined, first) {
        (Some(joined), _) => joined.freeze(),
        (None, first) => first.unwrap_or_default(),
    })
}

/// The `upstash-sync-token` a client echoes (any non-empty text is accepted), kept
/// as the header value it came in (cloning it copies nothing).
#[derive(Debug, Clone)]
pub struct SyncToken(pub Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for SyncToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(SyncToken::from_headers(&KnownHeaders::of(&parts.headers)))
    }
}

impl SyncToken {
    /// The token the request's headers echo, if any.
    pub fn from_headers(headers: &KnownHeaders<'_>) -> SyncToken {
        SyncToken(
            headers
                .sync_token
                .filter(|v| !v.is_empty() && v.to_str().is_ok())
                .cloned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    type Frames = Vec<Result<Frame<Bytes>, std::io::Error>>;

    async fn read(frames: Frames, limit: usize) -> Result<Bytes, ApiError> {
        read_body(StreamBody::new(futures::stream::iter(frames)), limit).await
    }

    fn data(text: &'static str) -> Result<Frame<Bytes>, std::io::Error> {
        Ok(Frame::data(Bytes::from_static(text.as_bytes())))
    }

    #[test]
    fn known_headers_are_found_in_one_walk_first_value_first() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("h"));
        headers.append("authorization", HeaderValue::from_static("Bearer one"));
        headers.append("authorization", HeaderValue::from_static("Bearer two"));
        headers.insert("upstash-encoding", HeaderValue::from_static("base64"));
        headers.insert("upstash-sync-token", HeaderValue::from_static("7"));
        let known = KnownHeaders::of(&headers);
        assert_eq!(known.authorization, headers.get(AUTHORIZATION));
        assert_eq!(known.authorization.unwrap(), "Bearer one");
        assert_eq!(known.encoding.unwrap(), "base64");
        assert_eq!(known.response_format, None);
        assert_eq!(known.sync_token.unwrap(), "7");
        let format = ReplyFormat::from_headers(&known).unwrap();
        assert_eq!(format.encoding, StringEncoding::Base64);
        assert_eq!(SyncToken::from_headers(&known).0.unwrap(), "7");
        let empty = HeaderMap::new();
        let none = KnownHeaders::of(&empty);
        assert!(none.authorization.is_none() && none.sync_token.is_none());
    }

    #[tokio::test]
    async fn pieces_are_joined_in_order_and_trailers_skipped() {
        let trailers = Ok(Frame::trailers(HeaderMap::new()));
        let frames = vec![data("[\"GET\","), data(""), trailers, data("\"k\"]")];
        assert_eq!(read(frames, 100).await.unwrap(), "[\"GET\",\"k\"]");
        assert_eq!(read(vec![data("one")], 100).await.unwrap(), "one");
        assert_eq!(read(Vec::new(), 100).await.unwrap(), "");
    }

    #[tokio::test]
    async fn the_limit_counts_every_piece() {
        let exactly = vec![data("12345"), data("67890")];
        assert_eq!(read(exactly, 10).await.unwrap(), "1234567890");
        let over = vec![data("12345"), data("678901")];
        assert!(matches!(
            read(over, 10).await,
            Err(ApiError::PayloadTooLarge)
        ));
    }

    #[tokio::test]
    async fn a_broken_body_is_a_bad_request() {
        let broken = vec![data("[1"), Err(std::io::Error::other("connection reset"))];
        match read(broken, 100).await {
            Err(ApiError::BadRequest(text)) => assert_eq!(
                text,
                "ERR could not read the request body: Failed to buffer the request body: connection reset"
            ),
            other => panic!("{other:?}"),
        }
    }
}
