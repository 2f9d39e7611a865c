//! One multiplexed connection to Redis, kept open by a supervisor task.
//!
//! Callers hand [`Job`]s to the task through a channel. Each time the task wakes
//! it takes every job waiting, encodes them all into one buffer and writes it
//! with one system call, so that N concurrent requests cost Redis one read
//! instead of N. Replies come back in order and complete the waiters queued
//! before the write.
//!
//! A lost connection fails every waiting caller at once with 503 (a command is
//! never sent twice: nobody can tell whether Redis ran it), then the task
//! reconnects with exponential backoff; while disconnected, callers fail fast.
//! A connection whose replies stop for twice the command timeout while commands
//! wait (a stalled or half-open socket) is closed and reopened.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use super::codec;
use super::Endpoint;
use crate::backend::BackendError;
use crate::protocol::reply::{self, Frame};

/// Most bytes one write gathers before it is sent (more jobs wait for the next write).
const MAX_WRITE_BYTES: usize = 1 << 20;
/// Read buffer size, and the least free space kept before each read.
const READ_CHUNK: usize = 16 * 1024;
/// How often a connection checks that Redis still answers.
const WATCHDOG_INTERVAL: Duration = Duration::from_millis(250);

/// The answer to one command.
pub type OneReply = oneshot::Sender<Result<Frame, BackendError>>;
/// The answers to a pipeline, in order.
pub type ManyReply = oneshot::Sender<Result<Vec<Frame>, BackendError>>;

/// Commands counted against a link's `RESTASH_COMMAND_BUFFER`; the count is
/// released when this is dropped (answered, failed or thrown away: no path can
/// leak it) or, for pipelines, reply by reply.
pub struct Counted {
    state: Arc<LinkState>,
    commands: usize,
}

impl Counted {
    /// Counts `commands` more on `state` and returns how many were counted before.
    pub fn add(state: &Arc<LinkState>, commands: usize) -> (Counted, usize) {
        let before = state.queued.fetch_add(commands, Ordering::AcqRel);
        let counted = Counted {
            state: state.clone(),
            commands,
        };
        (counted, before)
    }

    fn release_one(&mut self) {
        if self.commands > 0 {
            self.commands -= 1;
            self.state.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.state.queued.fetch_sub(self.commands, Ordering::AcqRel);
    }
}

/// Work for a connection.
pub enum Job {
    /// One command.
    One {
        args: Vec<Bytes>,
        reply: OneReply,
        counted: Counted,
    },
    /// Several commands, sent back to back, answered together.
    Many {
        commands: Vec<Vec<Bytes>>,
        reply: ManyReply,
        counted: Counted,
    },
}

impl Job {
    fn commands(&self) -> usize {
        match self {
            Job::One { .. } => 1,
            Job::Many { commands, .. } => commands.len(),
        }
    }

    fn fail(self, error: BackendError) {
        match self {
            Job::One { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Job::Many { reply, .. } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// A caller waiting for replies, in the order its commands were written.
enum Waiter {
    One {
        reply: OneReply,
        _counted: Counted,
    },
    Many {
        expected: usize,
        frames: Vec<Frame>,
        reply: ManyReply,
        counted: Counted,
    },
}

impl Waiter {
    fn fail(self, error: BackendError) {
        match self {
            Waiter::One { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Waiter::Many { reply, .. } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// What callers and the supervisor share.
pub struct LinkState {
    /// The connection is open and handshaken.
    pub connected: AtomicBool,
    /// Commands sent or queued and not yet answered (for backpressure).
    pub queued: AtomicUsize,
    /// Woken when the connection opens.
    pub opened: Notify,
    /// Set once at shutdown.
    closing: AtomicBool,
    /// Woken at shutdown.
    close: Notify,
}

impl LinkState {
    fn new() -> LinkState {
        LinkState {
            connected: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            opened: Notify::new(),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        }
    }

    /// Asks the supervisor to close the connection and stop.
    pub fn shut_down(&self) {
        self.closing.store(true, Ordering::Release);
        self.close.notify_one();
    }
}

/// Timing and retry settings of a link.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// Longest wait for a reply while commands are pending (the watchdog uses twice this).
    pub command_timeout: Duration,
    /// Longest wait for the TCP connection and the handshake.
    pub connect_timeout: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_max_delay: Duration,
}

/// Starts the supervisor task of one connection; returns the job channel and shared state.
pub fn spawn(
    endpoint: Arc<Endpoint>,
    settings: LinkSettings,
) -> (mpsc::UnboundedSender<Job>, Arc<LinkState>) {
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
    let state = Arc::new(LinkState::new());
    tokio::spawn(supervise(endpoint, settings, state.clone(), jobs_rx));
    (jobs_tx, state)
}

async fn supervise(
    endpoint: Arc<Endpoint>,
    settings: LinkSettings,
    state: Arc<LinkState>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let mut attempt: u32 = 0;
    let mut ever_connected = false;
    while !state.closing.load(Ordering::Acquire) {
        match endpoint.connect(settings.connect_timeout).await {
            Ok((reader, writer)) => {
                // The next connect after a lost connection waits the shortest
                // delay, never none: a server that accepts and then closes at
                // once must not be hammered.
                attempt = 1;
                if ever_connected {
                    crate::metrics::record_redis_reconnect("shared");
                }
                ever_connected = true;
                state.connected.store(true, Ordering::Release);
                state.opened.notify_waiters();
                let run = Connection::new(&state, &settings).run(reader, writer, &mut jobs);
                // A bug in this task must cost a connection, not the link forever.
                let ended = AssertUnwindSafe(run)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Ended::Lost("the connection task panicked".into()));
                state.connected.store(false, Ordering::Release);
                match ended {
                    Ended::Closing => break,
                    Ended::Lost(reason) => {
                        tracing::warn!(redis = %endpoint, %reason, "Redis connection lost")
                    }
                }
            }
            Err(reason) => {
                tracing::warn!(redis = %endpoint, %reason, "cannot connect to Redis");
            }
        }
        // Back off; callers fail fast meanwhile.
        let delay = backoff(attempt, settings.reconnect_max_delay);
        attempt = attempt.saturating_add(1);
        let wake = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => break,
                _ = state.close.notified() => break,
                job = jobs.recv() => match job {
                    Some(job) => job.fail(not_connected()),
                    None => return,
                },
            }
        }
    }
    // Shutting down: nothing more will be sent.
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        job.fail(not_connected());
    }
}

/// 0 before the first attempt, then 50 ms, 100 ms, 200 ms, … up to `max`.
fn backoff(attempt: u32, max: Duration) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    let millis = 50u64.saturating_mul(1 << (attempt - 1).min(16));
    Duration::from_millis(millis).min(max)
}

fn not_connected() -> BackendError {
    BackendError::Unavailable("not connected to Redis".into())
}

/// Why a connection ended.
enum Ended {
    Closing,
    Lost(String),
}

/// The state of one open connection: the waiters in write order and the time
/// Redis last showed progress.
struct Connection<'a> {
    state: &'a LinkState,
    settings: &'a LinkSettings,
    waiters: Mutex<VecDeque<Waiter>>,
    started: Instant,
    /// Milliseconds since `started` of the last read, or of the first write after idling.
    progress_ms: AtomicU64,
}

impl<'a> Connection<'a> {
    fn new(state: &'a LinkState, settings: &'a LinkSettings) -> Self {
        Connection {
            state,
            settings,
            waiters: Mutex::new(VecDeque::new()),
            started: Instant::now(),
            progress_ms: AtomicU64::new(0),
        }
    }

    async fn run(
        self,
        reader: Box<dyn AsyncRead + Send + Unpin>,
        writer: Box<dyn AsyncWrite + Send + Unpin>,
        jobs: &mut mpsc::UnboundedReceiver<Job>,
    ) -> Ended {
        let ended = tokio::select! {
            result = self.write_loop(writer, jobs) => result,
            result = self.read_loop(reader) => result,
            result = self.watchdog() => result,
            _ = self.state.close.notified() => Ended::Closing,
        };
        let text = match &ended {
            Ended::Closing => "restash is shutting down".to_string(),
            Ended::Lost(reason) => format!("connection to Redis lost ({reason})"),
        };
        let waiters = std::mem::take(&mut *self.lock_waiters());
        for waiter in waiters {
            waiter.fail(BackendError::Unavailable(text.clone()));
        }
        ended
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiter>> {
        // A panic while holding the lock cannot leave the queue half-updated.
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Takes every waiting job, writes them in one go, repeats.
    async fn write_loop(
        &self,
        mut writer: Box<dyn AsyncWrite + Send + Unpin>,
        jobs: &mut mpsc::UnboundedReceiver<Job>,
    ) -> Ended {
        let mut out = BytesMut::with_capacity(READ_CHUNK);
        loop {
            let Some(first) = jobs.recv().await else {
                return Ended::Closing;
            };
            let mut next = Some(first);
            let mut yielded = false;
            let mut commands = 0;
            loop {
                while let Some(job) = next {
                    commands += job.commands();
                    // Registered at once, in write order: if the connection ends
                    // before the write, `run` fails them and releases their count.
                    self.register(encode(&mut out, job));
                    next = if out.len() < MAX_WRITE_BYTES {
                        jobs.try_recv().ok()
                    } else {
                        None
                    };
                }
                // When other commands are in flight (concurrent callers), let the
                // tasks already woken queue theirs too, once, so that they share
                // this write. A lone caller does not wait.
                let in_flight = self.state.queued.load(Ordering::Relaxed);
                if yielded || out.len() >= MAX_WRITE_BYTES || in_flight <= commands {
                    break;
                }
                yielded = true;
                tokio::task::yield_now().await;
                next = jobs.try_recv().ok();
                if next.is_none() {
                    break;
                }
            }
            // (`flush` sends TLS records; a no-op on plain sockets.)
            if let Err(error) = writer.write_all(&out).await {
                return Ended::Lost(format!("write failed: {error}"));
            }
            if let Err(error) = writer.flush().await {
                return Ended::Lost(format!("write failed: {error}"));
            }
            out.clear();
            if out.capacity() > 4 * MAX_WRITE_BYTES {
                out = BytesMut::with_capacity(READ_CHUNK);
            }
        }
    }

    /// Queues a waiter; the first after an idle spell restarts the watchdog's clock.
    fn register(&self, waiter: Waiter) {
        let mut waiters = self.lock_waiters();
        if waiters.is_empty() {
            self.progress_ms.store(self.now_ms(), Ordering::Relaxed);
        }
        waiters.push_back(waiter);
    }

    /// Reads replies and hands each to the oldest waiter.
    async fn read_loop(&self, mut reader: Box<dyn AsyncRead + Send + Unpin>) -> Ended {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        // Where each complete reply of one read ends (kept across reads).
        let mut ends = Vec::new();
        // How far the first incomplete reply has been measured (kept across reads).
        let mut scan = codec::ReplyScan::default();
        loop {
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            match reader.read_buf(&mut buf).await {
                Ok(0) => return Ended::Lost("Redis closed the connection".into()),
                Ok(_) => {}
                Err(error) => return Ended::Lost(format!("read failed: {error}")),
            }
            self.progress_ms.store(self.now_ms(), Ordering::Relaxed);
            // Every complete reply in the buffer, split off at once.
            ends.clear();
            let mut total = 0;
            let mut broken = None;
            loop {
                match scan.next(&buf[total..]) {
                    Ok(Some(len)) => {
                        total += len;
                        ends.push(total);
                    }
                    Ok(None) => break,
                    Err(error) => {
                        broken = Some(error.to_string());
                        break;
                    }
                }
            }
            if total > 0 {
                // The complete replies before a bad one are still answers.
                let replies = buf.split_to(total).freeze();
                if let Err(reason) = self.deliver(&replies, &ends) {
                    return Ended::Lost(reason);
                }
            }
            if let Some(reason) = broken {
                return Ended::Lost(reason);
            }
        }
    }

    fn deliver(&self, replies: &Bytes, ends: &[usize]) -> Result<(), String> {
        let mut start = 0;
        let mut waiters = self.lock_waiters();
        for &end in ends {
            // On any error nothing is popped: `run` fails every waiter and
            // releases exactly their counts.
            let frame = codec::decode(&replies.slice(start..end)).map_err(|e| e.to_string())?;
            start = end;
            let Some(waiter) = waiters.pop_front() else {
                return Err("a reply arrived for no command".into());
            };
            match waiter {
                Waiter::One { reply, _counted } => {
                    drop(_counted);
                    let _ = reply.send(Ok(frame));
                }
                Waiter::Many {
                    expected,
                    mut frames,
                    reply,
                    mut counted,
                } => {
                    frames.push(frame);
                    counted.release_one();
                    if frames.len() == expected {
                        let _ = reply.send(Ok(frames));
                    } else {
                        waiters.push_front(Waiter::Many {
                            expected,
                            frames,
                            reply,
                            counted,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends the connection when commands wait and Redis has shown no progress
    /// for twice the command timeout.
    async fn watchdog(&self) -> Ended {
        let limit = (self.settings.command_timeout * 2).as_millis() as u64;
        let mut tick = tokio::time::interval(WATCHDOG_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let waiting = !self.lock_waiters().is_empty();
            let idle = self
                .now_ms()
                .saturating_sub(self.progress_ms.load(Ordering::Relaxed));
            if waiting && idle > limit {
                return Ended::Lost(format!("no reply for {idle} ms"));
            }
        }
    }
}

/// Encodes a job's commands and returns its waiter.
fn encode(out: &mut BytesMut, job: Job) -> Waiter {
    match job {
        Job::One {
            args,
            reply,
            counted,
        } => {
            codec::encode_command(out, &args);
            Waiter::One {
                reply,
                _counted: counted,
            }
        }
        Job::Many {
            commands,
            reply,
            counted,
        } => {
            for args in &commands {
                codec::encode_command(out, args);
            }
            Waiter::Many {
                expected: commands.len(),
                frames: Vec::with_capacity(commands.len()),
                reply,
                counted,
            }
        }
    }
}

/// Sends the handshake commands and a `PING`, and checks that none was refused.
pub async fn handshake<S>(stream: &mut S, commands: &[Vec<Bytes>]) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // PING last: a server that accepts and then refuses (`maxclients`, protected
    // mode) fails the connect instead of sending a reply nobody asked for.
    let ping = [Bytes::from_static(b"PING")];
    let mut out = BytesMut::new();
    for command in commands.iter().map(Vec::as_slice).chain([&ping[..]]) {
        codec::encode_command(&mut out, command);
    }
    let expected = commands.len() + 1;
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut answered = 0;
    while answered < expected {
        if stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("read failed: {e}"))?
            == 0
        {
            return Err("Redis closed the connection during the handshake".into());
        }
        while let Some(len) = codec::reply_len(&buf).map_err(|e| e.to_string())? {
            let frame = codec::decode(&buf.split_to(len).freeze()).map_err(|e| e.to_string())?;
            if let Some(text) = reply::error_text(&frame) {
                return Err(text);
            }
            answered += 1;
        }
    }
    Ok(())
}
