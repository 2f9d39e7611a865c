//! Lease tokens and the rule that refuses stale fills.
//!
//! A token is `<seq>.<32 hex digits>`: `seq` is the namespace's invalidation counter read
//! before the lease was granted. The lease key stores the whole token, so a forged `seq`
//! never matches.

use std::time::Duration;

use bytes::Bytes;

/// Longest lease a `GET ?lease=` may ask for.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);
/// Longest `?wait=` for a value another caller is computing.
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// First delay between two looks while waiting; it doubles up to [`MAX_POLL_DELAY`].
pub const FIRST_POLL_DELAY: Duration = Duration::from_millis(5);
/// Longest delay between two looks while waiting.
pub const MAX_POLL_DELAY: Duration = Duration::from_millis(50);

/// A lease token, as handed out in `X-Cache-Lease`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseToken {
    seq: u64,
    text: String,
}

impl LeaseToken {
    /// A new random token for a lease granted after invalidation number `seq`.
    pub fn new(seq: u64) -> LeaseToken {
        LeaseToken {
            seq,
            text: format!("{seq}.{:032x}", rand::random::<u128>()),
        }
    }

    /// Parses a token sent back by a client; `None` when it is malformed.
    pub fn parse(text: &str) -> Option<LeaseToken> {
        let (seq, random) = text.split_once('.')?;
        let valid = random.len() == 32 && random.bytes().all(|b| b.is_ascii_hexdigit());
        let seq = seq
            .parse::<u64>()
            .ok()
            .filter(|_| valid && !seq.starts_with('+'))?;
        Some(LeaseToken {
            seq,
            text: text.to_string(),
        })
    }

    /// The invalidation counter when it was granted.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The invalidation-log member recorded for an invalidated tag.
pub fn tag_record(tag: &str) -> Bytes {
    let mut out = Vec::with_capacity(tag.len() + 2);
    out.extend_from_slice(b"t:");
    out.extend_from_slice(tag.as_bytes());
    out.into()
}

/// The invalidation-log member recorded for an invalidated key prefix.
pub fn prefix_record(prefix: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(prefix.len() + 2);
    out.extend_from_slice(b"p:");
    out.extend_from_slice(prefix);
    out.into()
}

/// What the invalidation log says about a lease granted after invalidation `since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogView {
    /// Records at or below this sequence number were dropped from the log.
    pub cut: u64,
    /// The namespace's invalidation counter now.
    pub seq: u64,
    /// Records (`t:<tag>`, `p:<prefix>`) of invalidations after `since`.
    pub records: Vec<Bytes>,
}

/// Whether a fill of `key` with `tags` under a lease taken at `since` must be refused:
/// a matching invalidation happened after it, or the log cannot tell: it no longer
/// reaches back that far, the counter went back (the namespace's meta hash was evicted
/// or flushed), or invalidations happened but their records are gone (the log was).
pub fn invalidated_since(view: &LogView, since: u64, key: &[u8], tags: &[String]) -> bool {
    if view.cut > since || view.seq < since {
        return true;
    }
    // Every invalidation records at least one member scored with its number.
    if view.seq > since && view.records.is_empty() {
        return true;
    }
    view.records.iter().any(|record| {
        if let Some(prefix) = record.strip_prefix(b"p:") {
            key.starts_with(prefix)
        } else if let Some(tag) = record.strip_prefix(b"t:") {
            tags.iter().any(|t| t.as_bytes() == tag)
        } else {
            false
        }
    })
}

/// The delay before the next look while waiting, given the previous one.
pub fn next_poll_delay(previous: Duration) -> Duration {
    (previous * 2).clamp(FIRST_POLL_DELAY, MAX_POLL_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let token = LeaseToken::new(42);
        assert!(token.as_str().starts_with("42."));
        assert_eq!(LeaseToken::parse(token.as_str()), Some(token.clone()));
        assert_ne!(LeaseToken::new(42), token);
        for bad in [
            "",
            "42",
            "x.0123456789abcdef0123456789abcdef",
            "+1.0123456789abcdef0123456789abcdef",
            "1.0123",
            "1.0123456789abcdef0123456789abcdeg",
        ] {
            assert_eq!(LeaseToken::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn stale_fill_rule() {
        let tags = vec!["users".to_string()];
        // Leases taken at 5; each record one invalidation after it.
        let view = |cut, records: &[&[u8]]| LogView {
            cut,
            seq: 5 + records.len() as u64,
            records: records.iter().map(|r| Bytes::copy_from_slice(r)).collect(),
        };
        assert!(!invalidated_since(&view(0, &[]), 5, b"user/1", &tags));
        assert!(invalidated_since(&view(0, &[b"t:users"]), 5, b"k", &tags));
        assert!(!invalidated_since(&view(0, &[b"t:other"]), 5, b"k", &tags));
        assert!(invalidated_since(
            &view(0, &[b"p:user/"]),
            5,
            b"user/1",
            &[]
        ));
        assert!(invalidated_since(&view(0, &[b"p:"]), 5, b"anything", &[]));
        assert!(!invalidated_since(
            &view(0, &[b"p:user/2"]),
            5,
            b"user/1",
            &[]
        ));
        // The log was truncated past the lease: refuse to be safe.
        assert!(invalidated_since(&view(6, &[]), 5, b"k", &[]));
        assert!(!invalidated_since(&view(5, &[]), 5, b"k", &[]));
        // The counter went back (meta evicted), or invalidations left no record (the
        // log evicted): nothing can be told, so refuse.
        let lost = |seq| LogView {
            cut: 0,
            seq,
            records: Vec::new(),
        };
        assert!(invalidated_since(&lost(1), 5, b"k", &[]));
        assert!(invalidated_since(&lost(7), 5, b"k", &[]));
        assert!(!invalidated_since(&lost(5), 5, b"k", &[]));
        assert!(!invalidated_since(&lost(0), 0, b"k", &[]));
        assert_eq!(&tag_record("a")[..], b"t:a");
        assert_eq!(&prefix_record(b"a")[..], b"p:a");
    }

    #[test]
    fn poll_delays_grow_and_stop() {
        let mut d = Duration::ZERO;
        let mut seen = vec![];
        for _ in 0..6 {
            d = next_poll_delay(d);
            seen.push(d.as_millis());
        }
        assert_eq!(seen, [5, 10, 20, 40, 50, 50]);
    }
}
