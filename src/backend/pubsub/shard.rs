//! One subscriber connection shared by many streams.
//!
//! The [`Table`] maps each channel or pattern to the streams that want it: the first
//! stream to want a topic makes the connection task send `SUBSCRIBE`, the last one to
//! leave makes it send `UNSUBSCRIBE` (and the connection closes when nothing is left).
//! Every table change that needs Redis is queued to the task *while the table is
//! locked*, so Redis sees the changes in the order the table made them.
//!
//! The task reads every frame, looks the topic up and hands the formatted event to
//! each stream's buffer, bounded in events and bytes: a stream that is too far behind
//! is cut off, so a slow reader never slows the connection or grows memory.
//!
//! A connection that has been silent for [`Timing::probe_after`] is sent a `PING`;
//! when nothing arrives within [`Timing::probe_reply`] it counts as broken, so a hung
//! server (or a peer gone behind a live TCP path) is found as a closed one is.
//!
//! A broken connection is reopened and every topic subscribed again
//! ([`Recovery::Resubscribe`]), except on a cluster node's sharded link
//! ([`Recovery::EndStreams`]): there the streams end, since the node may no longer own
//! their slots. Redis itself ends sharded subscriptions whose slot leaves the node (an
//! `sunsubscribe` nobody asked for): those streams end with [`Delivery::Unsubscribed`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::link::{Endpoint, Link, LinkError};
use super::resp::Reply;
use super::{stream_buffer, BufferLimits, Delivery, Inbox, Offer, Outbox, StreamError, TopicKind};

/// Most subscription changes written to Redis in one batch.
const CHANGE_BATCH: usize = 512;

/// A channel or a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicKey {
    /// Channel or pattern.
    pub kind: TopicKind,
    /// Its name, as Redis sees it.
    pub name: Bytes,
}

impl TopicKey {
    fn verb(&self, subscribe: bool) -> &'static [u8] {
        match (self.kind, subscribe) {
            (TopicKind::Channel, true) => b"SUBSCRIBE",
            (TopicKind::Channel, false) => b"UNSUBSCRIBE",
            (TopicKind::Pattern, true) => b"PSUBSCRIBE",
            (TopicKind::Pattern, false) => b"PUNSUBSCRIBE",
            (TopicKind::Shard, true) => b"SSUBSCRIBE",
            (TopicKind::Shard, false) => b"SUNSUBSCRIBE",
        }
    }
}

/// What a broken connection means for the streams on it.
#[derive(Debug, Clone)]
pub enum Recovery {
    /// Reconnect and subscribe again: one server serves every topic (plain Pub/Sub
    /// anywhere, sharded Pub/Sub on one node or behind Sentinel).
    Resubscribe,
    /// End every stream: the link serves one cluster node, whose slots may have
    /// moved. The flag is raised so the slot map is read again.
    EndStreams(Arc<AtomicBool>),
}

impl Recovery {
    /// Whether a broken link ends its streams (then the slot map is marked stale).
    fn ends_streams(&self) -> bool {
        match self {
            Recovery::Resubscribe => false,
            Recovery::EndStreams(stale) => {
                stale.store(true, Ordering::Release);
                true
            }
        }
    }
}

/// Connection timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Longest wait for a connection (and its handshake).
    pub connect: Duration,
    /// Cap of the delay between reconnection attempts.
    pub reconnect_max: Duration,
    /// A connection silent this long is sent a `PING`.
    pub probe_after: Duration,
    /// Longest wait for anything from Redis after that `PING`; then the connection
    /// counts as broken (a hung server, or a peer that vanished behind a live TCP path).
    pub probe_reply: Duration,
}

/// A subscriber connection and its topic table.
pub struct Shard {
    shared: Arc<Shared>,
    /// Stops the connection task.
    stop: CancellationToken,
}

struct Shared {
    table: Mutex<Table>,
    changes: mpsc::UnboundedSender<Change>,
    buffer: BufferLimits,
}

#[derive(Default)]
struct Table {
    topics: HashMap<TopicKey, Topic>,
    next_generation: u64,
    next_member: u64,
}

struct Topic {
    /// Tells this topic apart from an earlier one of the same name.
    generation: u64,
    /// Redis has confirmed the subscription.
    confirmed: bool,
    members: Vec<Member>,
    waiters: Vec<oneshot::Sender<Result<(), StreamError>>>,
}

struct Member {
    id: u64,
    outbox: Outbox,
}

/// A change Redis must learn about.
enum Change {
    Subscribe(TopicKey, u64),
    Unsubscribe(TopicKey),
}

/// The answer about one topic that the connection waits for.
struct Expect {
    key: TopicKey,
    subscribe: bool,
    generation: u64,
}

/// A reply the connection waits for, in order.
enum Awaited {
    /// The answer to (P|S)SUBSCRIBE or its un- form for one topic.
    Topic(Expect),
    /// The answer to a liveness `PING`: `pong`, `+PONG`, or an error (`-BUSY`).
    Ping,
}

impl Shard {
    /// Starts the connection task (it connects only while some stream needs it),
    /// naming its connections `name`; it stops with `shutdown` or [`Shard::stop`].
    pub fn start(
        endpoint: Arc<Endpoint>,
        name: &'static str,
        recovery: Recovery,
        timing: Timing,
        buffer: BufferLimits,
        shutdown: CancellationToken,
    ) -> Shard {
        let (changes, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            table: Mutex::new(Table::default()),
            changes,
            buffer,
        });
        let stop = shutdown.child_token();
        let link = LinkSettings {
            endpoint,
            name,
            recovery,
            timing,
        };
        tokio::spawn(run(shared.clone(), receiver, link, stop.clone()));
        Shard { shared, stop }
    }

    /// Adds a stream to `key`, subscribing in Redis if it is the first, and waits
    /// (at most `wait`) until Redis has confirmed the subscription.
    pub async fn join(&self, key: TopicKey, wait: Duration) -> Result<Subscription, StreamError> {
        self.enter(key).confirmed(wait).await
    }

    /// Whether no stream uses this connection.
    pub fn is_idle(&self) -> bool {
        self.shared.is_idle()
    }

    /// Stops the connection task; only for an idle shard that nothing will join again.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Adds a stream to `key` at once (subscribing in Redis if it is the first);
    /// [`Joining::confirmed`] waits for Redis.
    pub fn enter(&self, key: TopicKey) -> Joining {
        let (outbox, inbox) = stream_buffer(self.shared.buffer);
        let (id, waiter) = {
            let mut table = self.shared.lock();
            let id = table.next_member;
            table.next_member += 1;
            let generation = table.next_generation;
            let member = Member { id, outbox };
            let topic = match table.topics.get_mut(&key) {
                Some(topic) => topic,
                None => {
                    table.next_generation += 1;
                    let _ = self
                        .shared
                        .changes
                        .send(Change::Subscribe(key.clone(), generation));
                    table.topics.entry(key.clone()).or_insert(Topic {
                        generation,
                        confirmed: false,
                        members: Vec::new(),
                        waiters: Vec::new(),
                    })
                }
            };
            topic.members.push(member);
            let waiter = (!topic.confirmed).then(|| {
                let (tx, rx) = oneshot::channel();
                topic.waiters.push(tx);
                rx
            });
            (id, waiter)
        };
        Joining {
            subscription: Subscription {
                shared: self.shared.clone(),
                key,
                id,
                inbox,
            },
            waiter,
        }
    }
}

/// A stream added to a topic whose subscription Redis may not have confirmed yet.
pub struct Joining {
    subscription: Subscription,
    waiter: Option<oneshot::Receiver<Result<(), StreamError>>>,
}

impl Joining {
    /// Waits (at most `wait`) until Redis has confirmed the subscription.
    pub async fn confirmed(self, wait: Duration) -> Result<Subscription, StreamError> {
        let Joining {
            subscription,
            waiter,
        } = self;
        if let Some(waiter) = waiter {
            match tokio::time::timeout(wait, waiter).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => return Err(error),
                Ok(Err(_)) => {
                    return Err(StreamError::Unavailable(
                        "the subscription was dropped".into(),
                    ))
                }
                Err(_) => {
                    return Err(StreamError::Unavailable(format!(
                        "no subscription confirmation within {} ms",
                        wait.as_millis()
                    )))
                }
            }
        }
        Ok(subscription)
    }
}

/// One stream's membership of a topic; leaving is dropping it.
pub struct Subscription {
    shared: Arc<Shared>,
    key: TopicKey,
    id: u64,
    inbox: Inbox,
}

impl Subscription {
    /// The next event, or why the stream ends.
    pub async fn next(&mut self) -> Delivery {
        self.inbox.next().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.leave(&self.key, self.id);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_idle(&self) -> bool {
        self.lock().topics.is_empty()
    }

    fn leave(&self, key: &TopicKey, id: u64) {
        let mut table = self.lock();
        let Some(topic) = table.topics.get_mut(key) else {
            return;
        };
        topic.members.retain(|m| m.id != id);
        if topic.members.is_empty() {
            table.topics.remove(key);
            let _ = self.changes.send(Change::Unsubscribe(key.clone()));
        }
    }

    fn confirm(&self, key: &TopicKey, generation: u64) {
        let mut table = self.lock();
        if let Some(topic) = table.topics.get_mut(key) {
            if topic.generation == generation && !topic.confirmed {
                topic.confirmed = true;
                for waiter in topic.waiters.drain(..) {
                    let _ = waiter.send(Ok(()));
                }
            }
        }
    }

    /// Redis refused one subscription: its streams fail, the topic goes away.
    fn refuse(&self, key: &TopicKey, generation: u64, error: StreamError) {
        let mut table = self.lock();
        if table
            .topics
            .get(key)
            .is_some_and(|t| t.generation == generation)
        {
            if let Some(topic) = table.topics.remove(key) {
                for waiter in topic.waiters {
                    let _ = waiter.send(Err(error.clone()));
                }
            }
        }
    }

    /// The connection could not be opened: topics still waiting for their first
    /// confirmation fail at once (a fast 503) instead of waiting out their timeout.
    fn fail_pending(&self, error: &StreamError) {
        let mut table = self.lock();
        table.topics.retain(|_, topic| {
            if topic.confirmed {
                return true;
            }
            for waiter in topic.waiters.drain(..) {
                let _ = waiter.send(Err(error.clone()));
            }
            false
        });
    }

    /// Every topic to subscribe on a new connection. Queued changes are dropped
    /// under the same lock: the table already reflects them.
    fn snapshot(&self, changes: &mut mpsc::UnboundedReceiver<Change>) -> Vec<(TopicKey, u64)> {
        let table = self.lock();
        while changes.try_recv().is_ok() {}
        table
            .topics
            .iter()
            .map(|(key, topic)| (key.clone(), topic.generation))
            .collect()
    }

    /// Whether `change` still needs to reach Redis.
    fn is_current(&self, change: &Change) -> bool {
        let table = self.lock();
        match change {
            Change::Subscribe(key, generation) => table
                .topics
                .get(key)
                .is_some_and(|t| t.generation == *generation && !t.confirmed),
            // A newer topic of the same name re-subscribes right after; skip the gap.
            Change::Unsubscribe(key) => !table.topics.contains_key(key),
        }
    }

    /// Redis ended a confirmed subscription on its own (its slot left the node):
    /// its streams end with [`Delivery::Unsubscribed`] once they have read what
    /// they buffer.
    fn end_topic(&self, key: &TopicKey) {
        let mut table = self.lock();
        if !table.topics.get(key).is_some_and(|t| t.confirmed) {
            return;
        }
        if let Some(topic) = table.topics.remove(key) {
            for member in &topic.members {
                Inbox::mark_unsubscribed(&member.outbox.end);
            }
        }
    }

    /// The connection broke and its topics are not subscribed again: every stream
    /// ends ([`Delivery::Lost`]), every waiting one fails.
    fn end_all(&self, error: &StreamError) {
        let mut table = self.lock();
        for (_, topic) in table.topics.drain() {
            for waiter in topic.waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
    }

    /// Hands one published message to every stream of `key`.
    fn fan_out(&self, key: &TopicKey, render: impl FnOnce() -> String) {
        let mut table = self.lock();
        let Some(topic) = table.topics.get_mut(key) else {
            return;
        };
        let event: Arc<str> = render().into();
        topic
            .members
            .retain(|member| matches!(member.outbox.offer(&event), Offer::Taken));
        if topic.members.is_empty() {
            table.topics.remove(key);
            let _ = self.changes.send(Change::Unsubscribe(key.clone()));
        }
    }
}

enum SessionEnd {
    /// No topic left: the connection was closed on purpose.
    Idle,
    /// The connection broke.
    Broken(LinkError),
    /// Shutdown.
    Exit,
}

/// Where and how the connection task connects.
struct LinkSettings {
    endpoint: Arc<Endpoint>,
    name: &'static str,
    recovery: Recovery,
    timing: Timing,
}

async fn run(
    shared: Arc<Shared>,
    mut changes: mpsc::UnboundedReceiver<Change>,
    link: LinkSettings,
    shutdown: CancellationToken,
) {
    let LinkSettings {
        endpoint,
        name,
        recovery,
        timing,
    } = link;
    let first_delay = Duration::from_millis(50);
    let mut delay = first_delay;
    loop {
        if shared.is_idle() {
            // Nothing wanted: hold no connection until a stream arrives.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                change = changes.recv() => {
                    if change.is_none() {
                        return;
                    }
                    continue;
                }
            }
        }
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            link = Link::connect(&endpoint, name, timing.connect) => link,
        };
        match connected {
            Ok(link) => {
                delay = first_delay;
                match session(link, &shared, &mut changes, &shutdown, timing).await {
                    SessionEnd::Exit => return,
                    SessionEnd::Idle => {}
                    SessionEnd::Broken(error) if recovery.ends_streams() => {
                        tracing::warn!(%error, "sharded Pub/Sub link lost; ending its streams");
                        shared.end_all(&StreamError::Unavailable(error.to_string()));
                    }
                    SessionEnd::Broken(error) => {
                        tracing::warn!(%error, "Pub/Sub connection to Redis lost; reconnecting");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot open a Pub/Sub connection to Redis");
                recovery.ends_streams();
                shared.fail_pending(&StreamError::Unavailable(error.to_string()));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(timing.reconnect_max.max(first_delay));
            }
        }
    }
}

async fn session(
    mut link: Link,
    shared: &Shared,
    changes: &mut mpsc::UnboundedReceiver<Change>,
    shutdown: &CancellationToken,
    timing: Timing,
) -> SessionEnd {
    let mut expects = VecDeque::new();
    for (key, generation) in shared.snapshot(changes) {
        link.queue(&[key.verb(true), &key.name]);
        expects.push_back(Awaited::Topic(Expect {
            key,
            subscribe: true,
            generation,
        }));
    }
    if let Err(error) = flush_within(&mut link, timing.probe_reply).await {
        return SessionEnd::Broken(error);
    }
    // Liveness: the timer is moved only when it fires (not on every frame), to the
    // end of the silence that the last frame began, or to a PING's reply deadline.
    let mut last_heard = Instant::now();
    let mut probed = false;
    let probe = tokio::time::sleep_until(last_heard + timing.probe_after);
    tokio::pin!(probe);
    loop {
        if shared.is_idle() {
            // Closing the connection unsubscribes everything at once.
            return SessionEnd::Idle;
        }
        // Unbiased: a flood of messages must not starve new subscriptions, nor the reverse.
        tokio::select! {
            _ = shutdown.cancelled() => return SessionEnd::Exit,
            reply = link.read() => match reply {
                Ok(reply) => {
                    last_heard = Instant::now();
                    if probed {
                        probed = false;
                        probe.as_mut().reset(last_heard + timing.probe_after);
                    }
                    handle(reply, shared, &mut expects);
                }
                Err(error) => return SessionEnd::Broken(error),
            },
            _ = &mut probe => {
                if probed {
                    // A frame may have arrived while this task was busy: heard, then.
                    match link.read().now_or_never() {
                        Some(Ok(reply)) => {
                            last_heard = Instant::now();
                            probed = false;
                            probe.as_mut().reset(last_heard + timing.probe_after);
                            handle(reply, shared, &mut expects);
                            continue;
                        }
                        Some(Err(error)) => return SessionEnd::Broken(error),
                        None => {
                            return SessionEnd::Broken(LinkError::Timeout(
                                timing.probe_reply.as_millis(),
                            ))
                        }
                    }
                }
                let quiet_until = last_heard + timing.probe_after;
                if quiet_until > Instant::now() {
                    probe.as_mut().reset(quiet_until);
                    continue;
                }
                link.queue(&[b"PING"]);
                expects.push_back(Awaited::Ping);
                if let Err(error) = flush_within(&mut link, timing.probe_reply).await {
                    return SessionEnd::Broken(error);
                }
                probed = true;
                probe.as_mut().reset(Instant::now() + timing.probe_reply);
            }
            change = changes.recv() => {
                let Some(change) = change else {
                    return SessionEnd::Exit;
                };
                let mut batch = vec![change];
                while batch.len() < CHANGE_BATCH {
                    match changes.try_recv() {
                        Ok(change) => batch.push(change),
                        Err(_) => break,
                    }
                }
                for change in batch {
                    if !shared.is_current(&change) {
                        continue;
                    }
                    let expect = match change {
                        Change::Subscribe(key, generation) => Expect { key, subscribe: true, generation },
                        Change::Unsubscribe(key) => Expect { key, subscribe: false, generation: 0 },
                    };
                    link.queue(&[expect.key.verb(expect.subscribe), &expect.key.name]);
                    expects.push_back(Awaited::Topic(expect));
                }
                if let Err(error) = flush_within(&mut link, timing.probe_reply).await {
                    return SessionEnd::Broken(error);
                }
            }
        }
    }
}

/// Writes what the link has queued, within `limit`: a server that stopped reading
/// (its socket buffer full) must not hold the connection task for ever.
async fn flush_within(link: &mut Link, limit: Duration) -> Result<(), LinkError> {
    match tokio::time::timeout(limit, link.flush()).await {
        Ok(result) => result,
        Err(_) => Err(LinkError::Timeout(limit.as_millis())),
    }
}

/// Handles one frame from a subscribed connection.
fn handle(reply: Reply, shared: &Shared, expects: &mut VecDeque<Awaited>) {
    let items = match reply {
        Reply::Array(Some(items)) => items,
        Reply::Error(text) => {
            // Each command names one topic (or is a PING), so an error answers the
            // oldest one.
            if let Some(Awaited::Topic(expect)) = expects.pop_front() {
                if expect.subscribe {
                    let text = String::from_utf8_lossy(&text).into_owned();
                    shared.refuse(&expect.key, expect.generation, StreamError::Redis(text));
                }
            }
            return;
        }
        // `+PONG`: a PING answered on a connection with no subscription left.
        Reply::Simple(_) => {
            if matches!(expects.front(), Some(Awaited::Ping)) {
                expects.pop_front();
            }
            return;
        }
        _ => return,
    };
    let field = |i: usize| items.get(i).and_then(Reply::bytes);
    if field(0).is_some_and(|kind| kind.eq_ignore_ascii_case(b"pong")) {
        if matches!(expects.front(), Some(Awaited::Ping)) {
            expects.pop_front();
        }
        return;
    }
    let (Some(kind), Some(first)) = (field(0), field(1)) else {
        return;
    };
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    match kind.to_ascii_lowercase().as_slice() {
        b"message" => {
            let Some(payload) = field(2) else { return };
            let key = TopicKey {
                kind: TopicKind::Channel,
                name: first.clone(),
            };
            shared.fan_out(&key, || {
                format!("message,{},{}", text(first), text(payload))
            });
        }
        b"smessage" => {
            let Some(payload) = field(2) else { return };
            let key = TopicKey {
                kind: TopicKind::Shard,
                name: first.clone(),
            };
            shared.fan_out(&key, || {
                format!("smessage,{},{}", text(first), text(payload))
            });
        }
        b"pmessage" => {
            let (Some(channel), Some(payload)) = (field(2), field(3)) else {
                return;
            };
            let key = TopicKey {
                kind: TopicKind::Pattern,
                name: first.clone(),
            };
            shared.fan_out(&key, || {
                format!(
                    "pmessage,{},{},{}",
                    text(first),
                    text(channel),
                    text(payload)
                )
            });
        }
        verb => {
            let (kind, subscribe) = match verb {
                b"subscribe" => (TopicKind::Channel, true),
                b"unsubscribe" => (TopicKind::Channel, false),
                b"psubscribe" => (TopicKind::Pattern, true),
                b"punsubscribe" => (TopicKind::Pattern, false),
                b"ssubscribe" => (TopicKind::Shard, true),
                b"sunsubscribe" => (TopicKind::Shard, false),
                _ => return,
            };
            let matches = matches!(expects.front(), Some(Awaited::Topic(e))
                if e.subscribe == subscribe && e.key.kind == kind && e.key.name == first);
            if !matches {
                if kind == TopicKind::Shard && !subscribe {
                    // Not an answer: Redis dropped the subscription (slot moved).
                    shared.end_topic(&TopicKey {
                        kind,
                        name: first.clone(),
                    });
                }
                return;
            }
            if let Some(Awaited::Topic(expect)) = expects.pop_front() {
                if expect.subscribe {
                    shared.confirm(&expect.key, expect.generation);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            table: Mutex::new(Table::default()),
            changes: mpsc::unbounded_channel().0,
            buffer: BufferLimits {
                events: 1,
                bytes: 1,
            },
        }
    }

    fn subscribe(name: &'static str) -> Awaited {
        Awaited::Topic(Expect {
            key: TopicKey {
                kind: TopicKind::Channel,
                name: Bytes::from_static(name.as_bytes()),
            },
            subscribe: true,
            generation: 0,
        })
    }

    fn bulk(text: &'static str) -> Reply {
        Reply::Bulk(Some(Bytes::from_static(text.as_bytes())))
    }

    /// The answers to a liveness PING (an error such as `-BUSY`, a `pong` frame, or
    /// `+PONG`) take the PING's place in the queue, not the next subscription's.
    #[test]
    fn ping_answers_are_matched_to_the_ping() {
        let shared = shared();
        let mut expects = VecDeque::from([Awaited::Ping, subscribe("a")]);
        handle(
            Reply::Error(Bytes::from_static(b"BUSY Redis is busy")),
            &shared,
            &mut expects,
        );
        assert!(matches!(expects.front(), Some(Awaited::Topic(e)) if e.key.name == "a"));

        let mut expects = VecDeque::from([Awaited::Ping, subscribe("a")]);
        handle(
            Reply::Array(Some(vec![bulk("pong"), bulk("")])),
            &shared,
            &mut expects,
        );
        assert_eq!(expects.len(), 1);
        handle(
            Reply::Array(Some(vec![bulk("subscribe"), bulk("a"), Reply::Integer(1)])),
            &shared,
            &mut expects,
        );
        assert!(expects.is_empty());

        let mut expects = VecDeque::from([Awaited::Ping]);
        handle(
            Reply::Simple(Bytes::from_static(b"PONG")),
            &shared,
            &mut expects,
        );
        assert!(expects.is_empty());
    }
}
