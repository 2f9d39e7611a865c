//! Server-Sent Events: `/subscribe/{channel}`, `/psubscribe/{pattern}`,
//! `/ssubscribe/{channel}` (sharded Pub/Sub, restash's extension) and `/monitor`
//! (GET or POST, body ignored, no `Accept` header needed).
//!
//! ```text
//! data: subscribe,chat,1                  first event of /subscribe/chat
//! data: message,chat,hello                each message (payload as text, never base64)
//! data: psubscribe,user:*,1               first event of /psubscribe/user:*
//! data: pmessage,user:*,user:123,hello
//! data: ssubscribe,orders,1               first event of /ssubscribe/orders
//! data: smessage,orders,hello             each SPUBLISHed message
//! data: "OK"                              first event of /monitor, then each command
//! data: "1712345678.123456 [0 127.0.0.1:50000] \"SET\" \"k\" \"v\""
//! : keepalive                             heartbeat while idle
//! event: error                            last event when restash ends the stream
//! data: ERR stream closed: …
//! ```
//!
//! At every keepalive interval the stream's token is checked again, as if the
//! stream were opened now: a JWT past its `exp`, a revoked one, a token taken
//! out of the token file or rules that no longer admit the stream end it.
//!
//! Channel names come from the raw path, percent-decoded (the JS SDK does not
//! encode them), so `/subscribe/room/1` is the channel `room/1`.

use std::convert::Infallible;

use axum::extract::{MatchedPath, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use percent_encoding::percent_decode;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::extract::{recheck_stream, Caller, RawBody};
use super::AppState;
use crate::auth::presented_token;
use crate::backend::pubsub::{
    Delivery, MonitorStream, PubSubHub, StreamError, Subscription, TopicKind,
};
use crate::error::ApiError;
use crate::policy::Access;

/// `GET|POST /subscribe/{channel}`.
pub async fn subscribe(
    State(state): State<AppState>,
    _caller: Caller,
    route: MatchedPath,
    headers: HeaderMap,
    uri: Uri,
    _body: RawBody,
) -> Result<Response, ApiError> {
    let recheck = Recheck::new(&state, &route, &headers, &uri);
    topic_stream(&state, TopicKind::Channel, uri.path(), recheck).await
}

/// `GET|POST /psubscribe/{pattern}`.
pub async fn psubscribe(
    State(state): State<AppState>,
    _caller: Caller,
    route: MatchedPath,
    headers: HeaderMap,
    uri: Uri,
    _body: RawBody,
) -> Result<Response, ApiError> {
    let recheck = Recheck::new(&state, &route, &headers, &uri);
    topic_stream(&state, TopicKind::Pattern, uri.path(), recheck).await
}

/// `GET|POST /ssubscribe/{channel}`: sharded Pub/Sub (`SPUBLISH`), on the primary
/// that owns the channel's hash slot.
pub async fn ssubscribe(
    State(state): State<AppState>,
    _caller: Caller,
    route: MatchedPath,
    headers: HeaderMap,
    uri: Uri,
    _body: RawBody,
) -> Result<Response, ApiError> {
    let recheck = Recheck::new(&state, &route, &headers, &uri);
    topic_stream(&state, TopicKind::Shard, uri.path(), recheck).await
}

/// `GET|POST /monitor`: every command Redis runs (standard token only).
pub async fn monitor(
    State(state): State<AppState>,
    Caller(access): Caller,
    route: MatchedPath,
    headers: HeaderMap,
    uri: Uri,
    _body: RawBody,
) -> Result<Response, ApiError> {
    if access == Access::ReadOnly {
        return Err(ApiError::Forbidden(
            "NOPERM this user has no permissions to run the 'monitor' command".into(),
        ));
    }
    let hub = hub(&state)?;
    let source = hub.monitor().await.map_err(api_error)?;
    let recheck = Recheck::new(&state, &route, &headers, &uri);
    Ok(respond(
        hub,
        "\"OK\"".to_string(),
        Source::Monitor(source),
        recheck,
    ))
}

async fn topic_stream(
    state: &AppState,
    kind: TopicKind,
    raw_path: &str,
    recheck: Recheck,
) -> Result<Response, ApiError> {
    let name = topic_name(raw_path);
    let verb = match kind {
        TopicKind::Channel => "subscribe",
        TopicKind::Pattern => "psubscribe",
        TopicKind::Shard => "ssubscribe",
    };
    if name.is_empty() {
        let what = if kind == TopicKind::Pattern {
            "pattern"
        } else {
            "channel"
        };
        return Err(ApiError::BadRequest(format!(
            "ERR empty {what} name: use /{verb}/<{what}>"
        )));
    }
    let hub = hub(state)?;
    let subscription = hub.subscribe(kind, name.clone()).await.map_err(api_error)?;
    let first = format!("{verb},{},1", String::from_utf8_lossy(&name));
    Ok(respond(hub, first, Source::Topic(subscription), recheck))
}

/// The channel or pattern: everything after the second `/` of the raw path,
/// each segment percent-decoded.
fn topic_name(raw_path: &str) -> Bytes {
    let rest = raw_path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .map_or("", |(_, rest)| rest);
    let mut name = Vec::with_capacity(rest.len());
    for (i, segment) in rest.split('/').enumerate() {
        if i > 0 {
            name.push(b'/');
        }
        name.extend(percent_decode(segment.as_bytes()));
    }
    Bytes::from(name)
}

fn hub(state: &AppState) -> Result<&PubSubHub, ApiError> {
    state
        .pubsub()
        .ok_or_else(|| ApiError::Unavailable("ERR Server-Sent Events are not available".into()))
}

fn api_error(error: StreamError) -> ApiError {
    match error {
        StreamError::Redis(text) => ApiError::Redis(text),
        other => ApiError::Unavailable(other.to_string()),
    }
}

/// Where a stream's events come from.
enum Source {
    Topic(Subscription),
    Monitor(MonitorStream),
}

impl Source {
    async fn next(&mut self) -> Delivery {
        match self {
            Source::Topic(subscription) => subscription.next().await,
            Source::Monitor(monitor) => monitor.next().await,
        }
    }
}

/// What checks a stream's token again while it is open.
struct Recheck {
    state: AppState,
    token: String,
    endpoint: String,
    path: String,
}

impl Recheck {
    /// For a stream that `Caller` has just admitted.
    fn new(state: &AppState, route: &MatchedPath, headers: &HeaderMap, uri: &Uri) -> Recheck {
        let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = presented_token(header, uri.query()).unwrap_or_default();
        Recheck {
            state: state.clone(),
            token: token.into_owned(),
            endpoint: route.as_str().to_string(),
            path: uri.path().to_string(),
        }
    }

    fn check(&self) -> Result<(), String> {
        recheck_stream(&self.state, &self.token, &self.endpoint, &self.path)
    }
}

/// A stream's state between events; dropping it releases the Redis resources.
struct Live {
    first: Option<String>,
    source: Source,
    closing: CancellationToken,
    recheck: Recheck,
    /// When the token is checked next.
    next_check: Instant,
    /// How often the token is checked again (the keepalive interval).
    every: std::time::Duration,
}

fn respond(hub: &PubSubHub, first: String, source: Source, recheck: Recheck) -> Response {
    let live = Live {
        first: Some(first),
        source,
        closing: hub.closing().clone(),
        recheck,
        next_check: Instant::now() + hub.keepalive(),
        every: hub.keepalive(),
    };
    let keep_alive = KeepAlive::new().interval(hub.keepalive()).text("keepalive");
    let mut response = Sse::new(events(live))
        .keep_alive(keep_alive)
        .into_response();
    // Ask reverse proxies (nginx) not to buffer the stream.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}

fn events(live: Live) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(Some(live), |live| async move {
        let mut live = live?;
        if let Some(first) = live.first.take() {
            return Some((Ok(Event::default().data(first)), Some(live)));
        }
        let delivery = loop {
            tokio::select! {
                biased;
                _ = live.closing.cancelled() => {
                    return Some((Ok(last_event("restash is shutting down")), None));
                }
                _ = tokio::time::sleep_until(live.next_check) => {
                    if let Err(reason) = live.recheck.check() {
                        let reason = format!("the token no longer opens this stream: {reason}");
                        return Some((Ok(last_event(&reason)), None));
                    }
                    live.next_check = Instant::now() + live.every;
                }
                // (Cancel-safe: an event not yet received stays in the channel.)
                delivery = live.source.next() => break delivery,
            }
        };
        match delivery {
            Delivery::Event(data) => Some((Ok(Event::default().data(&*data)), Some(live))),
            Delivery::Overflow => Some((
                Ok(last_event(
                    "the client read too slowly and fell too many events behind",
                )),
                None,
            )),
            Delivery::Lost => Some((Ok(last_event("the connection to Redis was lost")), None)),
            Delivery::Unsubscribed => Some((Ok(last_event(SLOT_MOVED)), None)),
        }
    })
}

/// Why a sharded stream ends when its channel's slot leaves the node.
const SLOT_MOVED: &str = "Redis ended the subscription: \
    the channel's hash slot moved to another node; subscribe again";

fn last_event(reason: &str) -> Event {
    Event::default()
        .event("error")
        .data(format!("ERR stream closed: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_come_from_the_raw_path() {
        assert_eq!(topic_name("/subscribe/chat"), Bytes::from("chat"));
        assert_eq!(topic_name("/subscribe/room/1"), Bytes::from("room/1"));
        assert_eq!(topic_name("/subscribe/a%2Fb%20c+d"), Bytes::from("a/b c+d"));
        assert_eq!(topic_name("/psubscribe/user:*"), Bytes::from("user:*"));
        assert_eq!(topic_name("/subscribe/%FF"), Bytes::from_static(b"\xff"));
    }
}
