//! The cache's Redis operations, over raw frames through [`Backend`].
//!
//! Every command and script addresses the keys of one hash slot and is sent to that slot's
//! primary ([`Target::Slot`]); only [`KeyScan`] addresses nodes (every primary of a cluster).
//! Single-entry operations are bounded by [`CacheSettings::timeout`](super::CacheSettings);
//! invalidations run in batches bounded by the backend's own command timeout.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use super::entry::Entry;
use super::keys::{self, EntryKeys, Namespace};
use super::lease::{self, LeaseToken, LogView};
use super::params::{Invalidation, PutParams};
use super::scripts::Script;
use super::stats::{self, Event};
use super::Cache;
use crate::backend::{Backend, BackendError, Target};
use crate::protocol::reply::{error_text, Frame};
use crate::routing::key_slot;

/// Keys examined per `SCAN`/`SSCAN` call.
pub const SCAN_BATCH: usize = 500;
/// Entries deleted per pipeline: small, so that other requests sharing the connection
/// never queue behind more than this many commands.
pub const REMOVE_BATCH: usize = 100;
/// Records kept in a namespace's invalidation log.
pub const MAX_LOG_RECORDS: usize = 10_000;

/// Redis did not give a usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    /// No answer within the cache timeout.
    #[error("ERR Redis did not answer within {0} ms")]
    Timeout(u128),
    /// Unreachable, disconnected or overloaded.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Redis answered with an error.
    #[error("ERR Redis refused a cache operation: {0}")]
    Redis(String),
    /// Redis answered something the cache did not write.
    #[error("ERR unexpected cache data in Redis: {0}")]
    Reply(&'static str),
    /// restash is shutting down.
    #[error("ERR restash is shutting down")]
    Stopping,
}

/// The outcome of a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A fresh entry.
    Hit {
        /// The entry.
        entry: Entry,
        /// Redis' time of the read.
        now: u64,
    },
    /// An entry inside its stale window.
    Stale {
        /// The entry.
        entry: Entry,
        /// Redis' time of the read.
        now: u64,
        /// Whether this caller got the lease to refresh it.
        granted: bool,
    },
    /// No entry; `granted` when this caller got the lease to fill it.
    Miss {
        /// Whether this caller got the lease.
        granted: bool,
    },
    /// No entry, and another caller holds the lease.
    Held,
}

/// The outcome of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillOutcome {
    /// Stored.
    Stored,
    /// A lease fill that lost its lease: refused, nothing stored (409).
    LeaseLost,
    /// A lease fill computed before a matching invalidation: refused, nothing kept (409).
    Invalidated,
}

impl Cache {
    /// Bounds `future` by the cache timeout.
    async fn bounded<T>(
        &self,
        future: impl Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        let limit = self.settings.timeout;
        tokio::time::timeout(limit, future)
            .await
            .unwrap_or(Err(CacheError::Timeout(limit.as_millis())))
    }

    /// The namespace's invalidation counter (read before granting a lease).
    pub async fn invalidation_seq(
        &self,
        backend: &Backend,
        ns: &Namespace,
    ) -> Result<u64, CacheError> {
        self.bounded(async {
            let command = vec![
                Bytes::from_static(b"HGET"),
                keys::meta_key(ns),
                Bytes::from_static(b"seq"),
            ];
            let frame = run(backend, command).await?;
            match frame {
                Frame::Null => Ok(0),
                other => unsigned(&other).ok_or(CacheError::Reply("seq")),
            }
        })
        .await
    }

    /// Reads an entry; with `lease`, takes the lease on a miss or a stale hit when it is free.
    pub async fn lookup(
        &self,
        backend: &Backend,
        keys: &EntryKeys,
        lease: Option<(Duration, &LeaseToken)>,
    ) -> Result<Lookup, CacheError> {
        read_entry(
            backend,
            &self.scripts.lookup,
            keys,
            lease,
            self.settings.timeout,
        )
        .await
    }

    /// A read that takes no lease and will not wait: the server's clock and the entry
    /// as two plain commands (`TIME`, `HMGET`) instead of the lookup script, which costs
    /// Redis several times as much. Another caller's lease reads as a miss, which is
    /// how a read that does not wait answers it anyway.
    pub async fn peek(&self, backend: &Backend, keys: &EntryKeys) -> Result<Lookup, CacheError> {
        let target = Target::Slot(key_slot(&keys.value));
        let fields = ["d", "c", "a", "f", "s", "e"].map(|f| Bytes::from_static(f.as_bytes()));
        let mut hmget = Vec::with_capacity(2 + fields.len());
        hmget.push(Bytes::from_static(b"HMGET"));
        hmget.push(keys.value.clone());
        hmget.extend(fields);
        let commands = vec![
            (vec![Bytes::from_static(b"TIME")], target.clone()),
            (hmget, target),
        ];
        let frames = self
            .bounded(async { Ok(backend.pipeline_on(commands).await?) })
            .await?;
        let Ok([time, entry]) = <[Frame; 2]>::try_from(frames) else {
            return Err(CacheError::Reply("lookup"));
        };
        decode_peek(checked(time)?, checked(entry)?).ok_or(CacheError::Reply("lookup"))
    }

    /// Stores a value. With a token, only while it holds the lease and no matching
    /// invalidation happened since the lease was granted. Any write ends the lease.
    pub async fn fill(
        &self,
        backend: &Backend,
        ns: &Namespace,
        key: &[u8],
        value: FillValue,
        params: &PutParams,
        token: Option<&LeaseToken>,
    ) -> Result<FillOutcome, CacheError> {
        let keys = EntryKeys::new(ns, key);
        if let Some(token) = token {
            if self
                .invalidated_since(backend, ns, token.seq(), key, &params.tags)
                .await?
            {
                self.bounded(eval(
                    backend,
                    &self.scripts.release,
                    vec![keys.lease.clone()],
                    vec![token.as_str().to_string().into()],
                ))
                .await?;
                return Ok(FillOutcome::Invalidated);
            }
        }
        let write_id = match token {
            Some(token) => token.as_str().to_string(),
            None => format!("w.{:032x}", rand::random::<u128>()),
        };
        let lifetime = params.ttl + params.swr;
        let args = vec![
            Bytes::from(token.map(|t| t.as_str().to_string()).unwrap_or_default()),
            value.data,
            value.content_type,
            value.etag,
            params.ttl.as_millis().to_string().into(),
            params.swr.as_millis().to_string().into(),
            params.tags.join(",").into(),
            write_id.clone().into(),
        ];
        let stored = self
            .bounded(eval(
                backend,
                &self.scripts.fill,
                vec![keys.value.clone(), keys.lease.clone()],
                args,
            ))
            .await?;
        if integer(&stored) != Some(1) {
            return Ok(FillOutcome::LeaseLost);
        }
        // The value is stored. If its tag sets or the second log check cannot be
        // written or read, it is taken back: a stored value missing from a tag set
        // would survive that tag's invalidations, and one not checked might predate one.
        let undo = || {
            self.bounded(eval(
                backend,
                &self.scripts.undo_fill,
                vec![keys.value.clone()],
                vec![write_id.clone().into()],
            ))
        };
        let settled = self
            .tag_and_recheck(backend, ns, key, lifetime, params, token)
            .await;
        match settled {
            Ok(true) => Ok(FillOutcome::Stored),
            Ok(false) => {
                undo().await?;
                Ok(FillOutcome::Invalidated)
            }
            Err(error) => {
                if let Err(undo_error) = undo().await {
                    tracing::warn!(%error, %undo_error, "a cache fill that failed half-way could not be taken back");
                }
                Err(error)
            }
        }
    }

    /// After a fill stored the value: adds the key to its tag sets (after the value, so
    /// that an invalidation that starts after this write answered always finds the key;
    /// see the module docs) and, for a lease fill, checks the log again. `false` when an
    /// invalidation happened since the lease was granted.
    async fn tag_and_recheck(
        &self,
        backend: &Backend,
        ns: &Namespace,
        key: &[u8],
        lifetime: Duration,
        params: &PutParams,
        token: Option<&LeaseToken>,
    ) -> Result<bool, CacheError> {
        let lifetime_ms = Bytes::from((lifetime.as_millis() + 1000).to_string());
        let calls = params
            .tags
            .iter()
            .map(|tag| {
                let args = vec![lifetime_ms.clone(), Bytes::copy_from_slice(key)];
                (vec![keys::tag_set_key(ns, tag)], args)
            })
            .collect();
        for frame in self
            .bounded(eval_many(backend, &self.scripts.tag, calls))
            .await?
        {
            checked(frame)?;
        }
        match token {
            Some(token) => Ok(!self
                .invalidated_since(backend, ns, token.seq(), key, &params.tags)
                .await?),
            None => Ok(true),
        }
    }

    /// Deletes one entry and cancels its lease; returns whether a value existed.
    pub async fn remove(&self, backend: &Backend, keys: &EntryKeys) -> Result<bool, CacheError> {
        let frame = self
            .bounded(eval(
                backend,
                &self.scripts.remove,
                vec![keys.value.clone(), keys.lease.clone()],
                vec![],
            ))
            .await?;
        Ok(integer(&frame) == Some(1))
    }

    /// Removes every entry matching `what` and cancels their leases; returns how many
    /// values it removed. Never uses `KEYS`: tag sets are walked with `SSCAN`, prefixes
    /// with [`KeyScan`].
    pub async fn invalidate(
        &self,
        backend: &Backend,
        ns: &Namespace,
        what: &Invalidation,
    ) -> Result<u64, CacheError> {
        let records = match what {
            Invalidation::Tags(tags) => tags.iter().map(|t| lease::tag_record(t)).collect(),
            Invalidation::Prefix(prefix) => vec![lease::prefix_record(prefix)],
        };
        let mut args = vec![Bytes::from(MAX_LOG_RECORDS.to_string())];
        args.extend(records);
        checked(
            eval(
                backend,
                &self.scripts.log,
                vec![keys::meta_key(ns), keys::log_key(ns)],
                args,
            )
            .await?,
        )?;
        let mut removed = 0;
        match what {
            Invalidation::Tags(tags) => {
                for tag in tags {
                    removed += self.invalidate_tag(backend, ns, tag).await?;
                }
            }
            Invalidation::Prefix(prefix) => {
                let mut scan = KeyScan::new(keys::prefix_pattern(ns, prefix));
                while let Some(batch) = scan.next_batch(backend).await? {
                    // The pattern ends in `*` after the escaped prefix, but a `}` in the
                    // prefix can still match a shorter key's own `}`: keep true matches only.
                    let mut entries: Vec<Bytes> = batch
                        .iter()
                        .filter_map(|redis_key| keys::key_of(ns, redis_key))
                        .filter(|key| key.starts_with(prefix))
                        .collect();
                    entries.sort();
                    entries.dedup();
                    removed += self.remove_many(backend, ns, &entries).await?;
                }
            }
        }
        Ok(removed)
    }

    /// Walks one tag's sorted set, then the plain set older versions kept: removes each
    /// batch of members' entries, then the members.
    ///
    /// Entries go first, so that an invalidation that fails half-way leaves the members
    /// in the set and a retry finds them. A fill that stored one of them again between
    /// the two steps keeps its place in the sorted set ([`Cache::keep_refilled`]).
    async fn invalidate_tag(
        &self,
        backend: &Backend,
        ns: &Namespace,
        tag: &str,
    ) -> Result<u64, CacheError> {
        let sorted = keys::tag_set_key(ns, tag);
        let mut removed = 0;
        // (set, scan command, remove command, scan items per member: a sorted set's
        // scan gives each member's score too).
        for (set, scan, remove, stride) in [
            (&sorted, "ZSCAN", "ZREM", 2),
            (&keys::legacy_tag_set_key(ns, tag), "SSCAN", "SREM", 1),
        ] {
            let mut cursor = Bytes::from_static(b"0");
            loop {
                let command = vec![
                    Bytes::from(scan),
                    set.clone(),
                    cursor,
                    Bytes::from_static(b"COUNT"),
                    Bytes::from(SCAN_BATCH.to_string()),
                ];
                let frame = run(backend, command).await?;
                let (next, items) = scan_reply(frame).ok_or(CacheError::Reply("SCAN"))?;
                let members: Vec<Bytes> = items.into_iter().step_by(stride).collect();
                if !members.is_empty() {
                    removed += self.remove_many(backend, ns, &members).await?;
                    let mut forget = vec![Bytes::from(remove), set.clone()];
                    forget.extend(members.iter().cloned());
                    run(backend, forget).await?;
                    self.keep_refilled(backend, ns, &sorted, &members).await?;
                }
                if &next[..] == b"0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    /// Puts back into `set` the `members` whose entries exist again (stored while their
    /// batch was being invalidated), for as long as the entry lives, as a fill does.
    async fn keep_refilled(
        &self,
        backend: &Backend,
        ns: &Namespace,
        set: &Bytes,
        members: &[Bytes],
    ) -> Result<(), CacheError> {
        let probes = members
            .iter()
            .map(|key| {
                let value = EntryKeys::new(ns, key).value;
                let target = Target::Slot(key_slot(&value));
                (vec![Bytes::from_static(b"PTTL"), value], target)
            })
            .collect();
        let lifetimes = backend.pipeline_on(probes).await?;
        let calls: Vec<(Vec<Bytes>, Vec<Bytes>)> = members
            .iter()
            .zip(lifetimes)
            .filter_map(|(key, lifetime)| {
                let ms = integer(&checked(lifetime).ok()?)?;
                (ms > 0).then(|| {
                    let lifetime_ms = Bytes::from((ms + 1000).to_string());
                    (vec![set.clone()], vec![lifetime_ms, key.clone()])
                })
            })
            .collect();
        for frame in eval_many(backend, &self.scripts.tag, calls).await? {
            checked(frame)?;
        }
        Ok(())
    }

    /// Deletes entries (one single-slot script each, pipelined); returns how many existed.
    async fn remove_many(
        &self,
        backend: &Backend,
        ns: &Namespace,
        entries: &[Bytes],
    ) -> Result<u64, CacheError> {
        let mut removed = 0;
        for chunk in entries.chunks(REMOVE_BATCH) {
            let calls: Vec<(Vec<Bytes>, Vec<Bytes>)> = chunk
                .iter()
                .map(|key| {
                    let keys = EntryKeys::new(ns, key);
                    (vec![keys.value, keys.lease], vec![])
                })
                .collect();
            for frame in eval_many(backend, &self.scripts.remove, calls).await? {
                removed += integer(&checked(frame)?).unwrap_or(0).max(0) as u64;
            }
        }
        Ok(removed)
    }

    /// Whether a fill of `key` with `tags` under a lease granted after `since` must be refused.
    async fn invalidated_since(
        &self,
        backend: &Backend,
        ns: &Namespace,
        since: u64,
        key: &[u8],
        tags: &[String],
    ) -> Result<bool, CacheError> {
        let frame = self
            .bounded(eval(
                backend,
                &self.scripts.check,
                vec![keys::meta_key(ns), keys::log_key(ns)],
                vec![since.to_string().into()],
            ))
            .await?;
        let view = decode_log_view(frame).ok_or(CacheError::Reply("log"))?;
        Ok(lease::invalidated_since(&view, since, key, tags))
    }

    /// Counts `event` in this process's metrics, and in the shared Redis counters at
    /// the next flush ([`stats::FLUSH_INTERVAL`]).
    pub fn record(&self, ns: &Namespace, event: Event) {
        self.labels.count(ns.as_str(), event);
        self.pending.add(ns, event);
    }

    /// Adds this process's pending event counts to the shared Redis counters, as one
    /// pipeline of `HINCRBY`. At most once: when the pipeline fails, some commands may
    /// have run and others not, so its counts are dropped rather than sent again.
    pub async fn flush_stats(&self, backend: &Backend) {
        let _one_at_a_time = self.flushing.lock().await;
        let counts = self.pending.take();
        if counts.is_empty() {
            return;
        }
        let commands = counts
            .iter()
            .map(|(ns, event, n)| {
                let key = keys::stats_key(ns);
                let target = Target::Slot(key_slot(&key));
                let command = vec![
                    Bytes::from_static(b"HINCRBY"),
                    key,
                    Bytes::from_static(event.field().as_bytes()),
                    Bytes::from(n.to_string()),
                ];
                (command, target)
            })
            .collect();
        match backend.pipeline_on(commands).await {
            Ok(replies) => {
                if let Some(text) = replies.iter().find_map(error_text) {
                    tracing::debug!(error = %text, "Redis refused some cache event counts");
                }
            }
            Err(error) => tracing::debug!(%error, "cache event counts dropped"),
        }
    }

    /// The namespace's counters, shared by every instance, as JSON (callers write
    /// this process's pending counts first: [`Cache::flush_stats`]).
    pub async fn stats(
        &self,
        backend: &Backend,
        ns: &Namespace,
    ) -> Result<serde_json::Value, CacheError> {
        let frame = self
            .bounded(run(
                backend,
                vec![Bytes::from_static(b"HGETALL"), keys::stats_key(ns)],
            ))
            .await?;
        let items = match &frame {
            Frame::Array { data, .. } => data.iter().filter_map(bytes_of).collect::<Vec<_>>(),
            Frame::Map { data, .. } => data
                .iter()
                .flat_map(|(k, v)| [bytes_of(k), bytes_of(v)])
                .flatten()
                .collect(),
            _ => return Err(CacheError::Reply("stats")),
        };
        let pairs = items.chunks_exact(2).map(|p| (&p[0][..], &p[1][..]));
        Ok(stats::stats_json(ns.as_str(), pairs))
    }
}

/// A value to store.
#[derive(Debug, Clone)]
pub struct FillValue {
    /// The bytes.
    pub data: Bytes,
    /// Its content type.
    pub content_type: Bytes,
    /// Its quoted ETag.
    pub etag: Bytes,
}

/// A `SCAN … MATCH pattern` over the whole keyspace, one batch at a time: on a cluster it
/// walks every primary in turn (those known when the scan starts), elsewhere the one node.
/// This is the only place that walks keys by pattern; it never uses `KEYS`.
pub struct KeyScan {
    pattern: Bytes,
    /// The nodes to visit, learned on the first batch.
    nodes: Option<Vec<Target>>,
    /// Index of the node being scanned.
    node: usize,
    cursor: Bytes,
}

impl KeyScan {
    /// A scan of the keys matching `pattern` (Redis glob syntax).
    pub fn new(pattern: Bytes) -> KeyScan {
        KeyScan {
            pattern,
            nodes: None,
            node: 0,
            cursor: Bytes::from_static(b"0"),
        }
    }

    /// The next batch of keys, possibly empty; `None` when the scan is complete.
    pub async fn next_batch(
        &mut self,
        backend: &Backend,
    ) -> Result<Option<Vec<Bytes>>, CacheError> {
        let nodes = match self.nodes.take() {
            Some(nodes) => nodes,
            None if backend.is_cluster() => backend
                .primaries()
                .await?
                .into_iter()
                .map(Target::Node)
                .collect(),
            None => vec![Target::AnyNode],
        };
        let target = nodes.get(self.node).cloned();
        self.nodes = Some(nodes);
        let Some(target) = target else {
            return Ok(None);
        };
        let command = vec![
            Bytes::from_static(b"SCAN"),
            self.cursor.clone(),
            Bytes::from_static(b"MATCH"),
            self.pattern.clone(),
            Bytes::from_static(b"COUNT"),
            Bytes::from(SCAN_BATCH.to_string()),
        ];
        let frame = checked(backend.execute_on(command, target).await?)?;
        let (next, keys) = scan_reply(frame).ok_or(CacheError::Reply("SCAN"))?;
        if &next[..] == b"0" {
            self.node += 1;
        }
        self.cursor = next;
        Ok(Some(keys))
    }
}

/// The lookup script (see [`Cache::lookup`]), bounded by `limit`.
pub(super) async fn read_entry(
    backend: &Backend,
    script: &Script,
    keys: &EntryKeys,
    lease: Option<(Duration, &LeaseToken)>,
    limit: Duration,
) -> Result<Lookup, CacheError> {
    let (ms, token) = match lease {
        Some((length, token)) => (length.as_millis(), token.as_str()),
        None => (0, ""),
    };
    let args = vec![
        ms.to_string().into(),
        Bytes::copy_from_slice(token.as_bytes()),
    ];
    let keys = vec![keys.value.clone(), keys.lease.clone()];
    let frame = tokio::time::timeout(limit, eval(backend, script, keys, args))
        .await
        .unwrap_or(Err(CacheError::Timeout(limit.as_millis())))?;
    decode_lookup(&frame).ok_or(CacheError::Reply("lookup"))
}

/// Runs a plain command on the primary of its first key's slot. Error replies are errors.
async fn run(backend: &Backend, command: Vec<Bytes>) -> Result<Frame, CacheError> {
    let target = command
        .get(1)
        .map_or(Target::AnyNode, |key| Target::Slot(key_slot(key)));
    checked(backend.execute_on(command, target).await?)
}

/// The primary of the slot that a script's keys share.
fn script_target(keys: &[Bytes]) -> Target {
    keys.first()
        .map_or(Target::AnyNode, |key| Target::Slot(key_slot(key)))
}

/// Runs a script: `EVALSHA`, then `EVAL` when Redis answers `NOSCRIPT`. Error replies are errors.
async fn eval(
    backend: &Backend,
    script: &Script,
    keys: Vec<Bytes>,
    args: Vec<Bytes>,
) -> Result<Frame, CacheError> {
    let target = script_target(&keys);
    let command = eval_command(script, true, keys.clone(), args.clone());
    let frame = backend.execute_on(command, target.clone()).await?;
    if is_noscript(&frame) {
        let command = eval_command(script, false, keys, args);
        return checked(backend.execute_on(command, target).await?);
    }
    checked(frame)
}

/// Runs a script once per `(keys, args)` as one pipeline, re-sending with `EVAL` the calls
/// that met `NOSCRIPT`. Returns one frame per call, error replies included.
async fn eval_many(
    backend: &Backend,
    script: &Script,
    calls: Vec<(Vec<Bytes>, Vec<Bytes>)>,
) -> Result<Vec<Frame>, CacheError> {
    if calls.is_empty() {
        return Ok(vec![]);
    }
    let commands = calls
        .iter()
        .map(|(k, a)| {
            (
                eval_command(script, true, k.clone(), a.clone()),
                script_target(k),
            )
        })
        .collect();
    let mut frames = backend.pipeline_on(commands).await?;
    let missing: Vec<usize> = (0..frames.len())
        .filter(|&i| is_noscript(&frames[i]))
        .collect();
    if !missing.is_empty() {
        let retry = missing
            .iter()
            .map(|&i| {
                let (keys, args) = &calls[i];
                let command = eval_command(script, false, keys.clone(), args.clone());
                (command, script_target(keys))
            })
            .collect();
        for (i, frame) in missing.into_iter().zip(backend.pipeline_on(retry).await?) {
            frames[i] = frame;
        }
    }
    Ok(frames)
}

fn eval_command(script: &Script, by_sha: bool, keys: Vec<Bytes>, args: Vec<Bytes>) -> Vec<Bytes> {
    let mut command = Vec::with_capacity(3 + keys.len() + args.len());
    if by_sha {
        command.push(Bytes::from_static(b"EVALSHA"));
        command.push(Bytes::from(script.sha.clone()));
    } else {
        command.push(Bytes::from_static(b"EVAL"));
        command.push(Bytes::from_static(script.source.as_bytes()));
    }
    command.push(Bytes::from(keys.len().to_string()));
    command.extend(keys);
    command.extend(args);
    command
}

fn is_noscript(frame: &Frame) -> bool {
    error_text(frame).is_some_and(|text| text.starts_with("NOSCRIPT"))
}

/// An error reply becomes [`CacheError::Redis`].
fn checked(frame: Frame) -> Result<Frame, CacheError> {
    match error_text(&frame) {
        Some(text) => Err(CacheError::Redis(text)),
        None => Ok(frame),
    }
}

fn bytes_of(frame: &Frame) -> Option<Bytes> {
    match frame {
        Frame::BlobString { data, .. } | Frame::SimpleString { data, .. } => Some(data.clone()),
        Frame::Number { data, .. } => Some(Bytes::from(data.to_string())),
        _ => None,
    }
}

fn integer(frame: &Frame) -> Option<i64> {
    match frame {
        Frame::Number { data, .. } => Some(*data),
        other => std::str::from_utf8(&bytes_of(other)?).ok()?.parse().ok(),
    }
}

fn unsigned(frame: &Frame) -> Option<u64> {
    integer(frame).and_then(|n| u64::try_from(n).ok())
}

/// `[cursor, [items…]]` of SCAN and SSCAN.
fn scan_reply(frame: Frame) -> Option<(Bytes, Vec<Bytes>)> {
    let Frame::Array { data, .. } = frame else {
        return None;
    };
    let mut parts = data.into_iter();
    let cursor = bytes_of(&parts.next()?)?;
    let Frame::Array { data: items, .. } = parts.next()? else {
        return None;
    };
    Some((cursor, items.iter().filter_map(bytes_of).collect()))
}

/// The reply of the lookup script.
pub fn decode_lookup(frame: &Frame) -> Option<Lookup> {
    let Frame::Array { data, .. } = frame else {
        return None;
    };
    let kind = bytes_of(data.first()?)?;
    let now = unsigned(data.get(1)?)?;
    let granted = integer(data.get(2)?)? == 1;
    let entry = || -> Option<Entry> {
        Some(Entry {
            data: bytes_of(data.get(3)?)?,
            content_type: bytes_of(data.get(4)?)?,
            stored_at: unsigned(data.get(5)?)?,
            fresh_until: unsigned(data.get(6)?)?,
            stale_until: unsigned(data.get(7)?)?,
            etag: bytes_of(data.get(8)?)?,
        })
    };
    match &kind[..] {
        b"hit" => Some(Lookup::Hit {
            entry: entry()?,
            now,
        }),
        b"stale" => Some(Lookup::Stale {
            entry: entry()?,
            now,
            granted,
        }),
        b"miss" => Some(Lookup::Miss { granted }),
        b"held" => Some(Lookup::Held),
        _ => None,
    }
}

/// [`Cache::peek`]'s replies: `TIME` (seconds, microseconds) and the entry's fields
/// in the order of the lookup script (`d c a f s e`), judged as the script judges them.
fn decode_peek(time: Frame, entry: Frame) -> Option<Lookup> {
    let (Frame::Array { data: time, .. }, Frame::Array { data: fields, .. }) = (time, entry) else {
        return None;
    };
    let now = unsigned(time.first()?)? * 1000 + unsigned(time.get(1)?)? / 1000;
    let Some(data) = bytes_of(fields.first()?) else {
        return Some(Lookup::Miss { granted: false });
    };
    let entry = Entry {
        data,
        content_type: bytes_of(fields.get(1)?)?,
        stored_at: unsigned(fields.get(2)?)?,
        fresh_until: unsigned(fields.get(3)?)?,
        stale_until: unsigned(fields.get(4)?)?,
        etag: bytes_of(fields.get(5)?)?,
    };
    Some(if now >= entry.stale_until {
        Lookup::Miss { granted: false }
    } else if now < entry.fresh_until {
        Lookup::Hit { entry, now }
    } else {
        Lookup::Stale {
            entry,
            now,
            granted: false,
        }
    })
}

/// The reply of the log check script.
fn decode_log_view(frame: Frame) -> Option<LogView> {
    let Frame::Array { data, .. } = frame else {
        return None;
    };
    let mut parts = data.into_iter();
    let cut = unsigned(&parts.next()?)?;
    let seq = unsigned(&parts.next()?)?;
    let Frame::Array { data: records, .. } = parts.next()? else {
        return None;
    };
    Some(LogView {
        cut,
        seq,
        records: records.iter().filter_map(bytes_of).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::reply::{array, bulk};

    fn num(n: i64) -> Frame {
        Frame::Number {
            data: n,
            attributes: None,
        }
    }

    #[test]
    fn lookup_replies() {
        let hit = array(vec![
            bulk("hit"),
            num(1_000),
            num(0),
            bulk(&b"\x00\xff"[..]),
            bulk("text/plain"),
            bulk("900"),
            bulk("2000"),
            bulk("3000"),
            bulk("\"e\""),
        ]);
        let Some(Lookup::Hit { entry, now }) = decode_lookup(&hit) else {
            panic!("not a hit")
        };
        assert_eq!(now, 1_000);
        assert_eq!(&entry.data[..], b"\x00\xff");
        assert_eq!(
            (entry.stored_at, entry.fresh_until, entry.stale_until),
            (900, 2000, 3000)
        );
        assert_eq!(
            decode_lookup(&array(vec![bulk("miss"), num(1), num(1)])),
            Some(Lookup::Miss { granted: true })
        );
        assert_eq!(
            decode_lookup(&array(vec![bulk("held"), num(1), num(0)])),
            Some(Lookup::Held)
        );
        assert_eq!(
            decode_lookup(&array(vec![bulk("hit"), num(1), num(0)])),
            None
        );
        assert_eq!(decode_lookup(&bulk("hit")), None);
    }

    #[test]
    fn peek_replies_are_judged_like_the_lookup_script() {
        // TIME: 2 s and 500,000 µs, so now = 2,500 ms.
        let time = || array(vec![bulk("2"), bulk("500000")]);
        let entry = |fresh: &'static str, stale: &'static str| {
            array(vec![
                bulk("v"),
                bulk("text/plain"),
                bulk("1000"),
                bulk(fresh),
                bulk(stale),
                bulk("\"e\""),
            ])
        };
        let Some(Lookup::Hit { entry: hit, now }) = decode_peek(time(), entry("2501", "3000"))
        else {
            panic!("not a hit")
        };
        assert_eq!(
            (now, &hit.data[..], hit.fresh_until),
            (2_500, &b"v"[..], 2_501)
        );
        assert!(matches!(
            decode_peek(time(), entry("2500", "3000")),
            Some(Lookup::Stale {
                granted: false,
                now: 2_500,
                ..
            })
        ));
        assert_eq!(
            decode_peek(time(), entry("2000", "2500")),
            Some(Lookup::Miss { granted: false })
        );
        let missing = array((0..6).map(|_| Frame::Null).collect());
        assert_eq!(
            decode_peek(time(), missing),
            Some(Lookup::Miss { granted: false })
        );
        assert_eq!(decode_peek(time(), bulk("x")), None);
        assert_eq!(decode_peek(time(), entry("soon", "3000")), None);
    }

    #[test]
    fn scan_and_log_replies() {
        let reply = array(vec![bulk("17"), array(vec![bulk("a"), bulk("b")])]);
        let (cursor, items) = scan_reply(reply).unwrap();
        assert_eq!(&cursor[..], b"17");
        assert_eq!(items.len(), 2);
        let view = decode_log_view(array(vec![num(3), num(9), array(vec![bulk("t:a")])])).unwrap();
        assert_eq!(view.cut, 3);
        assert_eq!(view.seq, 9);
        assert_eq!(&view.records[0][..], b"t:a");
    }

    #[test]
    fn eval_commands() {
        let script = Script {
            source: "return 1",
            sha: "abc".into(),
        };
        let by_sha = eval_command(&script, true, vec!["k".into()], vec!["a".into()]);
        assert_eq!(
            by_sha,
            ["EVALSHA", "abc", "1", "k", "a"].map(|s| Bytes::from_static(s.as_bytes()))
        );
        let by_source = eval_command(&script, false, vec![], vec![]);
        assert_eq!(
            by_source,
            ["EVAL", "return 1", "0"].map(|s| Bytes::from_static(s.as_bytes()))
        );
    }
}
