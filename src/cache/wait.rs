//! Waiting for a value that another caller is computing under a lease.
//!
//! Callers of one process waiting for the same entry share one poll loop (a spawned task
//! that reads the entry at growing intervals, 5 ms up to 50 ms, while anyone is waiting), so a
//! stampede of N waiters costs one Redis read per interval per restash instance, not N.
//! Instances do not talk to each other: each polls Redis, where the lease and value live.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use super::keys::EntryKeys;
use super::lease::next_poll_delay;
use super::scripts::Scripts;
use super::store::{read_entry, CacheError, Lookup};
use super::Cache;
use crate::backend::Backend;

/// What a poll loop found: `None` while the lease is still held.
type Outcome = Option<Result<Lookup, CacheError>>;

/// The running poll loops, by value key.
pub type Polls = Arc<Mutex<HashMap<Bytes, watch::Receiver<Outcome>>>>;

impl Cache {
    /// Waits, at most until `deadline`, for the entry to stop being [`Lookup::Held`]: it was
    /// filled (a hit), or the lease ended without a value (a miss). Answers [`Lookup::Held`]
    /// when the deadline passes first. Never takes a lease.
    pub async fn wait_for_fill(
        &self,
        backend: &Backend,
        keys: &EntryKeys,
        deadline: Instant,
    ) -> Result<Lookup, CacheError> {
        let mut outcome = self.subscribe(backend, keys);
        loop {
            if let Some(found) = outcome.borrow_and_update().clone() {
                return found;
            }
            match tokio::time::timeout_at(deadline.into(), outcome.changed()).await {
                Ok(Ok(())) => {}
                // The deadline passed, or the loop stopped without an answer.
                Err(_) | Ok(Err(_)) => return Ok(Lookup::Held),
            }
        }
    }

    /// Joins the poll loop of `keys`, starting one if none is running.
    fn subscribe(&self, backend: &Backend, keys: &EntryKeys) -> watch::Receiver<Outcome> {
        let mut polls = self.polls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(running) = polls.get(&keys.value) {
            if running.borrow().is_none() && running.has_changed().is_ok() {
                return running.clone();
            }
        }
        let (sender, receiver) = watch::channel(None);
        polls.insert(keys.value.clone(), receiver.clone());
        tokio::spawn(poll(
            PollLoop {
                polls: Arc::clone(&self.polls),
                backend: backend.clone(),
                scripts: Arc::clone(&self.scripts),
                keys: keys.clone(),
                limit: self.settings.timeout,
                own: receiver.clone(),
            },
            sender,
        ));
        receiver
    }
}

/// What one poll loop needs.
struct PollLoop {
    polls: Polls,
    backend: Backend,
    scripts: Arc<Scripts>,
    keys: EntryKeys,
    limit: Duration,
    /// Identifies this loop's channel in `polls`.
    own: watch::Receiver<Outcome>,
}

/// Reads the entry until it is no longer held or nobody waits, then publishes what it found.
async fn poll(job: PollLoop, sender: watch::Sender<Outcome>) {
    // The map's receiver and `own` are not waiters.
    const NOT_WAITERS: usize = 2;
    let mut delay = Duration::ZERO;
    let found = loop {
        delay = next_poll_delay(delay);
        tokio::time::sleep(delay).await;
        if sender.receiver_count() <= NOT_WAITERS {
            break None;
        }
        let read = read_entry(
            &job.backend,
            &job.scripts.lookup,
            &job.keys,
            None,
            job.limit,
        )
        .await;
        if !matches!(read, Ok(Lookup::Held)) {
            break Some(read);
        }
    };
    // Unregister before answering: later waiters start a fresh loop.
    {
        let mut polls = job.polls.lock().unwrap_or_else(PoisonError::into_inner);
        if polls
            .get(&job.keys.value)
            .is_some_and(|r| r.same_channel(&job.own))
        {
            polls.remove(&job.keys.value);
        }
    }
    if let Some(found) = found {
        let _ = sender.send(Some(found));
    }
}
