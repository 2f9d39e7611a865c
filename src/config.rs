//! Configuration from environment variables (and an optional `.env`, loaded by `main`).
//!
//! Every variable, with its default, is listed in `.env.example`.

use std::time::Duration;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8079";
/// Default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default request body limit: 10 MiB, like Upstash.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Default limit of requests handled at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 4096;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Validated settings for one restash process.
#[derive(Debug, Clone)]
pub struct Config {
    /// `RESTASH_LISTEN`: address to bind.
    pub listen: String,
    /// `REDIS_URL`: `redis://`, `rediss://` or `redis+unix://`.
    pub redis_url: String,
    /// `RESTASH_TOKEN`: the standard token; `None` means generate one at start-up.
    pub token: Option<String>,
    /// `RESTASH_READONLY_TOKEN`: optional read-only token.
    pub readonly_token: Option<String>,
    /// `RESTASH_COMMAND_TIMEOUT_MS`: longest wait for a Redis reply.
    pub command_timeout: Duration,
    /// `RESTASH_CONNECT_TIMEOUT_MS`: longest wait for a Redis connection.
    pub connect_timeout: Duration,
    /// `RESTASH_MAX_BODY_BYTES`: request body limit.
    pub max_body_bytes: usize,
    /// `RESTASH_REDIS_CONNECTIONS`: shared multiplexed connections.
    pub redis_connections: usize,
    /// `RESTASH_TRANSACTION_CONNECTIONS`: dedicated connections for `/multi-exec`.
    pub transaction_connections: usize,
    /// `RESTASH_COMMAND_BUFFER`: queued commands per connection before backpressure.
    pub command_buffer: usize,
    /// `RESTASH_RECONNECT_MAX_DELAY_MS`: cap of the exponential reconnect delay.
    pub reconnect_max_delay: Duration,
    /// `RESTASH_SHUTDOWN_TIMEOUT_MS`: how long shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// `RESTASH_LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
    /// `RESTASH_LOG` (or `RUST_LOG`): tracing filter.
    pub log_filter: String,
    /// `RESTASH_MAX_CONCURRENCY`: requests handled at once; beyond it, fast JSON 503s.
    pub max_concurrency: usize,
    /// `RESTASH_REQUEST_TIMEOUT_MS`: longest time to read a request body and answer (then 408).
    pub request_timeout: Duration,
    /// `RESTASH_HEADER_TIMEOUT_MS`: longest time to receive request headers (then the
    /// connection is closed); also how long an idle keep-alive connection stays open.
    pub header_timeout: Duration,
    /// `RESTASH_CACHE_TIMEOUT_MS`: longest wait for Redis in a cache request; then cache reads
    /// answer 404 `X-Cache: BYPASS` and cache writes 503.
    pub cache_timeout: Duration,
    /// `RESTASH_PUBSUB_CONNECTIONS`: shared subscriber connections for the SSE streams.
    pub pubsub_connections: usize,
    /// `RESTASH_SSE_BUFFER`: events buffered per stream before a slow reader is cut off.
    pub sse_buffer: usize,
    /// `RESTASH_SSE_BUFFER_BYTES`: bytes of events buffered per stream before a slow
    /// reader is cut off.
    pub sse_buffer_bytes: usize,
    /// `RESTASH_SSE_KEEPALIVE_MS`: heartbeat comment interval on idle streams.
    pub sse_keepalive: Duration,
    /// `RESTASH_MONITOR_MAX_STREAMS`: concurrent `/monitor` streams.
    pub monitor_max_streams: usize,
    /// `RESTASH_BLOCKING`: run blocking commands for real on dedicated connections.
    pub blocking: bool,
    /// `RESTASH_BLOCKING_MAX_MS`: longest a blocking command may block.
    pub blocking_max: Duration,
    /// `RESTASH_BLOCKING_CONNECTIONS`: dedicated connections for blocking commands.
    pub blocking_connections: usize,
    /// `RESTASH_READ_FROM_REPLICAS`: send read-only commands to replicas (cluster).
    pub read_from_replicas: bool,
    /// `RESTASH_REDIS_TLS_CA_FILE`: CA certificates (PEM) to trust for `rediss://`.
    pub redis_tls_ca_file: Option<std::path::PathBuf>,
    /// `RESTASH_TOKENS_FILE`: scoped tokens and named backends (TOML, or JSON for `*.json`).
    pub tokens_file: Option<std::path::PathBuf>,
    /// `RESTASH_JWT_SECRET`: accept HS256 JWTs signed with this secret.
    pub jwt_secret: Option<String>,
    /// `RESTASH_JWT_KEYS`: accept RS256, ES256 and EdDSA JWTs signed by these public keys
    /// (a PEM file or a JWKS file).
    pub jwt_keys: Option<std::path::PathBuf>,
    /// `RESTASH_JWT_ISSUER`: required `iss` claim.
    pub jwt_issuer: Option<String>,
    /// `RESTASH_JWT_AUDIENCE`: required `aud` claim.
    pub jwt_audience: Option<String>,
    /// `RESTASH_JWT_REVOKED_FILE`: revoked JWT ids (`jti`), one per line.
    pub jwt_revoked_file: Option<std::path::PathBuf>,
    /// `RESTASH_JWT_MAX_LIFETIME_SECONDS`: refuse JWTs whose `exp - iat` is longer (and
    /// JWTs without `iat`); unset: any lifetime.
    pub jwt_max_lifetime: Option<u64>,
    /// `RESTASH_RATE_LIMIT_SHARED`: keep per-token rate limits in Redis (shared by instances).
    pub rate_limit_shared: bool,
    /// `RESTASH_CORS_ORIGINS`: origins allowed to call from browsers (`*` for any).
    pub cors_origins: Vec<String>,
    /// `RESTASH_REDIS_MULTIPLEXER`: `restash` (default: restash's own batching
    /// connections on a plain single node) or `fred` (fred's, as for clusters).
    pub own_multiplexer: bool,
    /// `RESTASH_HTTP2`: also accept HTTP/2 with prior knowledge (h2c); off by
    /// default, as it costs about 8 KiB more per open connection.
    pub http2: bool,
}

/// A variable that could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The value does not parse.
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        /// Variable name.
        name: &'static str,
        /// The offending value.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        // Secrets lose surrounding whitespace: a Kubernetes secret made with
        // `--from-file` keeps the file's final newline, and no client sends it back.
        let secret = |name: &str| get(name).map(|v| v.trim().to_string());
        let millis = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_millis(number(name, get(name), default)?))
        };
        let log_format = match get("RESTASH_LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "RESTASH_LOG_FORMAT",
                    value: other.to_string(),
                    reason: "expected text or json",
                })
            }
        };
        let log_filter = get("RESTASH_LOG")
            .or_else(|| get("RUST_LOG"))
            .unwrap_or_else(|| "info".to_string());
        if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
            return Err(ConfigError::Invalid {
                name: "RESTASH_LOG",
                value: log_filter,
                reason: "expected a log filter such as info, debug or restash=debug,info",
            });
        }
        let token = secret("RESTASH_TOKEN");
        let readonly_token = secret("RESTASH_READONLY_TOKEN");
        if readonly_token.is_some() && readonly_token == token {
            return Err(ConfigError::Invalid {
                name: "RESTASH_READONLY_TOKEN",
                value: "<redacted>".into(),
                reason: "it equals RESTASH_TOKEN, so it would not be read-only",
            });
        }
        let jwt_secret = secret("RESTASH_JWT_SECRET");
        if jwt_secret
            .as_deref()
            .is_some_and(|s| crate::auth::jwt::weak_secret(s).is_some())
        {
            return Err(ConfigError::Invalid {
                name: "RESTASH_JWT_SECRET",
                value: "<redacted>".into(),
                reason: "shorter than 32 bytes: HS256 needs at least 256 bits (RFC 7518 \
                         section 3.2); generate one with `openssl rand -base64 32`",
            });
        }
        let jwt_max_lifetime = optional_number(
            "RESTASH_JWT_MAX_LIFETIME_SECONDS",
            get("RESTASH_JWT_MAX_LIFETIME_SECONDS"),
        )?;
        Ok(Config {
            listen: get("RESTASH_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
            redis_url: get("REDIS_URL").unwrap_or_else(|| DEFAULT_REDIS_URL.to_string()),
            token,
            readonly_token,
            command_timeout: millis("RESTASH_COMMAND_TIMEOUT_MS", 5_000)?,
            connect_timeout: millis("RESTASH_CONNECT_TIMEOUT_MS", 2_000)?,
            max_body_bytes: number(
                "RESTASH_MAX_BODY_BYTES",
                get("RESTASH_MAX_BODY_BYTES"),
                DEFAULT_MAX_BODY_BYTES as u64,
            )? as usize,
            redis_connections: number(
                "RESTASH_REDIS_CONNECTIONS",
                get("RESTASH_REDIS_CONNECTIONS"),
                2,
            )? as usize,
            transaction_connections: number(
                "RESTASH_TRANSACTION_CONNECTIONS",
                get("RESTASH_TRANSACTION_CONNECTIONS"),
                4,
            )? as usize,
            command_buffer: number(
                "RESTASH_COMMAND_BUFFER",
                get("RESTASH_COMMAND_BUFFER"),
                65_536,
            )? as usize,
            reconnect_max_delay: millis("RESTASH_RECONNECT_MAX_DELAY_MS", 1_000)?,
            shutdown_timeout: millis("RESTASH_SHUTDOWN_TIMEOUT_MS", 10_000)?,
            log_format,
            log_filter,
            max_concurrency: number(
                "RESTASH_MAX_CONCURRENCY",
                get("RESTASH_MAX_CONCURRENCY"),
                DEFAULT_MAX_CONCURRENCY as u64,
            )? as usize,
            request_timeout: millis("RESTASH_REQUEST_TIMEOUT_MS", 30_000)?,
            header_timeout: millis("RESTASH_HEADER_TIMEOUT_MS", 30_000)?,
            cache_timeout: millis("RESTASH_CACHE_TIMEOUT_MS", 250)?,
            pubsub_connections: number(
                "RESTASH_PUBSUB_CONNECTIONS",
                get("RESTASH_PUBSUB_CONNECTIONS"),
                2,
            )? as usize,
            sse_buffer: number("RESTASH_SSE_BUFFER", get("RESTASH_SSE_BUFFER"), 1024)? as usize,
            sse_buffer_bytes: number(
                "RESTASH_SSE_BUFFER_BYTES",
                get("RESTASH_SSE_BUFFER_BYTES"),
                4 << 20,
            )? as usize,
            sse_keepalive: millis("RESTASH_SSE_KEEPALIVE_MS", 15_000)?,
            monitor_max_streams: number(
                "RESTASH_MONITOR_MAX_STREAMS",
                get("RESTASH_MONITOR_MAX_STREAMS"),
                4,
            )? as usize,
            blocking: flag("RESTASH_BLOCKING", get("RESTASH_BLOCKING"))?,
            blocking_max: millis("RESTASH_BLOCKING_MAX_MS", 10_000)?,
            blocking_connections: number(
                "RESTASH_BLOCKING_CONNECTIONS",
                get("RESTASH_BLOCKING_CONNECTIONS"),
                64,
            )? as usize,
            read_from_replicas: flag(
                "RESTASH_READ_FROM_REPLICAS",
                get("RESTASH_READ_FROM_REPLICAS"),
            )?,
            redis_tls_ca_file: get("RESTASH_REDIS_TLS_CA_FILE").map(std::path::PathBuf::from),
            tokens_file: get("RESTASH_TOKENS_FILE").map(std::path::PathBuf::from),
            jwt_secret,
            jwt_keys: get("RESTASH_JWT_KEYS").map(std::path::PathBuf::from),
            jwt_issuer: get("RESTASH_JWT_ISSUER"),
            jwt_audience: get("RESTASH_JWT_AUDIENCE"),
            jwt_revoked_file: get("RESTASH_JWT_REVOKED_FILE").map(std::path::PathBuf::from),
            jwt_max_lifetime,
            rate_limit_shared: flag(
                "RESTASH_RATE_LIMIT_SHARED",
                get("RESTASH_RATE_LIMIT_SHARED"),
            )?,
            cors_origins: get("RESTASH_CORS_ORIGINS")
                .map(|v| {
                    v.split(',')
                        .map(|o| o.trim().to_string())
                        .filter(|o| !o.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            own_multiplexer: match get("RESTASH_REDIS_MULTIPLEXER").as_deref().map(str::trim) {
                None | Some("restash") => true,
                Some("fred") => false,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        name: "RESTASH_REDIS_MULTIPLEXER",
                        value: other.to_string(),
                        reason: "expected restash or fred",
                    })
                }
            },
            http2: flag("RESTASH_HTTP2", get("RESTASH_HTTP2"))?,
        })
    }

    /// The Redis URL with any password replaced by `***`, for logs.
    pub fn redis_url_redacted(&self) -> String {
        redact_url(&self.redis_url)
    }
}

fn number(name: &'static str, value: Option<String>, default: u64) -> Result<u64, ConfigError> {
    Ok(optional_number(name, value)?.unwrap_or(default))
}

/// A positive whole number, when the variable is set.
fn optional_number(name: &'static str, value: Option<String>) -> Result<Option<u64>, ConfigError> {
    value
        .map(|v| {
            positive_number(&v).ok_or(ConfigError::Invalid {
                name,
                value: v,
                reason: "expected a positive whole number",
            })
        })
        .transpose()
}

/// A variable's text read as a positive whole number (surrounding spaces allowed).
pub fn positive_number(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().filter(|n| *n > 0)
}

fn flag(name: &'static str, value: Option<String>) -> Result<bool, ConfigError> {
    match value
        .as_deref()
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("false" | "0" | "no" | "off") => Ok(false),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some(_) => Err(ConfigError::Invalid {
            name,
            value: value.unwrap_or_default(),
            reason: "expected true or false",
        }),
    }
}

/// Replaces the password of `scheme://user:password@host` with `***` (the last `@`
/// before the query ends it, so a password holding a raw `@` is hidden whole), and
/// the value of every query parameter whose name ends in `password` (fred's
/// `sentinelPassword`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (address, query) = match rest.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (rest, None),
    };
    let address = match address.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => address.to_string(),
    };
    let query = query.map(|query| {
        query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().ends_with("password") => {
                    format!("{name}=***")
                }
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(query) => format!("{scheme}://{address}?{query}"),
        None => format!("{scheme}://{address}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8079");
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(c.token, None);
        assert_eq!(c.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(c.command_timeout, Duration::from_secs(5));
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.cache_timeout, Duration::from_millis(250));
    }

    #[test]
    fn overrides_and_blank_values() {
        let c = config(&[
            ("RESTASH_LISTEN", "0.0.0.0:80"),
            ("RESTASH_TOKEN", ""),
            ("RESTASH_COMMAND_TIMEOUT_MS", "250"),
            ("RESTASH_LOG_FORMAT", "json"),
        ])
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:80");
        assert_eq!(c.token, None);
        // A secret's final newline (a Kubernetes secret from a file) is not part of it.
        let trimmed = config(&[
            ("RESTASH_TOKEN", "tok\n"),
            (
                "RESTASH_JWT_SECRET",
                " 0123456789abcdef0123456789abcdef \r\n",
            ),
            ("RESTASH_READ_FROM_REPLICAS", "on"),
        ])
        .unwrap();
        assert_eq!(trimmed.token.as_deref(), Some("tok"));
        assert_eq!(
            trimmed.jwt_secret.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert!(trimmed.read_from_replicas);
        assert!(config(&[("RESTASH_READ_FROM_REPLICAS", "tru")]).is_err());
        let error = config(&[("RESTASH_LOG", "restash=loud")]).unwrap_err();
        assert!(error.to_string().contains("RESTASH_LOG"), "{error}");
        assert_eq!(c.command_timeout, Duration::from_millis(250));
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn invalid_values_are_named() {
        let err = config(&[("RESTASH_MAX_BODY_BYTES", "ten")]).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("RESTASH_MAX_BODY_BYTES=\"ten\" is invalid"));
        assert!(config(&[("RESTASH_LOG_FORMAT", "xml")]).is_err());
        assert!(config(&[("RESTASH_REDIS_CONNECTIONS", "0")]).is_err());
    }

    #[test]
    fn a_read_only_token_equal_to_the_token_is_refused() {
        let err = config(&[
            ("RESTASH_TOKEN", "same"),
            ("RESTASH_READONLY_TOKEN", " same\n"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("RESTASH_READONLY_TOKEN"), "{err}");
        assert!(
            !err.to_string().contains("same"),
            "the token is not shown: {err}"
        );
    }

    #[test]
    fn blocking_flag() {
        assert!(!config(&[]).unwrap().blocking);
        assert!(config(&[("RESTASH_BLOCKING", "true")]).unwrap().blocking);
        assert!(config(&[]).unwrap().own_multiplexer);
        assert!(
            !config(&[("RESTASH_REDIS_MULTIPLEXER", "fred")])
                .unwrap()
                .own_multiplexer
        );
        assert!(config(&[("RESTASH_REDIS_MULTIPLEXER", "redis-rs")]).is_err());
        assert!(!config(&[]).unwrap().http2);
        assert!(config(&[("RESTASH_HTTP2", "true")]).unwrap().http2);
        assert!(!config(&[("RESTASH_BLOCKING", "0")]).unwrap().blocking);
        assert!(config(&[("RESTASH_BLOCKING", "maybe")]).is_err());
    }

    #[test]
    fn tenancy_variables() {
        let c = config(&[]).unwrap();
        assert_eq!(c.tokens_file, None);
        assert!(!c.rate_limit_shared);
        assert!(c.cors_origins.is_empty());
        let c = config(&[
            ("RESTASH_TOKENS_FILE", "/etc/restash/tokens.toml"),
            ("RESTASH_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("RESTASH_JWT_AUDIENCE", "restash"),
            ("RESTASH_RATE_LIMIT_SHARED", "true"),
            (
                "RESTASH_CORS_ORIGINS",
                "https://a.example, https://b.example,",
            ),
        ])
        .unwrap();
        assert_eq!(
            c.tokens_file.as_deref(),
            Some(std::path::Path::new("/etc/restash/tokens.toml"))
        );
        assert_eq!(
            c.jwt_secret.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(c.jwt_audience.as_deref(), Some("restash"));
        assert_eq!(c.jwt_max_lifetime, None);
        assert!(c.rate_limit_shared);
        assert_eq!(c.cors_origins, ["https://a.example", "https://b.example"]);
        assert!(config(&[("RESTASH_RATE_LIMIT_SHARED", "often")]).is_err());
        let c = config(&[("RESTASH_JWT_MAX_LIFETIME_SECONDS", "86400")]).unwrap();
        assert_eq!(c.jwt_max_lifetime, Some(86_400));
        for bad in ["0", "1h", "-5"] {
            let error = config(&[("RESTASH_JWT_MAX_LIFETIME_SECONDS", bad)]).unwrap_err();
            assert!(
                error
                    .to_string()
                    .starts_with("RESTASH_JWT_MAX_LIFETIME_SECONDS="),
                "{error}"
            );
        }
    }

    #[test]
    fn a_jwt_secret_shorter_than_32_bytes_is_refused_without_echoing_it() {
        // Length after trimming, as the secret is used.
        let error =
            config(&[("RESTASH_JWT_SECRET", " 0123456789abcdef0123456789abcde \n")]).unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("RESTASH_JWT_SECRET=\"<redacted>\" is invalid: shorter than 32 bytes"),
            "{text}"
        );
        assert!(!text.contains("0123456789"), "{text}");
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact_url("rediss://u:pw@h:1/0"), "rediss://u:***@h:1/0");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("redis://:p@ss@h:1"), "redis://:***@h:1");
        assert_eq!(
            redact_url(
                "redis-sentinel://u:pw@h:26379/0?sentinelServiceName=m&sentinelPassword=s3cret"
            ),
            "redis-sentinel://u:***@h:26379/0?sentinelServiceName=m&sentinelPassword=***"
        );
        assert_eq!(
            redact_url("redis://h:1/?node=h2:2"),
            "redis://h:1/?node=h2:2"
        );
    }
}
