//! Redis key names of the cache (see the layout in the module docs of [`crate::cache`]).

use bytes::{BufMut, Bytes, BytesMut};

use super::params::InputError;

/// Every cache key starts with this.
pub const PREFIX: &str = "restash:cache:";
/// Longest namespace name.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// Longest cache key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// A validated namespace: 1 to 64 of `A-Z a-z 0-9 _ . -`.
///
/// Namespaces are chosen by operators (they name a cache, not an item): they appear in
/// Redis key names, in hash tags and as a metric label, so no `:`, braces or spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(String);

impl Namespace {
    /// Checks `name`.
    pub fn parse(name: &str) -> Result<Namespace, InputError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAMESPACE_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(Namespace(name.to_string()))
        } else {
            Err(InputError(format!(
                "ERR invalid cache namespace '{name}': expected 1 to {MAX_NAMESPACE_LEN} of A-Z a-z 0-9 _ . -"
            )))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a cache key: not empty, at most [`MAX_KEY_LEN`] bytes, any bytes otherwise.
pub fn check_key(key: &[u8]) -> Result<(), InputError> {
    if key.is_empty() {
        return Err(InputError("ERR empty cache key".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(InputError(format!(
            "ERR cache key longer than {MAX_KEY_LEN} bytes"
        )));
    }
    Ok(())
}

/// The Redis keys of one entry; both share the hash tag `{<ns>:<key>}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryKeys {
    /// The entry hash.
    pub value: Bytes,
    /// The lease string.
    pub lease: Bytes,
}

impl EntryKeys {
    /// The keys of `key` in `ns`.
    pub fn new(ns: &Namespace, key: &[u8]) -> EntryKeys {
        EntryKeys {
            value: tagged(b"v", ns, key),
            lease: tagged(b"l", ns, key),
        }
    }
}

/// `restash:cache:<kind>:{<ns>:<name>}`.
fn tagged(kind: &[u8], ns: &Namespace, name: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(PREFIX.len() + kind.len() + ns.0.len() + name.len() + 4);
    out.put_slice(PREFIX.as_bytes());
    out.put_slice(kind);
    out.put_slice(b":{");
    out.put_slice(ns.0.as_bytes());
    out.put_u8(b':');
    out.put_slice(name);
    out.put_u8(b'}');
    out.freeze()
}

/// `restash:cache:<kind>:{<ns>}`.
fn per_namespace(kind: &str, ns: &Namespace) -> Bytes {
    Bytes::from(format!("{PREFIX}{kind}:{{{}}}", ns.0))
}

/// The keys stored with `tag`: a sorted set scored by when each entry's tag ends.
pub fn tag_set_key(ns: &Namespace, tag: &str) -> Bytes {
    tagged(b"tz", ns, tag.as_bytes())
}

/// The plain set that held a tag's keys before tag sets were sorted sets (never pruned);
/// invalidations still walk it until it expires with its longest entry.
pub fn legacy_tag_set_key(ns: &Namespace, tag: &str) -> Bytes {
    tagged(b"t", ns, tag.as_bytes())
}

/// The namespace's stats hash.
pub fn stats_key(ns: &Namespace) -> Bytes {
    per_namespace("stats", ns)
}

/// The namespace's invalidation counter and log cut (a hash).
pub fn meta_key(ns: &Namespace) -> Bytes {
    per_namespace("meta", ns)
}

/// The namespace's invalidation log (a sorted set).
pub fn log_key(ns: &Namespace) -> Bytes {
    per_namespace("log", ns)
}

/// The `SCAN MATCH` pattern of every value and lease key of `ns` whose key starts with `prefix`.
pub fn prefix_pattern(ns: &Namespace, prefix: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(PREFIX.as_bytes());
    out.put_slice(b"[vl]:{");
    out.put_slice(ns.0.as_bytes());
    out.put_u8(b':');
    out.put_slice(&escape_glob(prefix));
    out.put_u8(b'*');
    out.freeze()
}

/// The cache key behind a value or lease key of `ns` found by a scan.
pub fn key_of(ns: &Namespace, redis_key: &[u8]) -> Option<Bytes> {
    let rest = redis_key.strip_prefix(PREFIX.as_bytes())?;
    let rest = rest
        .strip_prefix(b"v:{")
        .or_else(|| rest.strip_prefix(b"l:{"))?;
    let rest = rest.strip_prefix(ns.0.as_bytes())?.strip_prefix(b":")?;
    let key = rest.strip_suffix(b"}")?;
    (!key.is_empty()).then(|| Bytes::copy_from_slice(key))
}

/// Escapes Redis glob metacharacters (`* ? [ ] \`) so `bytes` matches literally.
pub fn escape_glob(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 4);
    for &b in bytes {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::key_slot;

    fn ns(name: &str) -> Namespace {
        Namespace::parse(name).unwrap()
    }

    #[test]
    fn namespaces() {
        assert!(Namespace::parse("users.v2_x-1").is_ok());
        for bad in ["", "a:b", "a{b", "a}b", "a b", "é", &"x".repeat(65)] {
            assert!(Namespace::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key(b"").is_err());
        assert!(check_key(&[0u8; 1025]).is_err());
        assert!(check_key(&[0xff, 0, b'}']).is_ok());
    }

    #[test]
    fn layout() {
        let k = EntryKeys::new(&ns("n"), b"user/1");
        assert_eq!(&k.value[..], b"restash:cache:v:{n:user/1}");
        assert_eq!(&k.lease[..], b"restash:cache:l:{n:user/1}");
        assert_eq!(&tag_set_key(&ns("n"), "a")[..], b"restash:cache:tz:{n:a}");
        assert_eq!(
            &legacy_tag_set_key(&ns("n"), "a")[..],
            b"restash:cache:t:{n:a}"
        );
        assert_eq!(&stats_key(&ns("n"))[..], b"restash:cache:stats:{n}");
        assert_eq!(&meta_key(&ns("n"))[..], b"restash:cache:meta:{n}");
        assert_eq!(&log_key(&ns("n"))[..], b"restash:cache:log:{n}");
    }

    #[test]
    fn an_entry_s_keys_share_one_slot_whatever_the_key() {
        for key in [&b"plain"[..], b"}x", b"a}b{c}", b"{", b"\xff\x00", b"x{}"] {
            let k = EntryKeys::new(&ns("n"), key);
            assert_eq!(key_slot(&k.value), key_slot(&k.lease), "{key:?}");
        }
        // Different namespaces never share names.
        assert_ne!(
            EntryKeys::new(&ns("a"), b"b:c").value,
            EntryKeys::new(&ns("a.b"), b"c").value
        );
    }

    #[test]
    fn prefix_patterns_escape_globs_and_invert() {
        assert_eq!(
            &prefix_pattern(&ns("n"), b"a*b?[c]\\")[..],
            b"restash:cache:[vl]:{n:a\\*b\\?\\[c\\]\\\\*"
        );
        assert_eq!(
            &prefix_pattern(&ns("n"), b"")[..],
            b"restash:cache:[vl]:{n:*"
        );
        let n = ns("n");
        let k = EntryKeys::new(&n, b"a}b");
        assert_eq!(key_of(&n, &k.value).as_deref(), Some(&b"a}b"[..]));
        assert_eq!(key_of(&n, &k.lease).as_deref(), Some(&b"a}b"[..]));
        assert_eq!(key_of(&n, b"restash:cache:t:{n:a}"), None);
        assert_eq!(key_of(&ns("m"), &k.value), None);
        assert_eq!(key_of(&n, b"restash:cache:v:{n:}"), None);
    }
}
