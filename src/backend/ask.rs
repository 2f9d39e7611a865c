//! Following a cluster's `ASK` redirect.
//!
//! While a hash slot is being migrated (`CLUSTER SETSLOT … MIGRATING` on its owner,
//! `… IMPORTING` on the node receiving it), the owner answers `ASK <slot> <node>` for
//! a key it no longer holds (already moved, or new), and the command must reach the
//! importing node directly after `ASKING`, on the same connection. On a shared
//! connection another caller's command could come between the two and be accepted by
//! the importing node in its place (a read of a key that has not moved yet would find
//! nothing), so restash sends the pair on a connection of its own to that node, one
//! pair at a time. The importing node may own no slot yet (a node added for the
//! migration), so these connections are separate from the cluster client's.
//!
//! fred follows no redirect itself (see the parent module) and does not say whether it
//! saw `MOVED` or `ASK`, nor where to. A command that is redirected again after fred
//! has read the slot map ([`ASK_AFTER_TRIES`]) is not `MOVED` any more: restash then
//! asks the slot's owner (`CLUSTER NODES`) whether it is migrating the slot, and to which
//! node, and remembers the answer for [`TARGET_TTL`] (forgotten at once when that node
//! redirects too).
//!
//! Replicas know nothing of a migration: with `RESTASH_READ_FROM_REPLICAS`, a read of a
//! key that has moved already finds nothing on the old owner's replica, and no `ASK`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::ClientLike;
use fred::types::config::{Server, ServerConfig};
use fred::types::{Builder, ClusterHash, CustomCommand, Value};
use tokio::sync::Mutex;

use super::{
    is_redirect, send_in_order, send_one, send_transaction, single_attempt, Batch, Prepared,
};
use crate::protocol::reply::Frame;

/// Where the owner of `slot` is moving it: the importing node's `(host, port)`, read
/// from the owner's own `CLUSTER NODES` line (`[<slot>->-<node id>]`).
pub(crate) fn migration_target(cluster_nodes: &str, slot: u16) -> Option<(String, u16)> {
    fn fields(line: &str) -> Vec<&str> {
        line.split(' ').collect()
    }
    let myself = cluster_nodes
        .lines()
        .map(fields)
        .find(|f| f.len() > 2 && f[2].split(',').any(|flag| flag == "myself"))?;
    let marker = format!("[{slot}->-");
    let target_id = myself
        .iter()
        .skip(8)
        .find_map(|field| field.strip_prefix(marker.as_str())?.strip_suffix(']'))?;
    let target = cluster_nodes
        .lines()
        .map(fields)
        .find(|f| f.len() > 1 && f[0] == target_id)?;
    // `ip:port@cport[,hostname]`
    let address = target[1].split(['@', ',']).next()?;
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok().filter(|port| *port != 0)?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Tries of a command redirected before restash looks for a migration: the first
/// redirect may be a `MOVED`, which the slot map fred reads again settles.
pub(crate) const ASK_AFTER_TRIES: usize = 2;

/// How long the importing node of a slot is remembered.
pub(crate) const TARGET_TTL: Duration = Duration::from_secs(1);

/// How long a failed connection to an importing node is remembered: commands for it
/// fail at once with that error instead of each waiting out the connect timeout.
pub(crate) const RETRY_CONNECT_AFTER: Duration = Duration::from_secs(1);

/// Whether a reply is a cluster redirect (`MOVED` or `ASK`) that a plain connection
/// passed through as an error reply.
pub(crate) fn is_redirect_reply(frame: &Frame) -> bool {
    let text: &[u8] = match frame {
        Frame::SimpleError { data, .. } => data.as_bytes(),
        Frame::BlobError { data, .. } => data,
        _ => return false,
    };
    text.starts_with(b"MOVED ") || text.starts_with(b"ASK ")
}

/// Connections of restash's own to importing nodes, opened on first `ASK` and kept.
pub(crate) struct AskFollower {
    /// The cluster's settings (credentials, TLS, timeouts, reconnection); each
    /// connection replaces the server.
    builder: Builder,
    connect_timeout: Duration,
    /// One connection per importing node (`host:port`), opened on first need and
    /// used by one pair at a time (fred reconnects it when it drops).
    nodes: SyncMutex<HashMap<String, Arc<Mutex<Option<Client>>>>>,
    /// Importing nodes that could not be reached lately.
    unreachable: Unreachable,
    /// Slots being migrated: where to, and when that was read.
    targets: SyncMutex<HashMap<u16, Remembered>>,
}

/// Importing nodes restash could not reach lately (no connection, or one that
/// stopped answering): for [`RETRY_CONNECT_AFTER`], commands for them fail at once
/// with that reason instead of each waiting out a timeout again.
#[derive(Default)]
pub(crate) struct Unreachable(SyncMutex<HashMap<String, (Instant, String)>>);

impl Unreachable {
    /// A connection of its own to `host:port` (see [`connect_node`]), unless the
    /// node failed lately; a failure to connect is remembered.
    pub(crate) async fn connect(
        &self,
        builder: &Builder,
        host: &str,
        port: u16,
        connect_timeout: Duration,
    ) -> Result<Client, FredError> {
        self.check(host, port)?;
        connect_node(builder, host, port, connect_timeout)
            .await
            .inspect_err(|error| {
                tracing::warn!(%host, port, %error, "no connection to the node a slot is being migrated to");
                self.record(host, port, error.details().to_string());
            })
    }

    /// The failure of `host:port` as an error, if it is recent.
    fn check(&self, host: &str, port: u16) -> Result<(), FredError> {
        let failed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match failed.get(&format!("{host}:{port}")) {
            Some((at, reason)) if at.elapsed() < RETRY_CONNECT_AFTER => Err(FredError::new(
                ErrorKind::IO,
                format!(
                    "{reason} ({} ms ago; tried again after {} ms)",
                    at.elapsed().as_millis(),
                    RETRY_CONNECT_AFTER.as_millis()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Remembers that `host:port` stopped answering: `error`, a command's.
    pub(crate) fn record_silence(&self, host: &str, port: u16, error: &FredError) {
        tracing::warn!(%host, port, %error, "the node a slot is being migrated to stopped answering");
        let reason = format!("{host}:{port} stopped answering: {}", error.details());
        self.record(host, port, reason);
    }

    /// Remembers that `host:port` failed, for `reason`.
    fn record(&self, host: &str, port: u16, reason: String) {
        let mut failed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        failed.retain(|_, (at, _)| at.elapsed() < RETRY_CONNECT_AFTER);
        failed.insert(format!("{host}:{port}"), (Instant::now(), reason));
    }
}

/// The importing node of a slot, `(host, port)`, and when the owner named it.
struct Remembered {
    node: (String, u16),
    read: Instant,
}

impl AskFollower {
    /// Follows `ASK` for the cluster `builder` connects to (`None` for other deployments).
    pub(crate) fn for_cluster(builder: &Builder, connect_timeout: Duration) -> Option<Self> {
        let config = builder.get_config()?;
        matches!(config.server, ServerConfig::Clustered { .. }).then(|| AskFollower {
            builder: builder.clone(),
            connect_timeout,
            nodes: SyncMutex::new(HashMap::new()),
            unreachable: Unreachable::default(),
            targets: SyncMutex::new(HashMap::new()),
        })
    }

    /// Sends `commands` (all for `slot`, a `batch` of that kind) to the node `slot` is
    /// being migrated to, after `ASKING`, and returns their replies; `None` when
    /// `slot`'s owner (asked through `client`) is not migrating it.
    pub(crate) async fn follow<C: ClientLike>(
        &self,
        client: &C,
        slot: u16,
        commands: Vec<Prepared>,
        batch: Batch,
    ) -> Option<Vec<Result<Frame, FredError>>> {
        let (host, port) = match self.remembered(slot) {
            Some(target) => target,
            None => {
                let target = importing_node(client, slot).await?;
                let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
                targets.retain(|_, remembered| remembered.read.elapsed() < TARGET_TTL);
                let read = Instant::now();
                targets.insert(
                    slot,
                    Remembered {
                        node: target.clone(),
                        read,
                    },
                );
                target
            }
        };
        crate::metrics::record_redirect("ask");
        let replies = self
            .send(&host, port, commands, batch)
            .await
            .unwrap_or_else(|error| vec![Err(error)]);
        if replies.iter().any(is_redirected) {
            // The migration ended or changed: ask the owner again next time.
            let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
            targets.remove(&slot);
        }
        Some(replies)
    }

    fn remembered(&self, slot: u16) -> Option<(String, u16)> {
        let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let remembered = targets.get(&slot)?;
        (remembered.read.elapsed() < TARGET_TTL).then(|| remembered.node.clone())
    }

    /// Sends `ASKING` and then `commands` (one command, or a whole `MULTI … EXEC`,
    /// as `kind` says: the `ASKING` flag lasts until `EXEC`) to `host:port` on
    /// restash's own connection to it, and returns the commands' replies.
    async fn send(
        &self,
        host: &str,
        port: u16,
        commands: Vec<Prepared>,
        kind: Batch,
    ) -> Result<Vec<Result<Frame, FredError>>, FredError> {
        let node = {
            let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            nodes.entry(format!("{host}:{port}")).or_default().clone()
        };
        // Held until the replies are in: one pair at a time on the connection.
        let mut link = node.lock().await;
        let client = self.client_for(&mut link, host, port).await?;
        let asking = Prepared {
            command: CustomCommand::new_static("ASKING", ClusterHash::Random, false),
            args: Vec::new(),
            options: single_attempt(),
            replica: false,
        };
        let batch = std::iter::once(asking)
            .chain(commands.into_iter().map(|mut prepared| {
                // One node: no routing.
                prepared.options.cluster_node = None;
                prepared.replica = false;
                prepared
            }))
            .collect();
        let replies = match kind {
            Batch::Commands => send_in_order(&client, batch).await,
            Batch::Transaction => send_transaction(&client, batch).await,
        };
        if let Some(Err(error)) = replies.first() {
            if matches!(error.kind(), ErrorKind::Timeout | ErrorKind::IO) {
                // A node that stopped answering: a new connection, but not at once.
                self.unreachable.record_silence(host, port, error);
                *link = None;
                tokio::spawn(async move {
                    let _ = client.quit().await;
                });
            }
        }
        let mut replies = replies.into_iter();
        match replies.next() {
            Some(Ok(frame)) => match crate::protocol::reply::error_text(&frame) {
                Some(text) => Err(asking_refused(host, port, &text)),
                None => Ok(replies.collect()),
            },
            Some(Err(error)) => Err(error),
            None => Ok(Vec::new()),
        }
    }

    /// The connection of `link` (to `host:port`), opened if need be (see
    /// [`Unreachable::connect`]).
    async fn client_for(
        &self,
        link: &mut Option<Client>,
        host: &str,
        port: u16,
    ) -> Result<Client, FredError> {
        if let Some(client) = link {
            return Ok(client.clone());
        }
        let client = self
            .unreachable
            .connect(&self.builder, host, port, self.connect_timeout)
            .await?;
        *link = Some(client.clone());
        Ok(client)
    }

    /// Closes every connection.
    pub(crate) async fn shutdown(&self) {
        let nodes: Vec<_> = {
            let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            nodes.values().cloned().collect()
        };
        for node in nodes {
            if let Some(client) = node.lock().await.take() {
                let _ = client.quit().await;
            }
        }
    }
}

/// The error for an `ASKING` that `host:port` answered with the error `text`.
pub(crate) fn asking_refused(host: &str, port: u16, text: &str) -> FredError {
    FredError::new(
        ErrorKind::Routing,
        format!("ASKING refused by {host}:{port}: {text}"),
    )
}

/// A connection of its own to the cluster node `host:port` (which may own no slot),
/// with the settings of the cluster `builder` connects to, within `connect_timeout`.
pub(crate) async fn connect_node(
    builder: &Builder,
    host: &str,
    port: u16,
    connect_timeout: Duration,
) -> Result<Client, FredError> {
    let client = builder
        .clone()
        .with_config(|config| {
            config.server = ServerConfig::Centralized {
                server: Server::new(host, port),
            }
        })
        .build()?;
    client.connect();
    match tokio::time::timeout(connect_timeout, client.wait_for_connect()).await {
        Ok(Ok(())) => Ok(client),
        Ok(Err(error)) => {
            let _ = client.quit().await;
            Err(error)
        }
        Err(_) => {
            let _ = client.quit().await;
            Err(FredError::new(
                ErrorKind::IO,
                format!("no connection to {host}:{port} within {connect_timeout:?}"),
            ))
        }
    }
}

/// Whether a reply says the cluster redirected the command: fred's report, or an
/// error reply a plain connection passed through.
pub(crate) fn is_redirected(result: &Result<Frame, FredError>) -> bool {
    match result {
        Ok(frame) => is_redirect_reply(frame),
        Err(error) => is_redirect(error),
    }
}

/// The node `slot`'s owner is migrating it to, by the owner's `CLUSTER NODES`.
pub(crate) async fn importing_node<C: ClientLike>(client: &C, slot: u16) -> Option<(String, u16)> {
    let prepared = Prepared {
        command: CustomCommand::new_static("CLUSTER", ClusterHash::Custom(slot), false),
        args: vec![Value::from_static_str("NODES")],
        options: single_attempt(),
        replica: false,
    };
    let text = match send_one(client, prepared).await {
        Ok(Frame::BlobString { data, .. } | Frame::VerbatimString { data, .. }) => data,
        Ok(other) => {
            let text = crate::protocol::reply::error_text(&other).unwrap_or_default();
            tracing::warn!(slot, %text, "CLUSTER NODES did not answer with the node list: cannot follow ASK");
            return None;
        }
        Err(error) => {
            tracing::warn!(slot, %error, "CLUSTER NODES failed: cannot follow ASK");
            return None;
        }
    };
    let target = migration_target(&String::from_utf8_lossy(&text), slot);
    if target.is_none() {
        tracing::debug!(slot, "redirected, but the slot's owner is not migrating it");
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [93->-292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f] [77-<-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
";

    #[test]
    fn the_owner_names_the_node_it_migrates_a_slot_to() {
        assert_eq!(
            migration_target(NODES, 93),
            Some(("127.0.0.1".to_string(), 30003))
        );
        // Importing, not migrating; and a slot nobody moves.
        assert_eq!(migration_target(NODES, 77), None);
        assert_eq!(migration_target(NODES, 94), None);
        assert_eq!(migration_target(NODES, 9), None);
    }

    #[test]
    fn addresses_with_hostnames_ipv6_or_no_port_are_read_or_refused() {
        let with = |address: &str| {
            format!(
                "a {address} myself,master - 0 0 1 connected 0-5460 [5->-b]\n\
                 b HOST master - 0 0 2 connected 5461-16383\n"
            )
        };
        let target = |address: &str| migration_target(&with("x:1@2").replace("HOST", address), 5);
        assert_eq!(
            target("10.0.0.2:7001@17001,redis-b"),
            Some(("10.0.0.2".into(), 7001))
        );
        assert_eq!(target("::1:7001@17001"), Some(("::1".into(), 7001)));
        // A node whose address is not known yet.
        assert_eq!(target(":0@0"), None);
        assert_eq!(target(":7001@17001"), None);
        assert_eq!(target("garbage"), None);
        assert_eq!(migration_target("", 5), None);
    }

    #[test]
    fn redirect_replies_are_told_from_other_errors() {
        let error = |text: &str| Frame::SimpleError {
            data: text.into(),
            attributes: None,
        };
        assert!(is_redirect_reply(&error("MOVED 93 127.0.0.1:30003")));
        assert!(is_redirect_reply(&error("ASK 93 127.0.0.1:30003")));
        assert!(!is_redirect_reply(&error(
            "TRYAGAIN Multiple keys request during rehashing of slot"
        )));
        assert!(!is_redirect_reply(&Frame::SimpleString {
            data: "MOVED 1 x:1".into(),
            attributes: None,
        }));
    }
}
