//! State shared by every handler.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::http::HeaderValue;

use crate::auth::Tokens;
use crate::backend::Backend;
use crate::policy::{CommandTable, ScriptRegistry};

/// Cheap to clone: everything lives behind one `Arc`.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    backend: Backend,
    tokens: Tokens,
    commands: ArcSwapOption<CommandTable>,
    scripts: ScriptRegistry,
    max_body_bytes: usize,
    sync_token: HeaderValue,
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
                commands: ArcSwapOption::empty(),
                scripts: ScriptRegistry::default(),
                max_body_bytes,
                sync_token,
            }),
        }
    }

    /// The Redis backend.
    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// The configured tokens.
    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    /// The server's command table, once loaded.
    pub fn command_table(&self) -> Option<Arc<CommandTable>> {
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

    /// The `upstash-sync-token` value sent on every answer (opaque with one primary).
    pub fn sync_token(&self) -> HeaderValue {
        self.inner.sync_token.clone()
    }
}
