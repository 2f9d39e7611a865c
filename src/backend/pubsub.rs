//! Pub/Sub and MONITOR for the Server-Sent Events endpoints.
//!
//! - [`PubSubHub::subscribe`]: thousands of streams share a few subscriber
//!   connections ([`shard`]); each channel or pattern is subscribed in Redis once,
//!   reference-counted, and unsubscribed when its last stream leaves;
//! - sharded channels (`SSUBSCRIBE`) share those connections on one node or behind
//!   Sentinel; on a cluster each goes to the link of the primary that owns its hash
//!   slot, one link per primary ([`sharded`]);
//! - [`PubSubHub::monitor`]: one dedicated connection per stream, at most
//!   `max_monitors` at once ([`monitor`]);
//! - every stream has a bounded buffer: a reader that falls `buffer` events or
//!   `buffer_bytes` bytes behind is cut off ([`Delivery::Overflow`]) instead of
//!   growing memory;
//! - the connections are raw RESP2 links ([`link`], [`resp`]) opened only while a
//!   stream needs them, so an idle restash holds none.

mod link;
mod monitor;
mod resp;
mod shard;
mod sharded;
mod slots;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

pub use monitor::MonitorStream;
pub use shard::Subscription;

use self::link::Endpoint;
use self::shard::{Recovery, Shard, Timing, TopicKey};
use self::sharded::ClusterLinks;
use super::BackendError;

/// Settings of the Pub/Sub hub.
#[derive(Debug, Clone)]
pub struct PubSubSettings {
    /// `REDIS_URL`.
    pub url: String,
    /// Subscriber connections topics are spread over.
    pub connections: usize,
    /// Events buffered per stream before a slow reader is cut off.
    pub buffer: usize,
    /// Bytes of event data buffered per stream before a slow reader is cut off.
    pub buffer_bytes: usize,
    /// Concurrent MONITOR streams.
    pub max_monitors: usize,
    /// Heartbeat interval of idle streams.
    pub keepalive: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for Redis to confirm a command.
    pub command_timeout: Duration,
    /// Cap of the delay between reconnection attempts.
    pub reconnect_max_delay: Duration,
    /// `RESTASH_REDIS_TLS_CA_FILE`: the CA that `rediss://` servers are checked
    /// against, as for every other connection.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl PubSubSettings {
    /// The settings restash runs with.
    pub fn from_config(config: &crate::config::Config) -> Self {
        PubSubSettings {
            url: config.redis_url.clone(),
            connections: config.pubsub_connections,
            buffer: config.sse_buffer,
            buffer_bytes: config.sse_buffer_bytes,
            max_monitors: config.monitor_max_streams,
            keepalive: config.sse_keepalive,
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
            reconnect_max_delay: config.reconnect_max_delay,
            tls_ca_file: config.redis_tls_ca_file.clone(),
        }
    }
}

/// What a stream subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// `SUBSCRIBE channel`.
    Channel,
    /// `PSUBSCRIBE pattern`.
    Pattern,
    /// `SSUBSCRIBE channel` (sharded Pub/Sub, `SPUBLISH`).
    Shard,
}

/// Why a stream could not start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    /// Redis is unreachable or did not confirm in time (503).
    #[error("ERR Redis is unavailable: {0}")]
    Unavailable(String),
    /// Redis refused the command; its text (400).
    #[error("{0}")]
    Redis(String),
    /// The MONITOR limit is reached (503).
    #[error("ERR too many MONITOR streams: at most {0} at once")]
    TooManyMonitors(usize),
    /// restash is shutting down (503).
    #[error("ERR restash is shutting down")]
    ShuttingDown,
}

/// What a stream gets next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// One event's data line, e.g. `message,chat,hello`.
    Event(Arc<str>),
    /// The reader fell too far behind and was cut off.
    Overflow,
    /// The connection to Redis ended the stream.
    Lost,
    /// Redis ended a sharded subscription: the channel's hash slot left its node.
    Unsubscribed,
}

const OPEN: u8 = 0;
const OVERFLOW: u8 = 1;
const UNSUBSCRIBED: u8 = 2;

/// How much one stream may hold before a slow reader is cut off.
#[derive(Debug, Clone, Copy)]
pub struct BufferLimits {
    /// Events.
    pub events: usize,
    /// Bytes of event data: a stream holding this much takes no more (one holding
    /// less takes the next event whatever its size).
    pub bytes: usize,
}

/// A stream's buffer: the sending half (the connection task's) and the receiving
/// half (the stream's).
fn stream_buffer(limits: BufferLimits) -> (Outbox, Inbox) {
    let (sender, receiver) = mpsc::channel(limits.events.max(1));
    let end = Arc::new(AtomicU8::new(OPEN));
    let held = Arc::new(AtomicUsize::new(0));
    let outbox = Outbox {
        sender,
        end: end.clone(),
        held: held.clone(),
        max_bytes: limits.bytes,
    };
    (
        outbox,
        Inbox {
            receiver,
            end,
            held,
        },
    )
}

/// The sending half of a stream's buffer.
struct Outbox {
    sender: mpsc::Sender<Arc<str>>,
    end: Arc<AtomicU8>,
    /// Bytes sent and not yet taken by the stream.
    held: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// What became of an event offered to a stream.
enum Offer {
    /// Buffered.
    Taken,
    /// The stream fell too far behind: it is marked cut off.
    Overflow,
    /// The stream is gone.
    Closed,
}

impl Outbox {
    /// Buffers `event` unless the stream is too far behind (then marks it cut off).
    fn offer(&self, event: &Arc<str>) -> Offer {
        let size = event.len();
        // Counted before sending, so that the stream never takes back more than was
        // counted; given back when the event is not sent.
        let before = self.held.fetch_add(size, Ordering::AcqRel);
        // Cut off only a stream that already holds the limit: one that holds less
        // takes the event (memory stays under the limit plus one event), so that
        // frames fanned out back to back do not cut off a reader that keeps up.
        if before >= self.max_bytes {
            self.held.fetch_sub(size, Ordering::AcqRel);
            Inbox::mark_overflow(&self.end);
            return Offer::Overflow;
        }
        match self.sender.try_send(event.clone()) {
            Ok(()) => Offer::Taken,
            Err(error) => {
                self.held.fetch_sub(size, Ordering::AcqRel);
                match error {
                    mpsc::error::TrySendError::Full(_) => {
                        Inbox::mark_overflow(&self.end);
                        Offer::Overflow
                    }
                    mpsc::error::TrySendError::Closed(_) => Offer::Closed,
                }
            }
        }
    }

    /// Whether the stream has gone away.
    async fn closed(&self) {
        self.sender.closed().await
    }
}

/// The receiving half of a stream's buffer, plus the flag that cuts it off.
struct Inbox {
    receiver: mpsc::Receiver<Arc<str>>,
    end: Arc<AtomicU8>,
    held: Arc<AtomicUsize>,
}

impl Inbox {
    fn mark_overflow(end: &AtomicU8) {
        end.store(OVERFLOW, Ordering::Release);
    }

    /// Set before the sender is dropped, so the stream first reads what it buffers.
    fn mark_unsubscribed(end: &AtomicU8) {
        end.store(UNSUBSCRIBED, Ordering::Release);
    }

    /// An overflowed stream ends at once, without draining what it still buffers.
    async fn next(&mut self) -> Delivery {
        if self.end.load(Ordering::Acquire) == OVERFLOW {
            return Delivery::Overflow;
        }
        match self.receiver.recv().await {
            Some(_) if self.end.load(Ordering::Acquire) == OVERFLOW => Delivery::Overflow,
            Some(event) => {
                self.held.fetch_sub(event.len(), Ordering::AcqRel);
                Delivery::Event(event)
            }
            None => match self.end.load(Ordering::Acquire) {
                OVERFLOW => Delivery::Overflow,
                UNSUBSCRIBED => Delivery::Unsubscribed,
                _ => Delivery::Lost,
            },
        }
    }
}

/// Shared subscriber connections and MONITOR streams. Cheap to clone.
#[derive(Clone)]
pub struct PubSubHub {
    inner: Arc<Hub>,
}

struct Hub {
    shards: Vec<Shard>,
    /// Sharded channels on a cluster (`None` for other deployments).
    cluster: Option<ClusterLinks>,
    endpoint: Arc<Endpoint>,
    monitors: Arc<Semaphore>,
    settings: PubSubSettings,
    shutdown: CancellationToken,
}

impl PubSubHub {
    /// Parses the URL and starts the (idle) connection tasks; streams end when
    /// `shutdown` is cancelled.
    pub fn start(
        settings: PubSubSettings,
        shutdown: CancellationToken,
    ) -> Result<PubSubHub, BackendError> {
        let mut endpoint =
            Endpoint::from_url(&settings.url).map_err(|e| BackendError::Config(e.to_string()))?;
        if let Some(path) = &settings.tls_ca_file {
            endpoint.trust(crate::backend::tls::config_with_ca_file(path)?.connector);
        }
        let endpoint = Arc::new(endpoint);
        let limits = BufferLimits {
            events: settings.buffer,
            bytes: settings.buffer_bytes,
        };
        let timing = Timing {
            connect: settings.connect_timeout,
            reconnect_max: settings.reconnect_max_delay,
            probe_after: settings.keepalive,
            probe_reply: settings.command_timeout,
        };
        let shards = (0..settings.connections.max(1))
            .map(|_| {
                Shard::start(
                    endpoint.clone(),
                    "restash:pubsub",
                    Recovery::Resubscribe,
                    timing,
                    limits,
                    shutdown.clone(),
                )
            })
            .collect();
        let cluster = endpoint.cluster_seeds().map(|seeds| {
            ClusterLinks::new(
                endpoint.clone(),
                seeds.to_vec(),
                timing,
                settings.command_timeout,
                limits,
                shutdown.clone(),
            )
        });
        Ok(PubSubHub {
            inner: Arc::new(Hub {
                shards,
                cluster,
                endpoint,
                monitors: Arc::new(Semaphore::new(settings.max_monitors)),
                settings,
                shutdown,
            }),
        })
    }

    /// Joins the stream of `name`, once Redis has confirmed the subscription.
    pub async fn subscribe(
        &self,
        kind: TopicKind,
        name: Bytes,
    ) -> Result<Subscription, StreamError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(StreamError::ShuttingDown);
        }
        let settings = &self.inner.settings;
        let wait = settings.connect_timeout + settings.command_timeout;
        if let (TopicKind::Shard, Some(cluster)) = (kind, &self.inner.cluster) {
            return cluster.join(name, wait).await;
        }
        let key = TopicKey { kind, name };
        let shard = &self.inner.shards[shard_index(&key, self.inner.shards.len())];
        shard.join(key, wait).await
    }

    /// Starts a MONITOR stream on its own connection, if under the limit.
    pub async fn monitor(&self) -> Result<MonitorStream, StreamError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(StreamError::ShuttingDown);
        }
        let settings = &self.inner.settings;
        let permit = self
            .inner
            .monitors
            .clone()
            .try_acquire_owned()
            .map_err(|_| StreamError::TooManyMonitors(settings.max_monitors))?;
        monitor::start(
            &self.inner.endpoint,
            settings.connect_timeout,
            settings.command_timeout,
            BufferLimits {
                events: settings.buffer,
                bytes: settings.buffer_bytes,
            },
            permit,
            self.inner.shutdown.clone(),
        )
        .await
    }

    /// Heartbeat interval of idle streams.
    pub fn keepalive(&self) -> Duration {
        self.inner.settings.keepalive
    }

    /// Cancelled when restash shuts down: every stream then ends.
    pub fn closing(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}

/// Spreads topics over the subscriber connections (FNV-1a: stable, no allocation).
fn shard_index(key: &TopicKey, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let tag = [key.kind as u8];
    for byte in tag.iter().chain(key.name.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(text: &str) -> Arc<str> {
        Arc::from(text)
    }

    #[tokio::test]
    async fn buffers_are_bounded_in_events_and_bytes() {
        let limits = BufferLimits {
            events: 3,
            bytes: 10,
        };
        // A stream holding less than the limit takes the next event, however large.
        let (outbox, mut inbox) = stream_buffer(limits);
        assert!(matches!(outbox.offer(&event("12345")), Offer::Taken));
        assert!(matches!(outbox.offer(&event("123456789012")), Offer::Taken));
        assert!(matches!(outbox.offer(&event("x")), Offer::Overflow));
        assert_eq!(inbox.next().await, Delivery::Overflow);

        // Taking events gives their bytes back.
        let (outbox, mut inbox) = stream_buffer(limits);
        for _ in 0..5 {
            assert!(matches!(outbox.offer(&event("123456789")), Offer::Taken));
            assert_eq!(inbox.next().await, Delivery::Event(event("123456789")));
        }
        assert_eq!(inbox.held.load(Ordering::Acquire), 0);

        // The event count still bounds small events.
        let (outbox, _inbox) = stream_buffer(limits);
        for _ in 0..3 {
            assert!(matches!(outbox.offer(&event("a")), Offer::Taken));
        }
        assert!(matches!(outbox.offer(&event("a")), Offer::Overflow));

        // A stream that is gone.
        let (outbox, inbox) = stream_buffer(limits);
        drop(inbox);
        assert!(matches!(outbox.offer(&event("a")), Offer::Closed));
        assert_eq!(outbox.held.load(Ordering::Acquire), 0);
    }
}
