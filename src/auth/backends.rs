//! Named backends from the token file: several Redis deployments behind one restash.
//!
//! Each has its own connections and its own command table (read from it with
//! `COMMAND`). A reload keeps backends whose definition did not change, connects new
//! ones, and closes removed or changed ones after a grace period, so requests in
//! flight on them finish.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::file::BackendDef;
use crate::backend::{Backend, BackendError, BackendSettings};
use crate::policy::CommandTable;
use crate::protocol::reply;

/// How long a removed backend stays open for requests already using it.
const RETIRE_AFTER: Duration = Duration::from_secs(30);

/// One named backend.
pub struct NamedBackend {
    /// Its name in the token file.
    pub name: String,
    /// Its connections.
    pub backend: Backend,
    table: ArcSwapOption<CommandTable>,
    definition: BackendDef,
    loader: CancellationToken,
}

impl std::fmt::Debug for NamedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedBackend")
            .field("name", &self.name)
            .finish()
    }
}

impl NamedBackend {
    /// Its command table, once read.
    pub fn command_table(&self) -> Option<Arc<CommandTable>> {
        self.table.load_full()
    }
}

/// The named backends, swapped whole on reload.
pub struct BackendRegistry {
    template: Option<BackendSettings>,
    current: ArcSwap<HashMap<String, Arc<NamedBackend>>>,
}

impl std::fmt::Debug for BackendRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendRegistry")
            .field("backends", &self.current.load().len())
            .finish()
    }
}

impl BackendRegistry {
    /// An empty registry; new backends copy `template`'s timeouts and pool sizes
    /// (without a template, defining a backend is an error).
    pub fn new(template: Option<BackendSettings>) -> BackendRegistry {
        BackendRegistry {
            template,
            current: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// The backend called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<NamedBackend>> {
        self.current.load().get(name).cloned()
    }

    /// Whether `name` is defined.
    pub fn contains(&self, name: &str) -> bool {
        self.current.load().contains_key(name)
    }

    /// Makes the registry match `definitions`: unchanged backends stay connected.
    pub async fn apply(
        &self,
        definitions: &BTreeMap<String, BackendDef>,
    ) -> Result<(), BackendError> {
        let old = self.current.load_full();
        let mut next = HashMap::with_capacity(definitions.len());
        for (name, definition) in definitions {
            match old.get(name) {
                Some(existing) if existing.definition == *definition => {
                    next.insert(name.clone(), existing.clone());
                }
                _ => {
                    let named = self.connect(name, definition).await?;
                    next.insert(name.clone(), named);
                }
            }
        }
        self.current.store(Arc::new(next));
        let current = self.current.load();
        for (name, backend) in old.iter() {
            let kept = current.get(name).is_some_and(|b| Arc::ptr_eq(b, backend));
            if !kept {
                retire(backend.clone());
            }
        }
        Ok(())
    }

    /// Closes every backend (at shutdown).
    pub async fn shutdown(&self) {
        let all = self.current.swap(Arc::new(HashMap::new()));
        for backend in all.values() {
            backend.loader.cancel();
            backend.backend.shutdown().await;
        }
    }

    async fn connect(
        &self,
        name: &str,
        definition: &BackendDef,
    ) -> Result<Arc<NamedBackend>, BackendError> {
        let mut settings = self.template.clone().ok_or_else(|| {
            BackendError::Config("named backends need the gateway's settings".into())
        })?;
        settings.url = definition.url.clone();
        if let Some(n) = definition.connections {
            settings.connections = n;
        }
        if let Some(n) = definition.transaction_connections {
            settings.transaction_connections = n;
        }
        let backend = Backend::connect(&settings).await?;
        let named = Arc::new(NamedBackend {
            name: name.to_string(),
            backend,
            table: ArcSwapOption::empty(),
            definition: definition.clone(),
            loader: CancellationToken::new(),
        });
        tokio::spawn(load_table(named.clone()));
        tracing::info!(backend = name, "named backend configured");
        Ok(named)
    }
}

fn retire(backend: Arc<NamedBackend>) {
    backend.loader.cancel();
    tokio::spawn(async move {
        tokio::time::sleep(RETIRE_AFTER).await;
        tracing::info!(backend = %backend.name, "closing a backend removed from the token file");
        backend.backend.shutdown().await;
    });
}

/// Reads `COMMAND` from a named backend, retrying until it answers or is retired.
async fn load_table(named: Arc<NamedBackend>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let attempt = named
            .backend
            .execute(vec![Bytes::from_static(b"COMMAND")])
            .await;
        if let Ok(frame) = attempt {
            if reply::error_text(&frame).is_none() {
                if let Ok(table) = CommandTable::from_frame(&frame) {
                    named.table.store(Some(Arc::new(table)));
                    return;
                }
            }
        }
        tokio::select! {
            _ = named.loader.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
