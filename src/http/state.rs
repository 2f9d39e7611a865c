//! State shared by every handler.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use axum::http::HeaderValue;

use crate::auth::backends::NamedBackend;
use crate::auth::{Authenticator, Principal, Tokens};
use crate::backend::Backend;
use crate::error::ApiError;
use crate::policy::{CommandTable, ScriptRegistry};

/// Cheap to clone: everything lives behind one `Arc`.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
    /// The caller's named backend (token file `backend`), when not the default.
    route: Option<Arc<NamedBackend>>,
}

struct Shared {
    backend: Backend,
    tokens: Tokens,
    auth: OnceLock<Arc<Authenticator>>,
    commands: ArcSwapOption<CommandTable>,
    scripts: ScriptRegistry,
    max_body_bytes: usize,
    sync_token: HeaderValue,
    limits: OnceLock<Limits>,
    cache: OnceLock<crate::cache::Cache>,
    pubsub: OnceLock<crate::backend::pubsub::PubSubHub>,
    blocking: OnceLock<crate::backend::blocking::BlockingPool>,
    /// When Redis last answered a readiness PING (`/readyz` asks at most once a
    /// [`READY_FOR`]); held while a PING is out, so concurrent probes share it.
    last_ready: tokio::sync::Mutex<Option<std::time::Instant>>,
}

/// How long a PING that Redis answered keeps `/readyz` ready without asking again.
pub const READY_FOR: Duration = Duration::from_secs(1);

/// Overload and slow-client limits applied by the HTTP layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests handled at once; beyond it restash answers 503 at once.
    pub max_concurrency: usize,
    /// Longest time to read a request body and answer; then 408.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrency: crate::config::DEFAULT_MAX_CONCURRENCY,
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl AppState {
    /// Assembles the state; the command table is loaded later with [`AppState::set_command_table`].
    pub fn new(backend: Backend, tokens: Tokens, max_body_bytes: usize) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let sync_token =
            HeaderValue::from_str(&format!("{started:x}")).unwrap_or(HeaderValue::from_static("0"));
        AppState {
            inner: Arc::new(Shared {
                backend,
                tokens,
                auth: OnceLock::new(),
                commands: ArcSwapOption::empty(),
                scripts: ScriptRegistry::default(),
                max_body_bytes,
                sync_token,
                limits: OnceLock::new(),
                cache: OnceLock::new(),
                pubsub: OnceLock::new(),
                blocking: OnceLock::new(),
                last_ready: tokio::sync::Mutex::new(None),
            }),
            route: None,
        }
    }

    /// Whether Redis answers PING: asked at most once a [`READY_FOR`] while it does
    /// (an unauthenticated probe must not turn into a PING per request), every time
    /// while it does not (so recovery shows at once).
    pub async fn redis_ready(&self) -> Result<(), crate::backend::BackendError> {
        let mut last_ready = self.inner.last_ready.lock().await;
        if last_ready.is_some_and(|at| at.elapsed() < READY_FOR) {
            return Ok(());
        }
        let answer = self.inner.backend.ping().await;
        *last_ready = answer.is_ok().then(std::time::Instant::now);
        answer
    }

    /// The Redis backend (the caller's named backend once [`AppState::for_caller`] chose it).
    pub fn backend(&self) -> &Backend {
        match &self.route {
            Some(named) => &named.backend,
            None => &self.inner.backend,
        }
    }

    /// The `REDIS_URL` backend, whoever the caller is (shared rate limits live there).
    pub fn default_backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// The state as `caller` sees it: its named backend and that backend's command table.
    pub fn for_caller(&self, caller: &Principal) -> Result<AppState, ApiError> {
        let Some(name) = caller.scope().backend.as_deref() else {
            return Ok(self.clone());
        };
        let named = self.auth().backend(name).ok_or_else(|| {
            ApiError::Unavailable(format!("ERR backend '{name}' is not configured"))
        })?;
        Ok(AppState {
            inner: self.inner.clone(),
            route: Some(named),
        })
    }

    /// Token checks: static tokens, the token file, JWTs, rate limits, named backends.
    pub fn auth(&self) -> &Authenticator {
        self.inner
            .auth
            .get_or_init(|| Arc::new(Authenticator::from_tokens(self.inner.tokens.clone())))
    }

    /// Installs the token checks, once, before serving (later calls are ignored).
    pub fn set_auth(&self, auth: Arc<Authenticator>) {
        let _ = self.inner.auth.set(auth);
    }

    /// The configured tokens.
    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    /// The server's command table, once loaded.
    pub fn command_table(&self) -> Option<Arc<CommandTable>> {
        match &self.route {
            Some(named) => named.command_table(),
            None => self.inner.commands.load_full(),
        }
    }

    /// The `REDIS_URL` server's command table, whoever the caller is.
    pub fn default_command_table(&self) -> Option<Arc<CommandTable>> {
        self.inner.commands.load_full()
    }

    /// Installs the command table read from Redis.
    pub fn set_command_table(&self, table: CommandTable) {
        self.inner.commands.store(Some(Arc::new(table)));
    }

    /// Lua script SHA mappings.
    pub fn scripts(&self) -> &ScriptRegistry {
        &self.inner.scripts
    }

    /// Request body limit in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    /// Sets the limits, once, before the router is built (later calls are ignored).
    pub fn set_limits(&self, limits: Limits) {
        let _ = self.inner.limits.set(limits);
    }

    /// The overload and slow-client limits.
    pub fn limits(&self) -> Limits {
        self.inner.limits.get().copied().unwrap_or_default()
    }

    /// Sets the cache-aside settings, once, before serving (later calls are ignored).
    pub fn set_cache_settings(&self, settings: crate::cache::CacheSettings) {
        let _ = self.inner.cache.set(crate::cache::Cache::new(settings));
    }

    /// The cache-aside state (default settings unless set).
    pub fn cache(&self) -> &crate::cache::Cache {
        self.inner.cache.get_or_init(crate::cache::Cache::default)
    }

    /// Installs the Pub/Sub hub behind the SSE endpoints, once, before serving.
    pub fn set_pubsub(&self, hub: crate::backend::pubsub::PubSubHub) {
        let _ = self.inner.pubsub.set(hub);
    }

    /// The Pub/Sub hub (`None` until installed: the SSE endpoints answer 503).
    pub fn pubsub(&self) -> Option<&crate::backend::pubsub::PubSubHub> {
        self.inner.pubsub.get()
    }

    /// Installs the pool that runs blocking commands for real (`RESTASH_BLOCKING=true`).
    pub fn set_blocking(&self, pool: crate::backend::blocking::BlockingPool) {
        let _ = self.inner.blocking.set(pool);
    }

    /// The blocking-command pool, when blocking commands really block.
    pub fn blocking(&self) -> Option<&crate::backend::blocking::BlockingPool> {
        // The pool connects to REDIS_URL: callers of named backends do not block.
        if self.route.is_some() {
            return None;
        }
        self.inner.blocking.get()
    }

    /// The `upstash-sync-token` value sent on every answer (opaque with one primary).
    pub fn sync_token(&self) -> HeaderValue {
        self.inner.sync_token.clone()
    }
}
