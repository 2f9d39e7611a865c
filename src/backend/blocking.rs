//! Blocking commands for real (`RESTASH_BLOCKING=true`): a bounded pool of
//! dedicated connections, separate from the shared ones, so a caller blocked in
//! `BLMOVE` never delays anyone else.
//!
//! - at most `connections` commands block at once; a caller that finds every
//!   connection busy for `acquire_wait` gets a 503 instead of queueing;
//! - connections are opened on first use and kept;
//! - each command's fred timeout is its (already clamped) wait plus the normal
//!   reply budget;
//! - a caller that goes away, a fred timeout, or shutdown sends `CLIENT UNBLOCK` for
//!   the connection: it is free again at once, and the command returns as if it had
//!   timed out, so no list item is popped for a caller who is no longer there;
//! - on a cluster, a command redirected with `MOVED` (Redis ran nothing) is sent
//!   again to the slot's new owner, like the shared connections' commands; one
//!   redirected with `ASK` during a slot migration runs after `ASKING` on the
//!   importing node, on a connection opened for it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::clients::Client;
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike, ClusterInterface};
use fred::types::config::Options;
use fred::types::{Builder, ClusterHash, CustomCommand, Value};
use tokio::sync::{Mutex, OnceCell, OwnedMutexGuard, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{ask, BackendError};
use crate::protocol::reply::{self, Frame};

/// How long a caller waits for a free blocking connection before a 503.
pub const ACQUIRE_WAIT: Duration = Duration::from_millis(100);

/// Settings of the blocking pool.
#[derive(Debug, Clone)]
pub struct BlockingSettings {
    /// `REDIS_URL`.
    pub url: String,
    /// Dedicated connections (commands blocked at once).
    pub connections: usize,
    /// The longest a command may block (`RESTASH_BLOCKING_MAX_MS`).
    pub max_wait: Duration,
    /// How long a caller waits for a free connection before a 503.
    pub acquire_wait: Duration,
    /// Added to each command's wait to get its fred timeout.
    pub reply_margin: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Cap of the delay between reconnection attempts.
    pub reconnect_max_delay: Duration,
    /// CA certificates to trust for `rediss://` (`RESTASH_REDIS_TLS_CA_FILE`).
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl BlockingSettings {
    /// The settings restash runs with.
    pub fn from_config(config: &crate::config::Config) -> Self {
        BlockingSettings {
            url: config.redis_url.clone(),
            connections: config.blocking_connections,
            max_wait: config.blocking_max,
            acquire_wait: ACQUIRE_WAIT,
            reply_margin: config.command_timeout,
            connect_timeout: config.connect_timeout,
            reconnect_max_delay: config.reconnect_max_delay,
            tls_ca_file: config.redis_tls_ca_file.clone(),
        }
    }
}

/// Dedicated connections for blocking commands. Cheap to clone.
#[derive(Clone)]
pub struct BlockingPool {
    inner: Arc<Pool>,
}

struct Pool {
    builder: Builder,
    slots: Vec<Arc<Mutex<Option<Client>>>>,
    permits: Arc<Semaphore>,
    /// Sends `CLIENT UNBLOCK`; opened on first need.
    control: OnceCell<Client>,
    /// Importing nodes (`ASK`) that could not be reached lately.
    unreachable: ask::Unreachable,
    settings: BlockingSettings,
    shutdown: CancellationToken,
}

impl BlockingPool {
    /// Validates the URL; no connection is opened until a command needs one.
    /// Blocked commands are released when `shutdown` is cancelled.
    pub fn new(
        settings: BlockingSettings,
        shutdown: CancellationToken,
    ) -> Result<BlockingPool, BackendError> {
        let (mut builder, connection) = super::base_builder(
            &settings.url,
            settings.tls_ca_file.as_deref(),
            settings.reconnect_max_delay,
            settings.connect_timeout,
            settings.reply_margin,
        )?;
        builder.set_connection_config(connection);
        let count = settings.connections.max(1);
        Ok(BlockingPool {
            inner: Arc::new(Pool {
                builder,
                slots: (0..count).map(|_| Arc::new(Mutex::new(None))).collect(),
                permits: Arc::new(Semaphore::new(count)),
                control: OnceCell::new(),
                unreachable: ask::Unreachable::default(),
                settings,
                shutdown,
            }),
        })
    }

    /// The longest a command may block; timeouts are clamped to it.
    pub fn max_wait(&self) -> Duration {
        self.inner.settings.max_wait
    }

    /// Runs one blocking command that Redis holds for at most `wait`, on a
    /// connection of its own, and returns its reply (Redis errors included).
    pub async fn execute(&self, args: Vec<Bytes>, wait: Duration) -> Result<Frame, BackendError> {
        let pool = &self.inner;
        let busy = || {
            BackendError::Unavailable(format!(
                "all {} connections for blocking commands are busy",
                pool.slots.len()
            ))
        };
        let permit = match tokio::time::timeout(
            pool.settings.acquire_wait,
            pool.permits.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            _ => return Err(busy()),
        };
        // The permit guarantees a free slot.
        let mut slot = pool
            .slots
            .iter()
            .find_map(|s| s.clone().try_lock_owned().ok())
            .ok_or_else(busy)?;
        let client = pool.client(&mut slot).await?;
        let options = Options {
            cluster_hash: cluster_hash(&args),
            timeout: Some(wait + pool.settings.reply_margin),
            ..super::single_attempt()
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pool_ref = self.inner.clone();
        tokio::spawn(async move {
            // Held until Redis has answered: the connection is not reused while blocked.
            let _permit = permit;
            let _slot = slot;
            let mut tx = tx;
            let result = pool_ref.run(&client, args, &options, &mut tx).await;
            let _ = tx.send(result);
        });
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(BackendError::Unavailable(
                "the blocking command was abandoned".into(),
            )),
        }
    }
}

impl BlockingPool {
    /// Closes every idle connection (at shutdown; blocked commands were released
    /// when the shutdown token was cancelled).
    pub async fn shutdown(&self) {
        for slot in &self.inner.slots {
            let client = slot.try_lock().ok().and_then(|mut s| s.take());
            if let Some(client) = client {
                let _ = client.quit().await;
            }
        }
        if let Some(control) = self.inner.control.get() {
            let _ = control.quit().await;
        }
    }
}

impl Pool {
    /// The slot's client, created and connected on first use.
    async fn client(
        &self,
        slot: &mut OwnedMutexGuard<Option<Client>>,
    ) -> Result<Client, BackendError> {
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let client = self.connect().await?;
        **slot = Some(client.clone());
        Ok(client)
    }

    async fn connect(&self) -> Result<Client, BackendError> {
        let client = self
            .builder
            .build()
            .map_err(|e| BackendError::Config(e.to_string()))?;
        client.connect();
        match tokio::time::timeout(self.settings.connect_timeout, client.wait_for_connect()).await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(error)) => {
                let _ = client.quit().await;
                Err(BackendError::Unavailable(error.details().to_string()))
            }
            Err(_) => {
                let _ = client.quit().await;
                Err(BackendError::Unavailable(format!(
                    "no connection within {} ms",
                    self.settings.connect_timeout.as_millis()
                )))
            }
        }
    }

    /// Runs the command on `client`, again on the new owner when the cluster
    /// redirected it (Redis ran nothing then; fred has read the slot map again), or
    /// after `ASKING` on the node its slot is being migrated to when it is still
    /// redirected (see [`super::ask`]). A caller that goes away, a timeout or
    /// shutdown unblocks the connection.
    async fn run(
        &self,
        client: &Client,
        args: Vec<Bytes>,
        options: &Options,
        caller: &mut Reply,
    ) -> Result<Frame, BackendError> {
        let timeout = options.timeout.unwrap_or_default();
        let slot = match options.cluster_hash {
            Some(ClusterHash::Custom(slot)) => Some(slot),
            _ => None,
        };
        let (command, values) = to_custom(args);
        let mut redirects = 0;
        loop {
            let migrating_to = match slot {
                Some(slot) if redirects >= ask::ASK_AFTER_TRIES => {
                    ask::importing_node(client, slot).await
                }
                _ => None,
            };
            let result = match migrating_to {
                Some((host, port)) => {
                    crate::metrics::record_redirect("ask");
                    self.run_asking(&host, port, &command, &values, timeout, caller)
                        .await
                }
                None => {
                    self.run_on_owner(client, slot, &command, &values, options, caller)
                        .await
                }
            };
            if !ask::is_redirected(&result) {
                return result.map_err(|error| map_error(&error, timeout));
            }
            if redirects == super::REDIRECT_RETRIES {
                return Err(BackendError::Unavailable(format!(
                    "the cluster redirected the command {} times (is its hash slot being \
                     migrated?); try again",
                    redirects + 1
                )));
            }
            if caller.is_closed() || self.shutdown.is_cancelled() {
                return Err(BackendError::Unavailable(
                    "the blocking command was abandoned".into(),
                ));
            }
            crate::metrics::record_redirect("retried");
            redirects += 1;
        }
    }

    /// One try on the node that owns `slot` now (by `client`'s slot map): `CLIENT
    /// ID`, the command and any `CLIENT UNBLOCK` all go to it.
    async fn run_on_owner(
        &self,
        client: &Client,
        slot: Option<u16>,
        command: &CustomCommand,
        values: &[Value],
        options: &Options,
        caller: &mut Reply,
    ) -> Result<Frame, FredError> {
        let node = slot.and_then(|slot| client.cached_cluster_state()?.get_server(slot).cloned());
        let pinned = Options {
            cluster_node: node,
            ..options.clone()
        };
        let client = client.with_options(&pinned);
        let id = client_id(&client).await?;
        let reply = client.custom_raw(command.clone(), values.to_vec());
        self.wait_or_release(reply, caller, self.unblock(id, &pinned))
            .await
    }

    /// One try on `host:port`, which is importing the command's slot: `ASKING` and
    /// the command on a connection of their own, opened for this command (the
    /// pool's connections reach only the nodes that own slots).
    async fn run_asking(
        &self,
        host: &str,
        port: u16,
        command: &CustomCommand,
        values: &[Value],
        timeout: Duration,
        caller: &mut Reply,
    ) -> Result<Frame, FredError> {
        let connect_timeout = self.settings.connect_timeout;
        let node = self
            .unreachable
            .connect(&self.builder, host, port, connect_timeout)
            .await?;
        // The command may block for `timeout`; what comes before it may not.
        let options = |timeout| Options {
            timeout: Some(timeout),
            ..super::single_attempt()
        };
        let result = async {
            let setup = node.with_options(&options(self.settings.reply_margin));
            let id = client_id(&setup).await.inspect_err(|error| {
                if *error.kind() == ErrorKind::Timeout {
                    self.unreachable.record_silence(host, port, error);
                }
            })?;
            let asking = CustomCommand::new_static("ASKING", ClusterHash::Random, false);
            if let Some(text) =
                reply::error_text(&setup.custom_raw(asking, Vec::<Value>::new()).await?)
            {
                return Err(ask::asking_refused(host, port, &text));
            }
            let client = node.with_options(&options(timeout));
            let reply = client.custom_raw(command.clone(), values.to_vec());
            self.wait_or_release(reply, caller, self.unblock_on(host, port, id))
                .await
        }
        .await;
        let _ = node.quit().await;
        result
    }

    /// Waits for `reply`; when it fails, or the caller goes away or restash shuts
    /// down first, runs `release` (`CLIENT UNBLOCK`) so that Redis is not still
    /// holding the command, and answers as Redis then does.
    async fn wait_or_release(
        &self,
        reply: impl Future<Output = Result<Frame, FredError>>,
        caller: &mut Reply,
        release: impl Future<Output = ()>,
    ) -> Result<Frame, FredError> {
        // Gone while the connection was being set up: the command is not sent.
        if caller.is_closed() || self.shutdown.is_cancelled() {
            return Err(FredError::new(
                ErrorKind::Canceled,
                "the blocking command was abandoned before it was sent",
            ));
        }
        tokio::pin!(reply);
        let early = tokio::select! {
            // The reply first: its first poll sends the command, so that a release
            // that follows finds it (or it is already answered).
            biased;
            result = &mut reply => Some(result),
            _ = caller.closed() => None,
            _ = self.shutdown.cancelled() => None,
        };
        match early {
            // Redirected: Redis ran nothing.
            Some(Err(error)) if super::is_redirect(&error) => Err(error),
            Some(Ok(frame)) => Ok(frame),
            Some(Err(error)) => {
                // Timed out or failed: make sure Redis is not still holding it.
                release.await;
                Err(error)
            }
            None => {
                release.await;
                reply.await
            }
        }
    }

    /// `CLIENT UNBLOCK id` on `host:port`, over a connection opened for it.
    async fn unblock_on(&self, host: &str, port: u16, id: Option<i64>) {
        let Some(id) = id else { return };
        let timeout = self.settings.connect_timeout;
        let control = match ask::connect_node(&self.builder, host, port, timeout).await {
            Ok(control) => control,
            Err(error) => {
                tracing::warn!(%error, "cannot unblock a blocked command");
                return;
            }
        };
        let command = CustomCommand::new_static("CLIENT", ClusterHash::Random, false);
        let args = vec![Value::from("UNBLOCK"), Value::from(id)];
        if let Err(error) = control.custom_raw(command, args).await {
            tracing::warn!(error = %error.details(), "CLIENT UNBLOCK failed");
        }
        let _ = control.quit().await;
    }

    /// `CLIENT UNBLOCK id` on the node that holds the blocked connection (`to`'s
    /// node, or its slot's).
    async fn unblock(&self, id: Option<i64>, to: &Options) {
        let Some(id) = id else { return };
        let control = match self.control.get_or_try_init(|| self.connect()).await {
            Ok(control) => control,
            Err(error) => {
                tracing::warn!(%error, "cannot unblock a blocked command");
                return;
            }
        };
        let options = Options {
            cluster_node: to.cluster_node.clone(),
            cluster_hash: to.cluster_hash.clone(),
            ..super::single_attempt()
        };
        let command = CustomCommand::new("CLIENT", ClusterHash::FirstKey, false);
        let args = vec![Value::from("UNBLOCK"), Value::from(id)];
        if let Err(error) = control
            .with_options(&options)
            .custom_raw(command, args)
            .await
        {
            tracing::warn!(error = %error.details(), "CLIENT UNBLOCK failed");
        }
    }
}

/// The sender of a blocking command's result to its caller.
type Reply = tokio::sync::oneshot::Sender<Result<Frame, BackendError>>;

/// The id of the connection the command will block on.
async fn client_id(client: &impl ClientLike) -> Result<Option<i64>, FredError> {
    let command = CustomCommand::new("CLIENT", ClusterHash::FirstKey, false);
    match client.custom_raw(command, vec![Value::from("ID")]).await? {
        Frame::Number { data, .. } => Ok(Some(data)),
        _ => Ok(None),
    }
}

/// Routes the command (and its `CLIENT ID`/`CLIENT UNBLOCK`) by its first key.
fn cluster_hash(args: &[Bytes]) -> Option<ClusterHash> {
    first_key(args).map(|key| ClusterHash::Custom(fred::util::redis_keyslot(key)))
}

/// The first key of a blocking command.
fn first_key(args: &[Bytes]) -> Option<&Bytes> {
    let name = args.first()?.to_ascii_lowercase();
    match name.as_slice() {
        b"blmpop" | b"bzmpop" => args.get(3),
        // Options walked as Redis walks them: a group named "streams" is no keyword.
        b"xread" | b"xreadgroup" => args.get(crate::routing::keys::streams_keyword(args)? + 1),
        _ => args.get(1),
    }
}

fn to_custom(args: Vec<Bytes>) -> (CustomCommand, Vec<Value>) {
    let mut args = args.into_iter();
    let name = args
        .next()
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .unwrap_or_default();
    let command = CustomCommand::new(name, ClusterHash::FirstKey, true);
    (command, args.map(Value::Bytes).collect())
}

fn map_error(error: &FredError, timeout: Duration) -> BackendError {
    match error.kind() {
        ErrorKind::Timeout => BackendError::Timeout(timeout.as_millis()),
        _ => BackendError::Unavailable(error.details().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(parts: &[&str]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::from(p.to_string())).collect()
    }

    #[test]
    fn first_keys() {
        let key = |parts: &[&str]| first_key(&args(parts)).cloned();
        assert_eq!(key(&["BLPOP", "a", "b", "1"]), Some(Bytes::from("a")));
        assert_eq!(
            key(&["BLMOVE", "s", "d", "LEFT", "RIGHT", "0"]),
            Some(Bytes::from("s"))
        );
        assert_eq!(
            key(&["BLMPOP", "0", "2", "x", "y", "LEFT"]),
            Some(Bytes::from("x"))
        );
        assert_eq!(
            key(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]),
            Some(Bytes::from("s"))
        );
        assert_eq!(key(&["XREAD", "BLOCK", "0"]), None);
        // A group named "streams" is a name, not the keyword.
        assert_eq!(
            key(&[
                "XREADGROUP",
                "GROUP",
                "streams",
                "c",
                "BLOCK",
                "0",
                "STREAMS",
                "s",
                ">"
            ]),
            Some(Bytes::from("s"))
        );
    }
}
