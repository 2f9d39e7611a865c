//! Query parameters and bodies of the cache routes, validated with clear errors.
//!
//! ```text
//! GET    /cache/<ns>/<key>[?lease=<seconds>][&wait=<ms>]
//! PUT    /cache/<ns>/<key>?ttl=<seconds>[&swr=<seconds>][&tags=<tag>,<tag>…]
//! DELETE /cache/<ns>/<key>
//! POST   /cache/<ns>/invalidate   {"tags": ["a", …]} | {"prefix": "user/"}
//! GET    /cache/<ns>
//! ```
//! `_token` is accepted everywhere (authentication); any other parameter is an error.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use super::keys::MAX_KEY_LEN;
use super::lease::{MAX_LEASE, MAX_WAIT};

/// Longest TTL and stale window: one year.
pub const MAX_TTL_SECONDS: u64 = 365 * 24 * 3600;
/// Most tags on one entry.
pub const MAX_TAGS: usize = 32;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 128;

/// A malformed request: answered 400 with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// `GET` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetParams {
    /// Ask for a lease of this length on a miss or a stale hit.
    pub lease: Option<Duration>,
    /// How long to wait while another caller holds the lease.
    pub wait: Duration,
}

/// `PUT` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutParams {
    /// How long the value is fresh.
    pub ttl: Duration,
    /// How long after that it may still be served as stale.
    pub swr: Duration,
    /// Tags for invalidation.
    pub tags: Vec<String>,
}

/// What `POST /cache/<ns>/invalidate` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// Every entry stored with any of these tags.
    Tags(Vec<String>),
    /// Every entry whose key starts with these bytes (empty: the whole namespace).
    Prefix(Bytes),
}

/// Parses the `GET` query.
pub fn parse_get(query: Option<&str>) -> Result<GetParams, InputError> {
    let mut params = GetParams::default();
    for (name, value) in pairs(query, &["lease", "wait"])? {
        match name.as_str() {
            "lease" => {
                params.lease = Some(Duration::from_secs(bounded(
                    "lease",
                    &value,
                    1,
                    MAX_LEASE.as_secs(),
                    "whole seconds",
                )?))
            }
            _ => {
                params.wait = Duration::from_millis(bounded(
                    "wait",
                    &value,
                    0,
                    MAX_WAIT.as_millis() as u64,
                    "milliseconds",
                )?)
            }
        }
    }
    Ok(params)
}

/// Parses the `PUT` query; `ttl` is required.
pub fn parse_put(query: Option<&str>) -> Result<PutParams, InputError> {
    let mut ttl = None;
    let mut swr = Duration::ZERO;
    let mut tags = Vec::new();
    for (name, value) in pairs(query, &["ttl", "swr", "tags"])? {
        match name.as_str() {
            "ttl" => {
                ttl = Some(Duration::from_secs(bounded(
                    "ttl",
                    &value,
                    1,
                    MAX_TTL_SECONDS,
                    "whole seconds",
                )?))
            }
            "swr" => {
                swr = Duration::from_secs(bounded(
                    "swr",
                    &value,
                    0,
                    MAX_TTL_SECONDS,
                    "whole seconds",
                )?)
            }
            _ => tags = parse_tag_list(&value)?,
        }
    }
    let ttl = ttl.ok_or_else(|| {
        InputError(format!(
            "ERR missing ttl: PUT needs ?ttl=<whole seconds between 1 and {MAX_TTL_SECONDS}>"
        ))
    })?;
    Ok(PutParams { ttl, swr, tags })
}

/// Checks that a route without parameters got none (besides `_token`).
pub fn parse_none(query: Option<&str>) -> Result<(), InputError> {
    pairs(query, &[]).map(|_| ())
}

/// Parses an invalidation body: exactly one of `tags` (non-empty) and `prefix`.
pub fn parse_invalidation(body: &[u8]) -> Result<Invalidation, InputError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        tags: Option<Vec<String>>,
        prefix: Option<String>,
    }
    const SHAPE: &str = r#"expected {"tags": ["…"]} or {"prefix": "…"}"#;
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| InputError(format!("ERR invalid invalidation body ({e}): {SHAPE}")))?;
    match (body.tags, body.prefix) {
        (Some(tags), None) => {
            if tags.is_empty() {
                return Err(InputError("ERR tags must not be empty".into()));
            }
            if tags.len() > 1000 {
                return Err(InputError("ERR at most 1000 tags per invalidation".into()));
            }
            for tag in &tags {
                check_tag(tag)?;
            }
            Ok(Invalidation::Tags(tags))
        }
        // Every invalidation is kept in the namespace's log and read back by lease fills.
        (None, Some(prefix)) if prefix.len() > MAX_KEY_LEN => Err(InputError(format!(
            "ERR invalidation prefix longer than {MAX_KEY_LEN} bytes (the longest cache key)"
        ))),
        (None, Some(prefix)) => Ok(Invalidation::Prefix(Bytes::from(prefix))),
        _ => Err(InputError(format!(
            "ERR invalid invalidation body: {SHAPE}, not both or neither"
        ))),
    }
}

/// Parses `a,b,c`.
pub fn parse_tag_list(value: &str) -> Result<Vec<String>, InputError> {
    let tags: Vec<String> = value.split(',').map(str::to_string).collect();
    if tags.len() > MAX_TAGS {
        return Err(InputError(format!("ERR at most {MAX_TAGS} tags per entry")));
    }
    for tag in &tags {
        check_tag(tag)?;
    }
    let mut unique = tags.clone();
    unique.sort();
    unique.dedup();
    if unique.len() != tags.len() {
        return Err(InputError(format!("ERR duplicate tag in '{value}'")));
    }
    Ok(tags)
}

fn check_tag(tag: &str) -> Result<(), InputError> {
    if tag.is_empty() || tag.len() > MAX_TAG_LEN || tag.contains(',') {
        return Err(InputError(format!(
            "ERR invalid tag '{tag}': expected 1 to {MAX_TAG_LEN} bytes without commas"
        )));
    }
    if tag.chars().any(char::is_control) {
        return Err(InputError(format!(
            "ERR invalid tag {tag:?}: control characters are not allowed"
        )));
    }
    Ok(())
}

/// The query's parameters other than `_token`: each known, each at most once.
fn pairs(query: Option<&str>, allowed: &[&str]) -> Result<Vec<(String, String)>, InputError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if name == "_token" {
            continue;
        }
        if !allowed.contains(&name.as_ref()) {
            let expected = if allowed.is_empty() {
                "this route takes none".to_string()
            } else {
                format!("expected {}", allowed.join(", "))
            };
            return Err(InputError(format!(
                "ERR unknown query parameter '{name}': {expected}"
            )));
        }
        if out.iter().any(|(seen, _)| *seen == name) {
            return Err(InputError(format!(
                "ERR query parameter '{name}' given more than once"
            )));
        }
        out.push((name.into_owned(), value.into_owned()));
    }
    Ok(out)
}

fn bounded(name: &str, value: &str, min: u64, max: u64, unit: &str) -> Result<u64, InputError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n) && !value.starts_with('+'))
        .ok_or_else(|| {
            InputError(format!(
                "ERR invalid {name} '{value}': expected {unit} between {min} and {max}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err<T: std::fmt::Debug>(r: Result<T, InputError>) -> String {
        r.unwrap_err().0
    }

    #[test]
    fn get_params() {
        assert_eq!(parse_get(None).unwrap(), GetParams::default());
        assert_eq!(
            parse_get(Some("lease=10&wait=2000&_token=x")).unwrap(),
            GetParams {
                lease: Some(Duration::from_secs(10)),
                wait: Duration::from_millis(2000)
            }
        );
        assert_eq!(
            err(parse_get(Some("lease=0"))),
            "ERR invalid lease '0': expected whole seconds between 1 and 3600"
        );
        assert_eq!(
            err(parse_get(Some("wait=10001"))),
            "ERR invalid wait '10001': expected milliseconds between 0 and 10000"
        );
        assert_eq!(
            err(parse_get(Some("ttl=1"))),
            "ERR unknown query parameter 'ttl': expected lease, wait"
        );
        assert_eq!(
            err(parse_get(Some("wait=1&wait=2"))),
            "ERR query parameter 'wait' given more than once"
        );
    }

    #[test]
    fn put_params() {
        let p = parse_put(Some("ttl=60&swr=30&tags=a,b")).unwrap();
        assert_eq!(p.ttl, Duration::from_secs(60));
        assert_eq!(p.swr, Duration::from_secs(30));
        assert_eq!(p.tags, ["a", "b"]);
        let p = parse_put(Some("ttl=1")).unwrap();
        assert_eq!((p.swr, p.tags.len()), (Duration::ZERO, 0));
        for (query, text) in [
            ("", "ERR missing ttl"),
            (
                "ttl=abc",
                "ERR invalid ttl 'abc': expected whole seconds between 1 and 31536000",
            ),
            ("ttl=-1", "ERR invalid ttl '-1'"),
            ("ttl=%2B5", "ERR invalid ttl '+5'"),
            ("ttl=+5", "ERR invalid ttl ' 5'"),
            ("ttl=0", "ERR invalid ttl '0'"),
            ("ttl=1.5", "ERR invalid ttl '1.5'"),
            ("ttl=31536001", "ERR invalid ttl"),
            ("ttl=1&swr=x", "ERR invalid swr 'x'"),
            ("ttl=1&tags=a,,b", "ERR invalid tag ''"),
            ("ttl=1&tags=a,a", "ERR duplicate tag"),
            (
                "ttl=1&tag=a",
                "ERR unknown query parameter 'tag': expected ttl, swr, tags",
            ),
        ] {
            let got = err(parse_put(Some(query)));
            assert!(got.starts_with(text), "{query}: {got}");
        }
        let many = (0..33).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert!(parse_put(Some(&format!("ttl=1&tags={many}"))).is_err());
    }

    #[test]
    fn no_params() {
        assert!(parse_none(None).is_ok());
        assert!(parse_none(Some("_token=abc")).is_ok());
        assert_eq!(
            err(parse_none(Some("x=1"))),
            "ERR unknown query parameter 'x': this route takes none"
        );
    }

    #[test]
    fn invalidation_bodies() {
        assert_eq!(
            parse_invalidation(br#"{"tags":["a","b"]}"#).unwrap(),
            Invalidation::Tags(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse_invalidation(br#"{"prefix":"user/"}"#).unwrap(),
            Invalidation::Prefix(Bytes::from_static(b"user/"))
        );
        assert_eq!(
            parse_invalidation(br#"{"prefix":""}"#).unwrap(),
            Invalidation::Prefix(Bytes::new())
        );
        for bad in [
            &br#"{}"#[..],
            br#"{"tags":[]}"#,
            br#"{"tags":["a"],"prefix":"p"}"#,
            br#"{"tag":["a"]}"#,
            br#"{"tags":"a"}"#,
            br#"{"tags":[""]}"#,
            b"not json",
        ] {
            assert!(
                parse_invalidation(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
