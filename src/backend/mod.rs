//! The only module that talks to Redis (through fred).
//!
//! - one [`Pool`] of multiplexed, auto-pipelined connections shared by every caller;
//! - an [`ExclusivePool`] of dedicated connections for `MULTI … EXEC`;
//! - raw frames only (`custom_raw`): a Redis error reply is data, so an `Err` here
//!   always means a transport problem (timeout, disconnect, backpressure).
//!
//! Commands are never replayed after a reconnect (`max_command_attempts = 1`):
//! a caller gets a 503 and decides, rather than a write applied twice.
//!
//! A cluster's `MOVED`/`ASK` is different: Redis did not run the command, so it is
//! safe to send again. fred would count that second write as a replay and fail it,
//! so fred follows no redirect itself (`max_redirections = 0`): after a `MOVED` it
//! reads the slot map again and reports the redirect, and restash sends the
//! command again (at most [`REDIRECT_RETRIES`] times), now to the new owner. A
//! transaction with a redirected command was discarded by Redis (`EXECABORT`), so
//! it is sent again whole, on the same connection. A command still redirected after
//! the slot map was read again meets a slot being migrated: the `ask` module follows
//! the `ASK`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::clients::{Client, ExclusivePool, Pool};
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike, ClusterInterface, EventInterface};
use fred::types::config::{
    Config as FredConfig, ConnectionConfig, Options, PerformanceConfig, ReconnectPolicy, Server,
};
use fred::types::config::{ReplicaConfig, UnresponsiveConfig};
use fred::types::{Builder, ClusterHash, CustomCommand, Value};

use crate::protocol::reply::{self, Frame};
use ask::AskFollower;
use mux::{Endpoint, Mux, MuxSettings};

mod ask;
pub mod blocking;
pub mod mux;
pub mod pubsub;
pub mod tls;

/// Most commands of one pipeline handed to fred at once; larger pipelines go in
/// consecutive chunks so that one request cannot fill the whole command buffer.
const PIPELINE_CHUNK: usize = 1024;

/// Settings for the Redis connections.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    /// `redis://`, `rediss://` or `redis+unix://` URL.
    pub url: String,
    /// Send read-only commands to replicas (cluster deployments).
    pub read_from_replicas: bool,
    /// PEM file of CA certificates to trust for `rediss://` instead of the system roots.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Shared multiplexed connections.
    pub connections: usize,
    /// Dedicated connections for transactions.
    pub transaction_connections: usize,
    /// Longest wait for one command's reply.
    pub command_timeout: Duration,
    /// Longest wait for a TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Commands queued per connection before callers get backpressure errors.
    pub command_buffer: usize,
    /// Longest delay between reconnection attempts.
    pub reconnect_max_delay: Duration,
    /// Shared commands on a plain single node go through [`mux`] instead of fred.
    pub own_multiplexer: bool,
}

/// A transport-level failure: Redis did not give an answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    /// No reply within the command timeout (504).
    #[error("ERR Redis did not answer within {0} ms")]
    Timeout(u128),
    /// Disconnected, refused, or overloaded (503).
    #[error("ERR Redis is unavailable: {0}")]
    Unavailable(String),
    /// The URL or settings are invalid (start-up only).
    #[error("invalid Redis configuration: {0}")]
    Config(String),
}

/// The outcome of `/multi-exec` when Redis answered.
#[derive(Debug)]
pub enum TransactionOutcome {
    /// EXEC ran: one frame per command (errors included).
    Executed(Vec<Frame>),
    /// The transaction was discarded (queue-time error): the text to report.
    Discarded(String),
}

/// The fred settings every restash connection shares: fail fast while
/// disconnected, never replay a command, reconnect with exponential backoff, trust
/// the operator's CA for `rediss://`, and wait `reply_timeout` for each reply.
/// Callers extend the returned connection settings and set them on the builder.
pub(crate) fn base_builder(
    url: &str,
    tls_ca_file: Option<&std::path::Path>,
    reconnect_max_delay: Duration,
    connect_timeout: Duration,
    reply_timeout: Duration,
) -> Result<(Builder, ConnectionConfig), BackendError> {
    let mut config = FredConfig::from_url(url).map_err(|e| BackendError::Config(e.to_string()))?;
    config.fail_fast = true;
    if let Some(path) = tls_ca_file {
        config.tls = Some(tls::config_with_ca_file(path)?);
    }
    let mut builder = Builder::from_config(config);
    builder
        .set_policy(ReconnectPolicy::new_exponential(
            0,
            50,
            reconnect_max_delay.as_millis() as u32,
            2,
        ))
        .set_performance_config(PerformanceConfig {
            default_command_timeout: reply_timeout,
            ..PerformanceConfig::default()
        });
    let connection = ConnectionConfig {
        connection_timeout: connect_timeout,
        internal_command_timeout: reply_timeout,
        max_command_attempts: 1,
        // Redirects come back to restash, which sends the command again (see above).
        max_redirections: 0,
        ..ConnectionConfig::default()
    };
    Ok((builder, connection))
}

/// Where one command goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Wherever fred's default hashing sends it (the first key-like argument).
    Default,
    /// Any node (keyless commands).
    AnyNode,
    /// The primary that owns this hash slot.
    Slot(u16),
    /// A replica of the primary that owns this hash slot (falls back to the primary).
    Replica(u16),
    /// One primary, by address (fan-out and scans).
    Node(Node),
}

/// A primary of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node(Server);

impl Node {
    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.0.host, self.0.port)
    }
}

/// Handles to Redis shared by all requests.
#[derive(Clone)]
pub struct Backend {
    shared: Pool,
    transactions: ExclusivePool,
    command_timeout: Duration,
    /// Applied to every command: fail at once while disconnected, never replay.
    options: Options,
    read_from_replicas: bool,
    /// restash's own batching connections (plain single node only).
    mux: Option<Arc<Mux>>,
    /// Connections to importing nodes for `ASK` redirects (clusters only).
    asks: Option<Arc<AskFollower>>,
    /// Most commands handed to fred at once (see [`chunk_size`]).
    chunk_size: usize,
}

impl Backend {
    /// Builds the clients and starts connecting in the background.
    /// Requests fail fast with 503 until Redis is reachable.
    pub async fn connect(settings: &BackendSettings) -> Result<Backend, BackendError> {
        let (mut builder, base) = base_builder(
            &settings.url,
            settings.tls_ca_file.as_deref(),
            settings.reconnect_max_delay,
            settings.connect_timeout,
            settings.command_timeout,
        )?;
        builder.set_connection_config(ConnectionConfig {
            max_command_buffer_len: settings.command_buffer,
            // A connection whose replies stop (a reply fred cannot decode, a
            // half-open socket) is closed and reopened instead of hanging.
            unresponsive: UnresponsiveConfig {
                max_timeout: Some(settings.command_timeout * 2),
                interval: Duration::from_millis(250),
            },
            replica: ReplicaConfig {
                lazy_connections: true,
                primary_fallback: true,
                ignore_reconnection_errors: true,
                ..ReplicaConfig::default()
            },
            ..base
        });
        // The same parsed URL and TLS settings fred uses.
        let endpoint = builder
            .get_config()
            .filter(|_| settings.own_multiplexer)
            .and_then(Endpoint::from_config);
        let mux = endpoint.map(|endpoint| {
            Arc::new(Mux::start(
                endpoint,
                &MuxSettings {
                    connections: settings.connections.max(1),
                    command_timeout: settings.command_timeout,
                    connect_timeout: settings.connect_timeout,
                    reconnect_max_delay: settings.reconnect_max_delay,
                    command_buffer: settings.command_buffer,
                },
            ))
        });
        // With the multiplexer, fred's shared pool only answers questions about
        // the deployment: one connection is enough.
        let fred_shared = if mux.is_some() {
            1
        } else {
            settings.connections.max(1)
        };
        let shared = builder
            .build_pool(fred_shared)
            .map_err(|e| BackendError::Config(e.to_string()))?;
        let transactions = builder
            .build_exclusive_pool(settings.transaction_connections.max(1))
            .map_err(|e| BackendError::Config(e.to_string()))?;
        let asks = AskFollower::for_cluster(&builder, settings.connect_timeout).map(Arc::new);
        for client in shared.clients() {
            client.on_reconnect(|_| async {
                crate::metrics::record_redis_reconnect("shared");
                Ok(())
            });
        }
        let shared_size = mux.as_ref().map_or(shared.size(), |mux| mux.size());
        crate::metrics::set_pool_size("shared", shared_size);
        crate::metrics::set_pool_size("transactions", transactions.size());
        shared.connect_pool();
        transactions.connect_pool().await;
        Ok(Backend {
            shared,
            transactions,
            command_timeout: settings.command_timeout,
            options: single_attempt(),
            read_from_replicas: settings.read_from_replicas,
            mux,
            asks,
            chunk_size: chunk_size_for(settings.command_buffer),
        })
    }

    /// Waits until the shared connections are up, for at most `limit`.
    pub async fn wait_until_connected(&self, limit: Duration) -> bool {
        let started = std::time::Instant::now();
        let mut connected = matches!(
            tokio::time::timeout(limit, self.shared.wait_for_connect()).await,
            Ok(Ok(()))
        );
        if let Some(mux) = &self.mux {
            let left = limit.saturating_sub(started.elapsed());
            connected = connected && mux.wait_until_connected(left).await;
        }
        if connected && self.reads_from_replicas() {
            // fred learns the replicas of each primary on demand; learn them now.
            for client in self.shared.clients() {
                let synced = match client.sync_cluster().await {
                    Ok(()) => client.replicas().sync(false).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = synced {
                    tracing::warn!(%error, "cannot read the cluster's replicas");
                }
            }
        }
        connected
    }

    /// Whether read-only commands go to replicas (`RESTASH_READ_FROM_REPLICAS` on a cluster).
    pub fn reads_from_replicas(&self) -> bool {
        self.read_from_replicas && self.is_cluster()
    }

    /// Whether two slots are served by the same primary right now.
    pub fn same_shard(&self, a: u16, b: u16) -> bool {
        if a == b {
            return true;
        }
        match self.shared.next().cached_cluster_state() {
            Some(state) => match (state.get_server(a), state.get_server(b)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            },
            None => false,
        }
    }

    /// Whether the deployment is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.shared.is_clustered()
    }

    /// The primaries of a cluster, sorted by address (empty for other deployments).
    pub async fn primaries(&self) -> Result<Vec<Node>, BackendError> {
        let client = self.shared.next();
        let state = match client.cached_cluster_state() {
            Some(state) => state,
            None => {
                client.sync_cluster().await.map_err(|e| self.map_error(e))?;
                client
                    .cached_cluster_state()
                    .ok_or_else(|| BackendError::Unavailable("no cluster state".into()))?
            }
        };
        let mut nodes: Vec<Node> = state.unique_primary_nodes().into_iter().map(Node).collect();
        nodes.sort_by_key(Node::address);
        Ok(nodes)
    }

    /// Runs one command (fred's default routing) and returns Redis' reply frame (errors included).
    pub async fn execute(&self, args: Vec<Bytes>) -> Result<Frame, BackendError> {
        self.execute_on(args, Target::Default).await
    }

    /// Runs one command on `target`.
    pub async fn execute_on(
        &self,
        args: Vec<Bytes>,
        target: Target,
    ) -> Result<Frame, BackendError> {
        // The multiplexer serves a single node: whatever the target, it is that node.
        if let Some(mux) = &self.mux {
            return mux.one(args).await;
        }
        let client = self.shared.next();
        // fred's command future is about 8 KB. Boxed, it does not size (and get
        // copied with) every future that awaits this one, including the
        // multiplexer's path above.
        Box::pin(send_following_redirects(
            client,
            self.to_custom(args, &target),
            self.asks.as_deref(),
        ))
        .await
        .map_err(|e| self.map_error(e))
    }

    /// Runs commands as one pipeline (fred's default routing): in order, not atomic,
    /// one reply per command.
    pub async fn pipeline(&self, commands: Vec<Vec<Bytes>>) -> Result<Vec<Frame>, BackendError> {
        self.pipeline_on(commands.into_iter().map(|c| (c, Target::Default)).collect())
            .await
    }

    /// Runs commands, each on its target, as one pipeline per connection: in order
    /// per node, not atomic, one reply per command.
    pub async fn pipeline_on(
        &self,
        commands: Vec<(Vec<Bytes>, Target)>,
    ) -> Result<Vec<Frame>, BackendError> {
        // A single node (the multiplexer's) is every command's target.
        if let Some(mux) = &self.mux {
            let mut replies = Vec::with_capacity(commands.len());
            let mut commands = commands.into_iter().map(|(args, _)| args).peekable();
            while commands.peek().is_some() {
                let chunk: Vec<_> = commands.by_ref().take(self.chunk_size).collect();
                replies.extend(mux.many(chunk).await?);
            }
            return Ok(replies);
        }
        let client = self.shared.next().clone();
        let mut replies = Vec::with_capacity(commands.len());
        let mut commands = commands.into_iter().peekable();
        while commands.peek().is_some() {
            let chunk: Vec<_> = commands
                .by_ref()
                .take(self.chunk_size)
                .map(|(args, target)| self.to_custom(args, &target))
                .collect();
            let results =
                send_in_order_following_redirects(&client, chunk, self.asks.as_deref()).await;
            for result in results {
                replies.push(result.map_err(|e| self.map_error(e))?);
            }
        }
        Ok(replies)
    }

    /// Runs `MULTI`, the commands and `EXEC` on a dedicated connection to `target`'s
    /// node, never replayed.
    pub async fn transaction(
        &self,
        commands: Vec<Vec<Bytes>>,
        target: Target,
    ) -> Result<TransactionOutcome, BackendError> {
        let count = commands.len();
        let mut batch = Vec::with_capacity(count + 2);
        batch.push(self.to_custom(vec![Bytes::from_static(b"MULTI")], &target));
        batch.extend(commands.into_iter().map(|c| self.to_custom(c, &target)));
        batch.push(self.to_custom(vec![Bytes::from_static(b"EXEC")], &target));
        let asks = self.asks.clone();
        let slot = match target {
            Target::Slot(slot) => Some(slot),
            _ => None,
        };
        // Less than a chunk, with room for an `ASKING` (see `ask`), is handed to fred
        // whole on its first poll: a caller that goes away cannot stop it half-way.
        let results = if batch.len() < self.chunk_size {
            let client = self.transactions.acquire().await;
            let _lease = crate::metrics::PoolLease::start("transactions");
            run_transaction(&client, asks.as_deref(), batch, slot).await
        } else {
            // On a task of its own: stopped between chunks (its request timed out, its
            // caller went away), it would leave its connection inside `MULTI`. One
            // whose caller is gone before it starts is not started.
            let transactions = self.transactions.clone();
            let (mut caller, outcome) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let client = tokio::select! {
                    client = transactions.acquire() => client,
                    () = caller.closed() => return,
                };
                let _lease = crate::metrics::PoolLease::start("transactions");
                let _ = caller.send(run_transaction(&client, asks.as_deref(), batch, slot).await);
            });
            outcome
                .await
                .map_err(|_| BackendError::Unavailable("the transaction was not run".into()))?
        }
        .map_err(|error| self.map_error(error))?;
        let mut frames = Vec::with_capacity(results.len());
        for result in results {
            frames.push(result.map_err(|e| self.map_error(e))?);
        }
        let exec_reply = frames.pop().unwrap_or(Frame::Null);
        if let Some(text) = reply::error_text(&exec_reply) {
            let first_queue_error = frames.iter().skip(1).find_map(reply::error_text);
            return Ok(TransactionOutcome::Discarded(match first_queue_error {
                Some(cause) => format!("{text} First error: {cause}"),
                None => text,
            }));
        }
        match exec_reply {
            Frame::Array { data, .. } => Ok(TransactionOutcome::Executed(data)),
            _ => Ok(TransactionOutcome::Discarded(
                "EXECABORT Transaction discarded".to_string(),
            )),
        }
    }

    /// `PING` on a shared connection, for readiness probes.
    pub async fn ping(&self) -> Result<(), BackendError> {
        let frame = self.execute(vec![Bytes::from_static(b"PING")]).await?;
        match reply::error_text(&frame) {
            Some(text) => Err(BackendError::Unavailable(text)),
            None => Ok(()),
        }
    }

    /// Closes every connection.
    pub async fn shutdown(&self) {
        if let Some(mux) = &self.mux {
            mux.shutdown();
        }
        let _ = self.shared.quit().await;
        if let Some(asks) = &self.asks {
            asks.shutdown().await;
        }
        for client in self.transactions.clients() {
            let _ = client.lock().await.quit().await;
        }
    }

    fn map_error(&self, error: FredError) -> BackendError {
        match error.kind() {
            ErrorKind::Timeout => BackendError::Timeout(self.command_timeout.as_millis()),
            _ => BackendError::Unavailable(error.details().to_string()),
        }
    }
}

impl Backend {
    /// fred's form of one command: name with its cluster hashing, arguments, options.
    fn to_custom(&self, args: Vec<Bytes>, target: &Target) -> Prepared {
        let mut args = args.into_iter();
        let name = args
            .next()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .unwrap_or_default();
        let (hash, node) = match target {
            Target::Default => (ClusterHash::FirstKey, None),
            Target::AnyNode => (ClusterHash::Random, None),
            Target::Slot(slot) | Target::Replica(slot) => (ClusterHash::Custom(*slot), None),
            Target::Node(node) => (ClusterHash::Random, Some(node.0.clone())),
        };
        let mut options = self.options.clone();
        options.cluster_node = node;
        Prepared {
            command: CustomCommand::new(name, hash, false),
            args: args.map(Value::Bytes).collect(),
            options,
            replica: matches!(target, Target::Replica(_)),
        }
    }
}

/// A command in fred's terms.
#[derive(Clone)]
struct Prepared {
    command: CustomCommand,
    args: Vec<Value>,
    options: Options,
    /// Send to a replica of the slot's primary.
    replica: bool,
}

impl Prepared {
    /// The hash slot the command was routed by, when restash computed it.
    fn slot(&self) -> Option<u16> {
        match self.command.cluster_hash {
            ClusterHash::Custom(slot) => Some(slot),
            _ => None,
        }
    }
}

async fn send_one<C: ClientLike>(client: &C, prepared: Prepared) -> Result<Frame, FredError> {
    let client = client.with_options(&prepared.options);
    if prepared.replica {
        client
            .replicas()
            .custom_raw(prepared.command, prepared.args)
            .await
    } else {
        client.custom_raw(prepared.command, prepared.args).await
    }
}

/// Sends `batch` (`MULTI`, the commands, `EXEC`) on `client`, a connection held
/// for it, again when the cluster redirected a command (Redis then discards the
/// transaction: nothing ran, and fred has read the slot map again), and after
/// `ASKING` to the node `slot` is being migrated to when it is redirected again.
async fn run_transaction(
    client: &Client,
    asks: Option<&AskFollower>,
    batch: Vec<Prepared>,
    slot: Option<u16>,
) -> Result<Vec<Result<Frame, FredError>>, FredError> {
    let mut tries = 0;
    loop {
        let followed = match (tries >= ask::ASK_AFTER_TRIES, asks, slot) {
            (true, Some(asks), Some(slot)) => {
                asks.follow(client, slot, batch.clone(), Batch::Transaction)
                    .await
            }
            _ => None,
        };
        // An `ASK`ed transaction ran on another connection than `client`.
        let on_client = followed.is_none();
        let results = match followed {
            Some(results) => results,
            None => send_transaction(client, pinned_to_one_node(client, &batch)).await,
        };
        if !results.iter().any(ask::is_redirected) {
            if !on_client || in_step(client, &results, batch.len()).await {
                return Ok(results);
            }
            return Err(FredError::new(
                ErrorKind::IO,
                "the transaction's connection was out of step with Redis and was replaced; \
                 the transaction may or may not have run",
            ));
        }
        if tries == REDIRECT_RETRIES {
            return Err(redirected_too_often(tries));
        }
        crate::metrics::record_redirect("retried");
        tries += 1;
    }
}

/// Whether `results`, the replies to a transaction of `sent` commands (`MULTI` and
/// `EXEC` included) on `client`, are its own; `client`'s connection is replaced
/// when it may be out of step. A command that got no reply in time may never be
/// written at all (fred skips what timed out while queued, `EXEC` or `DISCARD`
/// included), which would leave the connection inside `MULTI` for its next user:
/// that user's `MULTI` would fail and its commands join the old transaction, whose
/// replies it would get. So after any failure without a reply, a `MULTI` not
/// answered `OK`, or an `EXEC` whose replies do not match the commands, the
/// connection is closed and opened again (Redis drops a closed connection's
/// transaction). `false` only when every command was answered but the answers are
/// not this transaction's.
async fn in_step(client: &Client, results: &[Result<Frame, FredError>], sent: usize) -> bool {
    let multi_ok = matches!(
        results.first(),
        Some(Ok(Frame::SimpleString { data, .. })) if &data[..] == b"OK"
    );
    let exec_matches = match results.last() {
        Some(Ok(Frame::Array { data, .. })) => data.len() + 2 == sent,
        Some(Ok(other)) => reply::error_text(other).is_some(),
        _ => false,
    };
    let all_replied = results.iter().all(Result::is_ok);
    if multi_ok && exec_matches && all_replied {
        return true;
    }
    tracing::warn!(
        multi_ok,
        exec_matches,
        all_replied,
        "a transaction's connection may be out of step with Redis: reconnecting it"
    );
    let limit = client.connection_config().connection_timeout + Duration::from_secs(1);
    if tokio::time::timeout(limit, client.force_reconnection())
        .await
        .is_err()
    {
        tracing::warn!("reconnecting a transaction's connection took too long");
    }
    // A failure without a reply reaches the caller as that failure.
    !all_replied || (multi_ok && exec_matches)
}

/// Most commands handed to `client` at once: [`PIPELINE_CHUNK`], and less than half
/// of its command buffer, which refuses at once what does not fit.
fn chunk_size<C: ClientLike>(client: &C) -> usize {
    chunk_size_for(client.connection_config().max_command_buffer_len)
}

/// [`chunk_size`] for a command buffer of `command_buffer`.
fn chunk_size_for(command_buffer: usize) -> usize {
    PIPELINE_CHUNK.min(command_buffer / 2).max(1)
}

/// `batch` with every command pinned to the node its first one (`MULTI`) goes to
/// by `client`'s slot map now, on a cluster: `MULTI`, the commands, `EXEC` or
/// `DISCARD` must all reach one node, and fred reads the slot map again, after a
/// `MOVED`, while they are on their way.
fn pinned_to_one_node(client: &Client, batch: &[Prepared]) -> Vec<Prepared> {
    let mut batch = batch.to_vec();
    let node = client.cached_cluster_state().and_then(|state| {
        let first = batch.first()?;
        match (&first.options.cluster_node, &first.command.cluster_hash) {
            (Some(node), _) => Some(node.clone()),
            (None, ClusterHash::Custom(slot)) => state.get_server(*slot).cloned(),
            (None, _) => state.random_node().cloned(),
        }
    });
    if let Some(node) = node {
        for prepared in &mut batch {
            prepared.options.cluster_node = Some(node.clone());
        }
    }
    batch
}

/// What a batch sent after `ASKING` is.
#[derive(Clone, Copy)]
enum Batch {
    /// Commands, each on its own.
    Commands,
    /// `MULTI`, commands and `EXEC` (see [`send_transaction`]).
    Transaction,
}

/// How many times a command the cluster redirected (`MOVED`, `ASK`) is sent again.
pub const REDIRECT_RETRIES: usize = 3;

/// [`send_one`], sending the command again when the cluster redirected it: fred has
/// read the slot map again by then (after `MOVED`), so the next try reaches the
/// slot's new owner. Redirected again, the slot is being migrated: the command goes
/// to the importing node after `ASKING` (see [`ask`]). Redis runs no redirected
/// command, so nothing runs twice.
async fn send_following_redirects<C: ClientLike>(
    client: &C,
    prepared: Prepared,
    asks: Option<&AskFollower>,
) -> Result<Frame, FredError> {
    let mut tries = 0;
    loop {
        let followed = match (tries >= ask::ASK_AFTER_TRIES, asks, prepared.slot()) {
            (true, Some(asks), Some(slot)) => {
                asks.follow(client, slot, vec![prepared.clone()], Batch::Commands)
                    .await
            }
            _ => None,
        };
        let result = match followed {
            Some(replies) => replies.into_iter().next().unwrap_or_else(|| {
                Err(FredError::new(ErrorKind::Unknown, "no reply after ASKING"))
            }),
            None => send_one(client, prepared.clone()).await,
        };
        if !ask::is_redirected(&result) {
            return result;
        }
        if tries == REDIRECT_RETRIES {
            return Err(redirected_too_often(tries));
        }
        crate::metrics::record_redirect("retried");
        tries += 1;
    }
}

/// The error for a command the cluster redirected on every try.
fn redirected_too_often(tries: usize) -> FredError {
    FredError::new(
        ErrorKind::Routing,
        format!(
            "the cluster redirected the command {} times (is its hash slot being \
             migrated?); try again",
            tries + 1
        ),
    )
}

/// The options of every command restash sends through fred: one attempt, and an
/// error at once while disconnected (never replayed).
fn single_attempt() -> Options {
    Options {
        max_attempts: Some(1),
        fail_fast: true,
        ..Options::default()
    }
}

/// fred's report of a `MOVED` or `ASK` it did not follow (`max_redirections = 0`).
pub(crate) fn is_redirect(error: &FredError) -> bool {
    *error.kind() == ErrorKind::Routing && error.details().starts_with("Too many redirections")
}

/// [`send_in_order`] for commands outside a transaction: each redirected command
/// is sent again on its own, after the others.
async fn send_in_order_following_redirects<C: ClientLike>(
    client: &C,
    commands: Vec<Prepared>,
    asks: Option<&AskFollower>,
) -> Vec<Result<Frame, FredError>> {
    let futures = commands
        .into_iter()
        .map(|prepared| send_following_redirects(client, prepared, asks));
    futures::future::join_all(futures).await
}

/// Hands commands to fred in order, in chunks: every command of a chunk before
/// awaiting any of its replies (each `custom_raw` enqueues its command synchronously
/// on its first poll, and `join_all` polls in order). A chunk holds at most
/// [`PIPELINE_CHUNK`] commands and less than half of fred's command buffer, which
/// refuses at once what does not fit. fred's command future is about 8 KB: a
/// transaction of 65,000 commands handed over at once took a gigabyte.
///
/// Callers hold the connection for the whole batch (a transaction's, or `ASKING`
/// and what follows it), so chunks change nothing Redis sees. When fred fails a
/// command (no reply from Redis: redirected, timed out, disconnected, refused),
/// nothing after its chunk is sent; those commands get that error.
async fn send_in_order<C: ClientLike>(
    client: &C,
    commands: Vec<Prepared>,
) -> Vec<Result<Frame, FredError>> {
    let chunk_size = chunk_size(client);
    let mut results = Vec::with_capacity(commands.len());
    let mut commands = commands.into_iter().peekable();
    while commands.peek().is_some() {
        let chunk_start = results.len();
        let chunk = commands
            .by_ref()
            .take(chunk_size)
            .map(|prepared| send_one(client, prepared));
        results.extend(futures::future::join_all(chunk).await);
        let failed = results[chunk_start..].iter().find_map(|r| r.as_ref().err());
        if let Some(error) = failed.cloned() {
            results.extend(commands.map(|_| Err(unsent(&error))));
            break;
        }
    }
    results
}

/// [`send_in_order`] for a transaction: `commands` is `MULTI` (after an optional
/// `ASKING`), the commands and `EXEC`. One of a chunk goes whole, in one round
/// trip: what fails in it (a timeout, a dropped connection) fails `EXEC` too, and a
/// redirected command makes Redis discard it. A longer one ends with its `EXEC`
/// sent on its own, once every command before it has its reply (`QUEUED`, or a
/// queue-time error reply, which makes Redis discard it): Redis never runs a
/// transaction with a command missing. Otherwise `DISCARD` is sent in its place,
/// so that the connection's next user does not find it inside `MULTI`.
async fn send_transaction<C: ClientLike>(
    client: &C,
    mut commands: Vec<Prepared>,
) -> Vec<Result<Frame, FredError>> {
    if commands.len() <= chunk_size(client) {
        return send_in_order(client, commands).await;
    }
    let Some(exec) = commands.pop() else {
        return Vec::new();
    };
    let mut results = send_in_order(client, commands).await;
    match results.iter().find_map(|r| r.as_ref().err()).cloned() {
        None => results.push(send_one(client, exec).await),
        Some(error) => {
            let mut discard = exec;
            discard.command.cmd = "DISCARD".into();
            if let Err(error) = send_one(client, discard).await {
                // On a closed connection Redis dropped the transaction; on a slow
                // one, DISCARD is ahead of anything sent later.
                tracing::debug!(%error, "DISCARD after a failed transaction got no answer");
            }
            results.push(Err(unsent(&error)));
        }
    }
    results
}

/// The error of a command not sent because `error` failed one before it.
fn unsent(error: &FredError) -> FredError {
    let text = format!("not sent: an earlier command failed: {}", error.details());
    FredError::new(error.kind().clone(), text)
}
