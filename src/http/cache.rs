//! The cache-aside API (semantics in [`crate::cache`]):
//!
//! ```text
//! GET    /cache/<ns>/<key>[?lease=<s>&wait=<ms>]  200 HIT|STALE (bytes), 304, 404 MISS|BYPASS
//! PUT    /cache/<ns>/<key>?ttl=<s>[&swr=<s>][&tags=a,b]  [X-Cache-Lease: <token>]  200, 409
//! DELETE /cache/<ns>/<key>                         200 {"removed": 0|1}
//! POST   /cache/<ns>/invalidate                    {"tags": […]} | {"prefix": "…"} -> {"removed": n}
//! GET    /cache/<ns>                               stats of every instance together
//! ```
//! One route (`/cache/{*rest}`) dispatches by method and path, so that a key may be called
//! `invalidate` (only `POST` there invalidates) and may contain `/`.

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use percent_encoding::percent_decode_str;

use super::extract::{Caller, RawBody};
use super::AppState;
use crate::cache::entry::{etag_for, valid_content_type, DEFAULT_CONTENT_TYPE};
use crate::cache::keys::{check_key, EntryKeys};
use crate::cache::params::{self, GetParams};
use crate::cache::store::FillValue;
use crate::cache::{
    Cache, CacheError, Entry, Event, FillOutcome, InputError, LeaseToken, Lookup, Namespace,
};
use crate::error::{json_error, ApiError};
use crate::policy::scope::CacheOperation;
use crate::policy::Access;

/// `HIT`, `STALE`, `MISS` or `BYPASS`.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// The lease token: handed out by `GET ?lease=`, sent back with the filling `PUT`.
pub const X_CACHE_LEASE: HeaderName = HeaderName::from_static("x-cache-lease");

/// What a path under `/cache/` names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// `/cache/<ns>`.
    Namespace(Namespace),
    /// `/cache/<ns>/<key>` (including the key `invalidate`).
    Item(Namespace, Bytes),
}

/// Every request under `/cache/`.
pub async fn dispatch(
    State(state): State<AppState>,
    Caller(caller): Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let target = parse_target(uri.path())?;
    // A prefixed token's namespaces lie under its prefixes; its backend holds its cache.
    let (Target::Namespace(ns) | Target::Item(ns, _)) = &target;
    caller.check_namespace(ns.as_str())?;
    let state = state.for_caller(&caller)?;
    let table = state.command_table();
    // A read-only token may only read; refused writes are audited like every other
    // refusal. Then the token's command rules judge the operation.
    let admit = |operation: CacheOperation| -> Result<(), ApiError> {
        if operation != CacheOperation::Read {
            writable(caller.access())
                .inspect_err(|e| caller.audit("cache", "read_only", &e.to_string()))?;
        }
        Ok(caller.check_cache(operation, table.as_deref())?)
    };
    let query = uri.query();
    match (target, method) {
        (Target::Namespace(ns), Method::GET | Method::HEAD) => {
            admit(CacheOperation::Read)?;
            stats(&state, &ns, query).await
        }
        (Target::Namespace(_), _) => Ok(method_not_allowed("GET, HEAD")),
        (Target::Item(ns, key), Method::POST) if &key[..] == b"invalidate" => {
            admit(CacheOperation::Remove)?;
            invalidate(&state, &ns, query, &body).await
        }
        (Target::Item(ns, key), Method::GET | Method::HEAD) => {
            let params = params::parse_get(query)?;
            admit(CacheOperation::Read)?;
            if params.lease.is_some() {
                admit(CacheOperation::Write)?;
            }
            Ok(get(&state, &ns, &key, params, &headers).await)
        }
        (Target::Item(ns, key), Method::PUT) => {
            admit(CacheOperation::Write)?;
            put(&state, &ns, key, query, &headers, body).await
        }
        (Target::Item(ns, key), Method::DELETE) => {
            admit(CacheOperation::Remove)?;
            params::parse_none(query)?;
            let removed = cache(&state)
                .remove(state.backend(), &EntryKeys::new(&ns, &key))
                .await
                .map_err(unavailable)?;
            Ok(removed_json(u64::from(removed)))
        }
        (Target::Item(_, key), _) if &key[..] == b"invalidate" => {
            Ok(method_not_allowed("GET, HEAD, PUT, DELETE, POST"))
        }
        (Target::Item(..), _) => Ok(method_not_allowed("GET, HEAD, PUT, DELETE")),
    }
}

impl From<InputError> for ApiError {
    fn from(error: InputError) -> Self {
        ApiError::BadRequest(error.0)
    }
}

fn cache(state: &AppState) -> &Cache {
    state.cache()
}

/// `GET /cache/<ns>/<key>`: hit, stale, wait for a lease holder, or miss; fails open.
async fn get(
    state: &AppState,
    ns: &Namespace,
    key: &[u8],
    params: GetParams,
    headers: &HeaderMap,
) -> Response {
    let cache = cache(state);
    let backend = state.backend();
    let keys = EntryKeys::new(ns, key);
    let outcome = async {
        let token = match params.lease {
            Some(_) => Some(LeaseToken::new(cache.invalidation_seq(backend, ns).await?)),
            None => None,
        };
        let lease = params.lease.zip(token.as_ref());
        let first = if lease.is_none() && params.wait.is_zero() {
            cache.peek(backend, &keys).await?
        } else {
            cache.lookup(backend, &keys, lease).await?
        };
        if first != Lookup::Held || params.wait.is_zero() {
            return Ok((first, token));
        }
        cache.record(ns, Event::LeaseWait);
        let deadline = Instant::now() + params.wait;
        let mut found = Lookup::Held;
        while found == Lookup::Held && Instant::now() < deadline {
            found = cache.wait_for_fill(backend, &keys, deadline).await?;
            if found == (Lookup::Miss { granted: false }) && lease.is_some() {
                // The lease ended without a value: compete for the next one.
                found = cache.lookup(backend, &keys, lease).await?;
            }
        }
        Ok((found, token))
    };
    let (lookup, token) = match outcome.await {
        Ok(found) => found,
        Err(error) => return bypass(cache, ns, &error),
    };
    match lookup {
        Lookup::Hit { entry, now } => {
            cache.record(ns, Event::Hit);
            serve_entry(&entry, now, "HIT", None, headers)
        }
        Lookup::Stale {
            entry,
            now,
            granted,
        } => {
            cache.record(ns, Event::Stale);
            let lease = granted.then_some(token).flatten();
            if lease.is_some() {
                cache.record(ns, Event::LeaseGrant);
            }
            serve_entry(&entry, now, "STALE", lease.as_ref(), headers)
        }
        Lookup::Miss { granted } => {
            cache.record(ns, Event::Miss);
            let lease = granted.then_some(token).flatten();
            if lease.is_some() {
                cache.record(ns, Event::LeaseGrant);
            }
            miss(lease.as_ref())
        }
        Lookup::Held => {
            cache.record(ns, Event::Miss);
            miss(None)
        }
    }
}

/// `PUT /cache/<ns>/<key>`: stores the body (a lease fill when `X-Cache-Lease` is sent).
async fn put(
    state: &AppState,
    ns: &Namespace,
    key: Bytes,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = params::parse_put(query)?;
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => Bytes::from_static(DEFAULT_CONTENT_TYPE.as_bytes()),
        Some(value) if valid_content_type(value.as_bytes()) => {
            Bytes::copy_from_slice(value.as_bytes())
        }
        Some(_) => {
            return Err(ApiError::BadRequest(
                "ERR invalid Content-Type: expected up to 256 visible ASCII characters".into(),
            ))
        }
    };
    let token =
        match headers.get(X_CACHE_LEASE) {
            None => None,
            Some(value) => Some(value.to_str().ok().and_then(LeaseToken::parse).ok_or_else(
                || {
                    ApiError::BadRequest(
                        "ERR malformed X-Cache-Lease: send back the token a GET handed out".into(),
                    )
                },
            )?),
        };
    let etag = etag_for(&content_type, &body);
    let value = FillValue {
        data: body,
        content_type,
        etag: Bytes::from(etag.clone()),
    };
    // A fill is several steps (store, tag, check the log, maybe undo). It runs in a task
    // of its own, so that a client that goes away cannot leave it half done.
    let fill = {
        let (state, ns) = (state.clone(), ns.clone());
        tokio::spawn(async move {
            cache(&state)
                .fill(state.backend(), &ns, &key, value, &params, token.as_ref())
                .await
        })
    };
    let outcome = match fill.await {
        Ok(outcome) => outcome.map_err(unavailable)?,
        // A panic stays a panic (the gate answers 500); otherwise restash is stopping.
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => return Err(unavailable(CacheError::Stopping)),
    };
    let cache = cache(state);
    let text = match outcome {
        FillOutcome::Stored => {
            cache.record(ns, Event::Fill);
            let mut body = serde_json::json!({"stored": true, "etag": etag}).to_string();
            body.push('\n');
            let mut response = json_response(StatusCode::OK, body);
            if let Ok(value) = HeaderValue::from_str(&etag) {
                response.headers_mut().insert(header::ETAG, value);
            }
            return Ok(response);
        }
        FillOutcome::LeaseLost => {
            "ERR the lease is no longer held (it expired, or a DELETE, a write or an invalidation cancelled it): value not stored"
        }
        FillOutcome::Invalidated => {
            "ERR the entry was invalidated after the lease was granted: value not stored"
        }
    };
    Ok(json_error(StatusCode::CONFLICT, text))
}

/// `POST /cache/<ns>/invalidate`.
async fn invalidate(
    state: &AppState,
    ns: &Namespace,
    query: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    params::parse_none(query)?;
    let what = params::parse_invalidation(body)?;
    let removed = cache(state)
        .invalidate(state.backend(), ns, &what)
        .await
        .map_err(unavailable)?;
    Ok(removed_json(removed))
}

/// `GET /cache/<ns>`.
async fn stats(
    state: &AppState,
    ns: &Namespace,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    params::parse_none(query)?;
    // This process's pending counts first, in a task of their own: a request that is
    // cut short (timeout, reset) must not cut a flush short, which would lose them.
    let flushing = state.clone();
    let flush = tokio::spawn(async move { flushing.cache().flush_stats(flushing.backend()).await });
    let _ = flush.await;
    let stats = cache(state)
        .stats(state.backend(), ns)
        .await
        .map_err(unavailable)?;
    Ok(json_response(StatusCode::OK, stats.to_string()))
}

/// Parses `/cache/<ns>[/<key>]`, percent-decoding each part (the key as raw bytes).
fn parse_target(path: &str) -> Result<Target, InputError> {
    let rest = path.strip_prefix("/cache/").unwrap_or("");
    let (ns, key) = match rest.split_once('/') {
        Some((ns, key)) => (ns, Some(key)),
        None => (rest, None),
    };
    let ns = Namespace::parse(&percent_decode_str(ns).decode_utf8_lossy())?;
    match key {
        None => Ok(Target::Namespace(ns)),
        Some(raw) => {
            let key: Vec<u8> = percent_decode_str(raw).collect();
            check_key(&key)?;
            Ok(Target::Item(ns, Bytes::from(key)))
        }
    }
}

fn writable(access: Access) -> Result<(), ApiError> {
    match access {
        Access::Standard => Ok(()),
        Access::ReadOnly => Err(ApiError::Forbidden(
            "NOPERM this token is read-only: it may read the cache, not write it or take leases"
                .into(),
        )),
    }
}

/// A fresh or stale entry (or 304 when `If-None-Match` names it).
fn serve_entry(
    entry: &Entry,
    now: u64,
    x_cache: &'static str,
    lease: Option<&LeaseToken>,
    headers: &HeaderMap,
) -> Response {
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| entry.matches_if_none_match(v.as_bytes()));
    let mut response = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(entry.data.clone()));
        let content_type = HeaderValue::from_maybe_shared(entry.content_type.clone())
            .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
        r.headers_mut().insert(header::CONTENT_TYPE, content_type);
        r
    };
    let h = response.headers_mut();
    h.insert(X_CACHE, HeaderValue::from_static(x_cache));
    h.insert(header::AGE, HeaderValue::from(entry.age(now)));
    if let Ok(value) = HeaderValue::from_str(&entry.cache_control(now)) {
        h.insert(header::CACHE_CONTROL, value);
    }
    if let Ok(value) = HeaderValue::from_maybe_shared(entry.etag.clone()) {
        h.insert(header::ETAG, value);
    }
    add_lease(h, lease);
    response
}

/// 404 `X-Cache: MISS`, with the lease when this caller got it.
fn miss(lease: Option<&LeaseToken>) -> Response {
    let mut response = json_error(StatusCode::NOT_FOUND, "ERR cache miss");
    let h = response.headers_mut();
    h.insert(X_CACHE, HeaderValue::from_static("MISS"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    add_lease(h, lease);
    response
}

/// 404 `X-Cache: BYPASS`: Redis failed; the caller computes the value itself.
fn bypass(cache: &Cache, ns: &Namespace, error: &CacheError) -> Response {
    tracing::warn!(%error, namespace = ns.as_str(), "cache read failed open");
    cache.record(ns, Event::Bypass);
    let mut response = json_error(
        StatusCode::NOT_FOUND,
        &format!("ERR cache bypassed, compute the value yourself: {error}"),
    );
    let h = response.headers_mut();
    h.insert(X_CACHE, HeaderValue::from_static("BYPASS"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn add_lease(headers: &mut HeaderMap, lease: Option<&LeaseToken>) {
    if let Some(value) = lease.and_then(|t| HeaderValue::from_str(t.as_str()).ok()) {
        headers.insert(X_CACHE_LEASE, value);
    }
}

/// Writes fail with 503 when Redis is unreachable, slow or refuses.
fn unavailable(error: CacheError) -> ApiError {
    ApiError::Unavailable(error.to_string())
}

fn removed_json(removed: u64) -> Response {
    json_response(StatusCode::OK, format!("{{\"removed\":{removed}}}"))
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = json_error(StatusCode::METHOD_NOT_ALLOWED, "ERR method not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let ns = Namespace::parse("n").unwrap();
        assert_eq!(parse_target("/cache/n"), Ok(Target::Namespace(ns.clone())));
        assert_eq!(
            parse_target("/cache/n/a/b%2Fc%FF"),
            Ok(Target::Item(ns.clone(), Bytes::from_static(b"a/b/c\xff")))
        );
        assert_eq!(
            parse_target("/cache/n/invalidate"),
            Ok(Target::Item(ns, Bytes::from_static(b"invalidate")))
        );
        assert_eq!(
            parse_target("/cache/n/"),
            Err(InputError("ERR empty cache key".into()))
        );
        assert!(parse_target("/cache/").is_err());
        assert!(parse_target("/cache/a:b/k").is_err());
    }
}
