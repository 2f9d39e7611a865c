//! Upstash's Lua `allow-key-locking` flag, which plain Redis rejects.
//!
//! ```text
//! #!lua flags=allow-key-locking            ->  #!lua
//! #!lua flags=no-writes,allow-key-locking  ->  #!lua flags=no-writes
//! ```
//! The client computes SHA1 over the script it sent; Redis knows the SHA1 of the
//! rewritten one. [`ScriptRegistry`] maps the first to the second so EVALSHA,
//! EVALSHA_RO and SCRIPT EXISTS keep working, and SCRIPT LOAD answers the
//! client's SHA. An instance that never saw a script answers NOSCRIPT for it,
//! and the clients' EVALSHA-to-EVAL fallback teaches it the mapping.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

/// The flag restash removes.
pub const ALLOW_KEY_LOCKING: &str = "allow-key-locking";

/// Most mappings kept before the registry starts over (scripts are few in practice).
const MAX_MAPPINGS: usize = 10_000;

/// Client SHA1 → SHA1 of the script Redis actually stores.
#[derive(Debug, Default)]
pub struct ScriptRegistry {
    client_to_server: Mutex<HashMap<String, String>>,
}

impl ScriptRegistry {
    /// Rewrites `script` if it carries the flag, remembering the SHA mapping.
    /// Returns the script to send and the client's SHA1 when it was rewritten.
    pub fn rewrite(&self, script: &Bytes) -> Option<(Bytes, String)> {
        let rewritten = strip_allow_key_locking(script)?;
        let client_sha = sha1_hex(script);
        let server_sha = sha1_hex(&rewritten);
        if let Ok(mut map) = self.client_to_server.lock() {
            if map.len() >= MAX_MAPPINGS {
                map.clear();
            }
            map.insert(client_sha.clone(), server_sha);
        }
        Some((rewritten, client_sha))
    }

    /// The SHA1 to send to Redis for a SHA1 the client sent.
    pub fn server_sha(&self, client_sha: &[u8]) -> Option<Bytes> {
        let key = std::str::from_utf8(client_sha).ok()?.to_ascii_lowercase();
        let map = self.client_to_server.lock().ok()?;
        map.get(&key).map(|s| Bytes::from(s.clone()))
    }
}

/// Lower-case hex SHA1, as Redis names scripts.
pub fn sha1_hex(data: &[u8]) -> String {
    sha1_smol::Sha1::from(data).digest().to_string()
}

/// Removes `allow-key-locking` from a `#!lua` shebang line; `None` when absent.
pub fn strip_allow_key_locking(script: &[u8]) -> Option<Bytes> {
    if !script.starts_with(b"#!") {
        return None;
    }
    let line_end = script
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(script.len());
    let line = std::str::from_utf8(&script[..line_end]).ok()?;
    if !line.contains(ALLOW_KEY_LOCKING) {
        return None;
    }
    let mut words: Vec<String> = Vec::new();
    for word in line.split(' ').filter(|w| !w.is_empty()) {
        match word.strip_prefix("flags=") {
            Some(flags) => {
                let kept: Vec<&str> = flags
                    .split(',')
                    .filter(|f| !f.is_empty() && *f != ALLOW_KEY_LOCKING)
                    .collect();
                if !kept.is_empty() {
                    words.push(format!("flags={}", kept.join(",")));
                }
            }
            None => words.push(word.to_string()),
        }
    }
    let mut out = words.join(" ").into_bytes();
    out.extend_from_slice(&script[line_end..]);
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(s: &str) -> Option<String> {
        strip_allow_key_locking(s.as_bytes()).map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn strips_only_the_flag() {
        assert_eq!(
            strip("#!lua flags=allow-key-locking\nreturn 1").as_deref(),
            Some("#!lua\nreturn 1")
        );
        assert_eq!(
            strip("#!lua flags=no-writes,allow-key-locking\nreturn 1").as_deref(),
            Some("#!lua flags=no-writes\nreturn 1")
        );
        assert_eq!(
            strip("#!lua name=x flags=allow-key-locking,allow-oom").as_deref(),
            Some("#!lua name=x flags=allow-oom")
        );
        assert_eq!(strip("#!lua flags=no-writes\nreturn 1"), None);
        assert_eq!(strip("return 'allow-key-locking'"), None);
        assert_eq!(strip("return 1\n#!lua flags=allow-key-locking"), None);
    }

    #[test]
    fn registry_maps_client_sha_to_server_sha() {
        let registry = ScriptRegistry::default();
        let script = Bytes::from_static(b"#!lua flags=allow-key-locking\nreturn 1");
        let (rewritten, client_sha) = registry.rewrite(&script).unwrap();
        assert_eq!(client_sha, sha1_hex(&script));
        assert_eq!(
            registry.server_sha(client_sha.to_uppercase().as_bytes()),
            Some(Bytes::from(sha1_hex(&rewritten)))
        );
        assert_eq!(registry.server_sha(b"0000"), None);
        assert_eq!(
            sha1_hex(b"return 1"),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }
}
