//! A stored entry and the HTTP header values derived from it.
//!
//! Times are milliseconds of the Redis server's clock (`TIME`), so every restash instance
//! agrees on freshness without trusting its own clock.

use bytes::Bytes;

/// Content type stored when a `PUT` sends none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// One cached value with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stored bytes, exactly.
    pub data: Bytes,
    /// The `Content-Type` given when it was stored.
    pub content_type: Bytes,
    /// When it was stored.
    pub stored_at: u64,
    /// Fresh before this instant.
    pub fresh_until: u64,
    /// Served as stale before this instant (the key expires then).
    pub stale_until: u64,
    /// The quoted strong ETag.
    pub etag: Bytes,
}

impl Entry {
    /// Whole seconds since it was stored (the `Age` header).
    pub fn age(&self, now: u64) -> u64 {
        now.saturating_sub(self.stored_at) / 1000
    }

    /// Whether it is still fresh at `now`.
    pub fn is_fresh(&self, now: u64) -> bool {
        now < self.fresh_until
    }

    /// The `Cache-Control` value at `now`: the remaining fresh seconds, or for a stale
    /// entry `max-age=0` and the remaining stale-while-revalidate seconds.
    pub fn cache_control(&self, now: u64) -> String {
        if self.is_fresh(now) {
            format!("max-age={}", (self.fresh_until - now) / 1000)
        } else {
            format!(
                "max-age=0, stale-while-revalidate={}",
                self.stale_until.saturating_sub(now) / 1000
            )
        }
    }

    /// Whether an `If-None-Match` header value names this entry (weak comparison, `*` too).
    pub fn matches_if_none_match(&self, header: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(header) else {
            return false;
        };
        text.split(',').map(str::trim).any(|candidate| {
            candidate == "*" || candidate.trim_start_matches("W/").as_bytes() == &self.etag[..]
        })
    }
}

/// The strong ETag of a value: a quoted SHA-1 prefix of its content type and bytes.
pub fn etag_for(content_type: &[u8], data: &[u8]) -> String {
    let mut hasher = sha1_smol::Sha1::new();
    hasher.update(content_type);
    hasher.update(b"\0");
    hasher.update(data);
    let hex = hasher.digest().to_string();
    format!("\"{}\"", &hex[..24])
}

/// Whether `value` can be stored as a content type (visible ASCII and spaces, not empty).
pub fn valid_content_type(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= 256 && value.iter().all(|&b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            data: Bytes::from_static(b"\x00\xffbody"),
            content_type: Bytes::from_static(b"text/plain"),
            stored_at: 1_000_000,
            fresh_until: 1_060_000,
            stale_until: 1_090_000,
            etag: Bytes::from(etag_for(b"text/plain", b"\x00\xffbody")),
        }
    }

    #[test]
    fn age_and_cache_control() {
        let e = entry();
        assert_eq!(e.age(1_000_999), 0);
        assert_eq!(e.age(1_002_500), 2);
        assert_eq!(e.age(999_000), 0);
        assert!(e.is_fresh(1_059_999));
        assert!(!e.is_fresh(1_060_000));
        assert_eq!(e.cache_control(1_000_000), "max-age=60");
        assert_eq!(e.cache_control(1_059_999), "max-age=0");
        assert_eq!(
            e.cache_control(1_070_000),
            "max-age=0, stale-while-revalidate=20"
        );
        assert_eq!(
            e.cache_control(1_095_000),
            "max-age=0, stale-while-revalidate=0"
        );
    }

    #[test]
    fn etags() {
        let a = etag_for(b"text/plain", b"x");
        assert_eq!(a.len(), 26);
        assert!(a.starts_with('"') && a.ends_with('"'));
        assert_eq!(a, etag_for(b"text/plain", b"x"));
        assert_ne!(a, etag_for(b"text/html", b"x"));
        assert_ne!(a, etag_for(b"text/plain", b"y"));
        let e = entry();
        let tag = String::from_utf8(e.etag.to_vec()).unwrap();
        assert!(e.matches_if_none_match(tag.as_bytes()));
        assert!(e.matches_if_none_match(format!("\"x\", W/{tag}").as_bytes()));
        assert!(e.matches_if_none_match(b"*"));
        assert!(!e.matches_if_none_match(b"\"other\""));
        assert!(!e.matches_if_none_match(b"\xff"));
    }

    #[test]
    fn content_types() {
        assert!(valid_content_type(b"application/json; charset=utf-8"));
        assert!(!valid_content_type(b""));
        assert!(!valid_content_type(b"a\nb"));
    }
}
