//! The token file (`RESTASH_TOKENS_FILE`): named backends and scoped tokens, in TOML
//! (any name) or JSON (a name ending in `.json`).
//!
//! ```toml
//! [backends.analytics]                  # "default" is REDIS_URL and cannot be redefined
//! url = "redis://10.0.0.7:6379"
//! connections = 2                       # optional: RESTASH_REDIS_CONNECTIONS
//! transaction_connections = 2           # optional: RESTASH_TRANSACTION_CONNECTIONS
//!
//! [[tokens]]
//! name = "shop"                         # unique; in logs and metrics, never the token
//! token = "…"                           # or token_sha256 = "<64 hex digits>"
//! backend = "analytics"                 # optional: default
//! mode = "standard"                     # standard | read-only | admin
//! prefixes = ["shop:"]                  # optional: keys and channels under these
//! commands = { allow = ["@read", "set"], deny = ["keys"] }   # optional
//! rate = { per_second = 100, burst = 200 }                    # optional
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;

use super::tokens::digest;
use crate::policy::scope::{CommandRules, Mode, Rate, Scope};

/// The backend name that means `REDIS_URL`.
pub const DEFAULT_BACKEND: &str = "default";

/// Why a token file (or a JWT's claims) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("cannot parse {path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        reason: String,
    },
    /// The content is inconsistent.
    #[error("{0}")]
    Invalid(String),
}

/// One named Redis deployment from the `[backends]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendDef {
    /// Any URL `REDIS_URL` accepts.
    pub url: String,
    /// Shared connections (default: `RESTASH_REDIS_CONNECTIONS`).
    pub connections: Option<usize>,
    /// Transaction connections (default: `RESTASH_TRANSACTION_CONNECTIONS`).
    pub transaction_connections: Option<usize>,
}

/// Command allow and deny lists as written in a file or a claim.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesDoc {
    /// Only these, when not empty.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Never these.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// A rate as written in a file or a claim.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateDoc {
    /// Requests per second.
    pub per_second: f64,
    /// Burst (default: `per_second` rounded up, at least 1).
    pub burst: Option<u32>,
}

/// The fields a token-file entry and a JWT share.
#[derive(Debug, Clone, Default)]
pub struct ScopeDoc {
    /// Mode text (`standard` when absent).
    pub mode: Option<String>,
    /// Prefixes.
    pub prefixes: Vec<String>,
    /// Backend name.
    pub backend: Option<String>,
    /// Command rules.
    pub commands: RulesDoc,
    /// Rate limit.
    pub rate: Option<RateDoc>,
}

impl ScopeDoc {
    /// The scope these fields grant to `name`, validated.
    pub fn to_scope(&self, name: &str) -> Result<Scope, String> {
        let mode = match &self.mode {
            None => Mode::Standard,
            Some(text) => Mode::parse(text)
                .ok_or_else(|| format!("mode {text:?} is not one of standard, read-only, admin"))?,
        };
        let lower = |list: &[String]| -> Vec<String> {
            list.iter().map(|c| c.trim().to_ascii_lowercase()).collect()
        };
        let rate = self.rate.map(|r| Rate {
            per_second: r.per_second,
            burst: r
                .burst
                .unwrap_or_else(|| r.per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32),
        });
        let scope = Scope {
            name: name.to_string(),
            mode,
            prefixes: self
                .prefixes
                .iter()
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect(),
            commands: CommandRules {
                allow: lower(&self.commands.allow),
                deny: lower(&self.commands.deny),
            },
            rate,
            backend: self
                .backend
                .clone()
                .filter(|b| b != DEFAULT_BACKEND && !b.is_empty()),
        };
        scope.validate()?;
        Ok(scope)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    backends: BTreeMap<String, BackendDef>,
    #[serde(default)]
    tokens: Vec<EntryDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryDoc {
    name: String,
    token: Option<String>,
    token_sha256: Option<String>,
    backend: Option<String>,
    mode: Option<String>,
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(default)]
    commands: RulesDoc,
    rate: Option<RateDoc>,
}

/// A loaded token file.
#[derive(Debug, Clone, Default)]
pub struct TokenFile {
    /// Named backends.
    pub backends: BTreeMap<String, BackendDef>,
    /// SHA-256 of each token with its scope.
    pub tokens: Vec<([u8; 32], Arc<Scope>)>,
}

impl TokenFile {
    /// Reads and validates a token file.
    pub fn load(path: &Path) -> Result<TokenFile, FileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: shown.clone(),
            source,
        })?;
        let json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        Self::parse(&text, json).map_err(|error| match error {
            FileError::Parse { reason, .. } => FileError::Parse {
                path: shown,
                reason,
            },
            FileError::Invalid(reason) => FileError::Invalid(format!("{shown}: {reason}")),
            other => other,
        })
    }

    /// Parses a token file's text (JSON when `json`, else TOML).
    pub fn parse(text: &str, json: bool) -> Result<TokenFile, FileError> {
        let parse_error = |reason: String| FileError::Parse {
            path: String::new(),
            reason,
        };
        let document: Document = if json {
            serde_json::from_str(text).map_err(|e| parse_error(e.to_string()))?
        } else {
            toml::from_str(text).map_err(|e| parse_error(e.to_string()))?
        };
        for (name, backend) in &document.backends {
            if name == DEFAULT_BACKEND {
                return Err(FileError::Invalid(
                    "the backend \"default\" is REDIS_URL and cannot be redefined".into(),
                ));
            }
            if !valid_backend_name(name) {
                return Err(FileError::Invalid(format!(
                    "backend name {name:?}: use letters, digits, '_', '-' and '.'"
                )));
            }
            if backend.url.trim().is_empty() {
                return Err(FileError::Invalid(format!("backend {name:?} has no url")));
            }
            if backend.connections == Some(0) || backend.transaction_connections == Some(0) {
                return Err(FileError::Invalid(format!(
                    "backend {name:?}: connection counts must be positive"
                )));
            }
        }
        let mut names = HashSet::new();
        let mut digests = HashSet::new();
        let mut tokens = Vec::with_capacity(document.tokens.len());
        for entry in document.tokens {
            let name = entry.name.trim().to_string();
            let invalid = |reason: String| FileError::Invalid(format!("token {name:?}: {reason}"));
            if name.is_empty() {
                return Err(FileError::Invalid("a token has an empty name".into()));
            }
            // JWTs are named `jwt:<sub>`: a file token so named would share their rate
            // limit (and their name in logs and metrics).
            if name.starts_with("jwt:") {
                return Err(invalid("names starting with 'jwt:' are JWTs' own".into()));
            }
            if !names.insert(name.clone()) {
                return Err(invalid("the name is used twice".into()));
            }
            let hash = match (&entry.token, &entry.token_sha256) {
                (Some(token), None) if !token.is_empty() => digest(token),
                (None, Some(hex_digest)) => parse_sha256(hex_digest)
                    .ok_or_else(|| invalid("token_sha256 is not 64 hex digits".into()))?,
                _ => {
                    return Err(invalid(
                        "give exactly one of token and token_sha256 (non-empty)".into(),
                    ))
                }
            };
            if hash == digest("") {
                return Err(invalid(
                    "token_sha256 is the digest of the empty string, which would admit requests without a token".into(),
                ));
            }
            if !digests.insert(hash) {
                return Err(invalid("the same token is listed twice".into()));
            }
            if let Some(backend) = &entry.backend {
                if backend != DEFAULT_BACKEND && !document.backends.contains_key(backend) {
                    return Err(invalid(format!("unknown backend {backend:?}")));
                }
            }
            let doc = ScopeDoc {
                mode: entry.mode,
                prefixes: entry.prefixes,
                backend: entry.backend,
                commands: entry.commands,
                rate: entry.rate,
            };
            let scope = doc.to_scope(&name).map_err(invalid)?;
            tokens.push((hash, Arc::new(scope)));
        }
        Ok(TokenFile {
            backends: document.backends,
            tokens,
        })
    }
}

fn valid_backend_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[backends.analytics]
url = "redis://127.0.0.1:6380"
connections = 2

[[tokens]]
name = "shop"
token = "shop-secret"
prefixes = ["shop:"]
rate = { per_second = 10 }

[[tokens]]
name = "reports"
token_sha256 = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
backend = "analytics"
mode = "read-only"
commands = { deny = ["KEYS"] }
"#;

    #[test]
    fn parses_toml_and_json() {
        let file = TokenFile::parse(EXAMPLE, false).unwrap();
        assert_eq!(file.backends["analytics"].connections, Some(2));
        assert_eq!(file.tokens.len(), 2);
        let (hash, shop) = &file.tokens[0];
        assert_eq!(*hash, digest("shop-secret"));
        assert_eq!(shop.prefixes, vec![Bytes::from_static(b"shop:")]);
        assert_eq!(shop.rate.unwrap().burst, 10);
        let (hash, reports) = &file.tokens[1];
        assert_eq!(*hash, digest("test"));
        assert_eq!(reports.mode, Mode::ReadOnly);
        assert_eq!(reports.backend.as_deref(), Some("analytics"));
        assert_eq!(reports.commands.deny, vec!["keys".to_string()]);
        let json = r#"{"tokens":[{"name":"a","token":"x","mode":"admin"}]}"#;
        let file = TokenFile::parse(json, true).unwrap();
        assert_eq!(file.tokens[0].1.mode, Mode::Admin);
    }

    #[test]
    fn rejects_inconsistent_files() {
        for (text, needle) in [
            ("[[tokens]]\nname = \"a\"\n", "exactly one"),
            (
                "[[tokens]]\nname = \"a\"\ntoken = \"x\"\n[[tokens]]\nname = \"a\"\ntoken = \"y\"\n",
                "twice",
            ),
            (
                "[[tokens]]\nname = \"a\"\ntoken = \"x\"\n[[tokens]]\nname = \"b\"\ntoken = \"x\"\n",
                "twice",
            ),
            ("[[tokens]]\nname = \"a\"\ntoken = \"x\"\nbackend = \"nope\"\n", "unknown backend"),
            ("[[tokens]]\nname = \"a\"\ntoken = \"x\"\nmode = \"root\"\n", "mode"),
            ("[[tokens]]\nname = \"a\"\ntoken = \"x\"\nprefixes = [\"a*\"]\n", "glob"),
            ("[[tokens]]\nname = \"jwt:ops\"\ntoken = \"x\"\n", "JWTs' own"),
            (
                "[[tokens]]\nname = \"a\"\ntoken = \"x\"\nprefixes = [\"re\"]\n",
                "overlaps 'restash:'",
            ),
            ("[[tokens]]\nname = \"a\"\ntoken_sha256 = \"abc\"\n", "64 hex"),
            (
                "[[tokens]]\nname = \"a\"\ntoken_sha256 = \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"\n",
                "empty string",
            ),
            (
                "[[tokens]]\nname = \"a\"\ntoken = \"x\"\nmode = \"admin\"\nprefixes = [\"a:\"]\n",
                "cannot be combined with prefixes",
            ),
            (
                "[[tokens]]\nname = \"a\"\ntoken = \"x\"\nrate = { per_second = 1e-30 }\n",
                "per_second between",
            ),
            ("[backends.default]\nurl = \"redis://x\"\n", "cannot be redefined"),
            ("[[tokens]]\nname = \"a\"\ntoken = \"x\"\ncolour = \"red\"\n", "unknown field"),
        ] {
            let error = TokenFile::parse(text, false).unwrap_err().to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }
}
