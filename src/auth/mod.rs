//! Who is calling, and what they may do.
//!
//! A presented token is tried, in order, as a static token (`RESTASH_TOKEN`: admin,
//! `RESTASH_READONLY_TOKEN`: read-only), as a token-file entry, then as a JWT. Each
//! gives a [`Scope`] (mode, key prefixes, command rules, rate, backend), which
//! [`crate::policy::scope`] enforces command by command.
//!
//! - [`tokens`]: static tokens, SHA-256 digests compared in constant time;
//! - [`file`]: the token file (`RESTASH_TOKENS_FILE`) and named backends;
//! - [`jwt`]: JWT verification (HS256, RS256, ES256, EdDSA) and the revocation list;
//! - [`backends`]: the named backends' connections and command tables;
//! - [`reload`]: reloads on SIGHUP and on change, keeping the old state when a file is broken;
//! - [`rate`]: per-token rate limits, in memory or shared through Redis;
//! - [`audit`]: logs and counts every refusal;
//! - [`mint`]: `restash token`, which mints a JWT for operators.

pub mod audit;
pub mod backends;
pub mod file;
pub mod jwt;
pub mod mint;
pub mod rate;
pub mod reload;
mod tokens;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use subtle::ConstantTimeEq;

pub use tokens::{generate_token, presented_token, Tokens};

use crate::backend::{Backend, BackendSettings};
use crate::error::UNAUTHORIZED_TEXT;
use crate::policy::scope::{self, CacheOperation, Denied, Mode, Scope, Stream};
use crate::policy::{Access, CommandTable};
use crate::protocol::Command;
use backends::{BackendRegistry, NamedBackend};
use file::{FileError, TokenFile};
use jwt::{JwtRefusal, JwtSettings, JwtVerifier, KeyError};
use rate::RateLimiter;

/// Name of the static `RESTASH_TOKEN` in logs and metrics.
pub const STATIC_TOKEN_NAME: &str = "static";
/// Name of the static `RESTASH_READONLY_TOKEN`.
pub const STATIC_READONLY_NAME: &str = "static-read-only";

/// Where tokens beyond the static ones come from.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// `RESTASH_TOKENS_FILE`.
    pub tokens_file: Option<PathBuf>,
    /// `RESTASH_JWT_*`.
    pub jwt: JwtSettings,
    /// `RESTASH_JWT_REVOKED_FILE`: revoked `jti`s, one per line.
    pub revoked_file: Option<PathBuf>,
    /// `RESTASH_RATE_LIMIT_SHARED`: keep rate-limit buckets in Redis.
    pub shared_rate_limits: bool,
}

/// Why the token configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The token file is unusable.
    #[error(transparent)]
    File(#[from] FileError),
    /// The JWT keys are unusable.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The revocation list cannot be read.
    #[error("cannot read RESTASH_JWT_REVOKED_FILE {path}: {source}")]
    Revoked {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A named backend's settings were rejected.
    #[error("backend: {0}")]
    Backend(#[from] crate::backend::BackendError),
}

/// Why a request is not authenticated (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No token, or one that matches nothing.
    Invalid,
    /// A JWT past its `exp`.
    Expired,
    /// A JWT before its `nbf`.
    NotYetValid,
    /// A revoked JWT.
    Revoked,
    /// A JWT without `iat`, with `iat` in the future, or living longer than
    /// `RESTASH_JWT_MAX_LIFETIME_SECONDS`.
    TooLongLived,
    /// A JWT naming a backend that does not exist.
    UnknownBackend,
}

impl AuthError {
    /// The answer's text (always starting with `WRONGPASS`).
    pub fn text(self) -> &'static str {
        match self {
            AuthError::Invalid => UNAUTHORIZED_TEXT,
            AuthError::Expired => "WRONGPASS token expired",
            AuthError::NotYetValid => "WRONGPASS token not yet valid",
            AuthError::Revoked => "WRONGPASS token revoked",
            AuthError::TooLongLived => {
                "WRONGPASS token lifetime not accepted: iat is required, may not be in the future, and exp - iat may not exceed the gateway's maximum"
            }
            AuthError::UnknownBackend => "WRONGPASS token names an unknown backend",
        }
    }

    /// The audit reason.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Invalid => "unauthorized",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Revoked => "revoked",
            AuthError::TooLongLived => "too_long_lived",
            AuthError::UnknownBackend => "unknown_backend",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    scope: Arc<Scope>,
}

impl PartialEq<Access> for Principal {
    fn eq(&self, access: &Access) -> bool {
        self.access() == *access
    }
}

impl Principal {
    /// A principal with `scope`.
    pub fn new(scope: Arc<Scope>) -> Principal {
        Principal { scope }
    }

    /// What [`crate::policy::prepare`] needs: standard or read-only.
    pub fn access(&self) -> Access {
        self.scope.mode.access()
    }

    /// Everything the token grants.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Checks one command against the scope (audited); may confine it.
    pub fn authorize(
        &self,
        command: Command,
        table: Option<&CommandTable>,
    ) -> Result<Command, crate::policy::Refusal> {
        let name = command.args.first().cloned().unwrap_or_default();
        scope::authorize(&self.scope, command, table).map_err(|denied| {
            self.refused(&String::from_utf8_lossy(&name).to_ascii_lowercase(), denied)
        })
    }

    /// Checks a cache namespace against the prefixes (audited).
    pub fn check_namespace(&self, namespace: &str) -> Result<(), crate::policy::Refusal> {
        scope::check_namespace(&self.scope, namespace)
            .map_err(|denied| self.refused("cache", denied))
    }

    /// Checks a cache operation against the command rules (audited); `table` gives
    /// them their categories.
    pub fn check_cache(
        &self,
        operation: CacheOperation,
        table: Option<&CommandTable>,
    ) -> Result<(), crate::policy::Refusal> {
        scope::check_cache(&self.scope, operation, table)
            .map_err(|denied| self.refused(operation.command(), denied))
    }

    /// Checks a Server-Sent Events stream (audited); `table` gives command rules
    /// their categories.
    pub fn check_stream(
        &self,
        stream: Stream<'_>,
        table: Option<&CommandTable>,
    ) -> Result<(), crate::policy::Refusal> {
        let name = match stream {
            Stream::Channel(_) => "subscribe",
            Stream::Pattern(_) => "psubscribe",
            Stream::ShardChannel(_) => "ssubscribe",
            Stream::Monitor => "monitor",
        };
        scope::check_stream(&self.scope, stream, table).map_err(|denied| self.refused(name, denied))
    }

    /// Logs and counts a refusal that happened elsewhere (`reason` is a metric label).
    pub fn audit(&self, command: &str, reason: &'static str, detail: &str) {
        audit::refused(Some(&self.scope.name), command, reason, detail);
    }

    fn refused(&self, command: &str, denied: Denied) -> crate::policy::Refusal {
        let text = denied.refusal.to_string();
        self.audit(command, denied.reason.as_str(), &text);
        denied.refusal
    }
}

/// Token-file state, swapped whole on reload.
#[derive(Debug, Default)]
struct FileState {
    tokens: Vec<([u8; 32], Arc<Scope>)>,
}

/// Every way in: static tokens, the token file, JWTs; plus rate limits and backends.
pub struct Authenticator {
    statics: Tokens,
    admin: Arc<Scope>,
    read_only: Arc<Scope>,
    settings: AuthSettings,
    file: ArcSwap<FileState>,
    jwt: ArcSwapOption<JwtVerifier>,
    revoked: ArcSwap<HashSet<String>>,
    limiter: RateLimiter,
    backends: BackendRegistry,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("file_tokens", &self.file.load().tokens.len())
            .field("jwt", &self.jwt.load().is_some())
            .finish()
    }
}

impl Authenticator {
    /// Static tokens only (no token file, no JWTs).
    pub fn from_tokens(statics: Tokens) -> Authenticator {
        Authenticator {
            statics,
            admin: Arc::new(Scope::unrestricted(STATIC_TOKEN_NAME, Mode::Admin)),
            read_only: Arc::new(Scope::unrestricted(STATIC_READONLY_NAME, Mode::ReadOnly)),
            settings: AuthSettings::default(),
            file: ArcSwap::from_pointee(FileState::default()),
            jwt: ArcSwapOption::empty(),
            revoked: ArcSwap::from_pointee(HashSet::new()),
            limiter: RateLimiter::new(false),
            backends: BackendRegistry::new(None),
        }
    }

    /// Static tokens plus everything `settings` names, loaded now (a broken file is an error).
    pub async fn load(
        statics: Tokens,
        template: BackendSettings,
        settings: AuthSettings,
    ) -> Result<Authenticator, AuthSetupError> {
        let mut auth = Authenticator::from_tokens(statics);
        auth.backends = BackendRegistry::new(Some(template));
        auth.limiter = RateLimiter::new(settings.shared_rate_limits);
        auth.settings = settings;
        auth.reload_tokens_file().await?;
        auth.reload_jwt_keys()?;
        auth.reload_revoked()?;
        Ok(auth)
    }

    /// The settings it was loaded with.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Re-reads the token file (and applies its backends); on error nothing changes.
    pub async fn reload_tokens_file(&self) -> Result<(), AuthSetupError> {
        let Some(path) = &self.settings.tokens_file else {
            return Ok(());
        };
        let file = TokenFile::load(path)?;
        self.backends.apply(&file.backends).await?;
        let count = file.tokens.len();
        self.file.store(Arc::new(FileState {
            tokens: file.tokens,
        }));
        tracing::info!(path = %path.display(), tokens = count, "token file loaded");
        Ok(())
    }

    /// Re-reads the JWT keys; on error nothing changes.
    pub fn reload_jwt_keys(&self) -> Result<(), AuthSetupError> {
        let verifier = JwtVerifier::load(&self.settings.jwt)?;
        self.jwt.store(verifier.map(Arc::new));
        Ok(())
    }

    /// Re-reads the revocation list; on error nothing changes.
    pub fn reload_revoked(&self) -> Result<(), AuthSetupError> {
        let Some(path) = &self.settings.revoked_file else {
            return Ok(());
        };
        let text = std::fs::read_to_string(path).map_err(|source| AuthSetupError::Revoked {
            path: path.display().to_string(),
            source,
        })?;
        let revoked: HashSet<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        tracing::info!(path = %path.display(), revoked = revoked.len(), "JWT revocation list loaded");
        self.revoked.store(Arc::new(revoked));
        Ok(())
    }

    /// The scope of a presented token.
    pub fn authenticate(&self, presented: &str) -> Result<Principal, AuthError> {
        if let Some(access) = self.statics.access_for(presented) {
            let scope = match access {
                Access::Standard => self.admin.clone(),
                Access::ReadOnly => self.read_only.clone(),
            };
            return Ok(Principal::new(scope));
        }
        let hash = tokens::digest(presented);
        let file = self.file.load();
        let mut found: Option<&Arc<Scope>> = None;
        // Every entry is compared, so timing does not tell which one matched.
        for (digest, scope) in &file.tokens {
            let equal: bool = digest.ct_eq(&hash).into();
            if equal {
                found = Some(scope);
            }
        }
        if let Some(scope) = found {
            return Ok(Principal::new(scope.clone()));
        }
        let verifier = self.jwt.load();
        let Some(verifier) = verifier.as_ref() else {
            return Err(AuthError::Invalid);
        };
        if presented.bytes().filter(|b| *b == b'.').count() != 2 {
            return Err(AuthError::Invalid);
        }
        let scope = verifier
            .verify(presented, &self.revoked.load())
            .map_err(|refusal| match refusal {
                JwtRefusal::Invalid => AuthError::Invalid,
                JwtRefusal::Expired => AuthError::Expired,
                JwtRefusal::NotYetValid => AuthError::NotYetValid,
                JwtRefusal::Revoked => AuthError::Revoked,
                JwtRefusal::TooLongLived => AuthError::TooLongLived,
            })?;
        if let Some(backend) = &scope.backend {
            if !self.backends.contains(backend) {
                return Err(AuthError::UnknownBackend);
            }
        }
        Ok(Principal::new(Arc::new(scope)))
    }

    /// Admits one request of `principal` under its rate limit, or answers how long to
    /// wait. Shared limits live on `default` (the `REDIS_URL` backend).
    pub async fn admit(
        &self,
        principal: &Principal,
        default: &Backend,
        table: Option<&CommandTable>,
    ) -> Result<(), Duration> {
        let scope = principal.scope();
        let Some(rate) = scope.rate else {
            return Ok(());
        };
        if self.limiter.is_shared() {
            self.limiter
                .admit_shared(default, table, &scope.name, rate)
                .await
        } else {
            self.limiter.admit_local(&scope.name, rate)
        }
    }

    /// The named backend `name`.
    pub fn backend(&self, name: &str) -> Option<Arc<NamedBackend>> {
        self.backends.get(name)
    }

    /// Closes the named backends.
    pub async fn shutdown(&self) {
        self.backends.shutdown().await;
    }
}
