//! Carries out routing plans: the layer between the HTTP handlers and the backend.
//!
//! On a single node (or Sentinel) every command goes straight to Redis. On a
//! cluster each command is planned from the server's key specifications
//! ([`crate::routing`]) and sent to the owner of its slot, fanned out to every
//! primary, split by slot, or refused with Redis' own `CROSSSLOT` text.

use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;

use crate::backend::{Backend, BackendError, Target, TransactionOutcome};
use crate::policy::prepare::SCAN_WITH_TYPE_SCRIPT;
use crate::policy::CommandTable;
use crate::protocol::reply::{self, Frame};
use crate::routing::plan::{plan, plan_for_keys, split_groups, Merge, Split, CROSSSLOT_TEXT};
use crate::routing::Plan;

/// Highest number of primaries a composite SCAN cursor can address.
const SCAN_NODE_RADIX: u64 = 1024;

/// Prefix of the `upstash-sync-token` values restash issues for read-your-writes.
pub const SYNC_TOKEN_PREFIX: &str = "restash-w";

/// No write seen.
const NO_SLOT: u32 = u32::MAX;
/// Writes on more than one shard: every read goes to a primary (token `restash-w*`).
const EVERY_SHARD: u32 = u32::MAX - 1;

/// Runs commands on the deployment behind `backend`.
pub struct Dispatch<'a> {
    backend: &'a Backend,
    table: Option<&'a CommandTable>,
    /// Where the caller wrote before, from the sync token it echoed: a slot,
    /// [`EVERY_SHARD`] or [`NO_SLOT`].
    last_write: u32,
    /// Where this request wrote, on top of `last_write` once it writes: a slot (of the
    /// one shard written), [`EVERY_SHARD`] or [`NO_SLOT`] (no write yet).
    wrote: AtomicU32,
}

impl<'a> Dispatch<'a> {
    /// A dispatcher over `backend`, planning with the server's command table.
    pub fn new(backend: &'a Backend, table: Option<&'a CommandTable>) -> Self {
        Dispatch {
            backend,
            table,
            last_write: NO_SLOT,
            wrote: AtomicU32::new(NO_SLOT),
        }
    }

    /// Takes the caller's `upstash-sync-token`: with replica reads on, reads on the
    /// shard of the caller's last write go to its primary (read-your-writes).
    pub fn with_sync_token(mut self, token: Option<&str>) -> Self {
        self.last_write = match token.and_then(|t| t.strip_prefix(SYNC_TOKEN_PREFIX)) {
            Some("*") => EVERY_SHARD,
            Some(slot) => slot
                .parse::<u16>()
                .ok()
                .filter(|slot| *slot < 16384)
                .map_or(NO_SLOT, u32::from),
            None => NO_SLOT,
        };
        self
    }

    /// The sync token to answer: a new one when this request wrote, else `None`.
    pub fn sync_token(&self) -> Option<String> {
        match self.wrote.load(Ordering::Relaxed) {
            NO_SLOT => None,
            EVERY_SHARD => Some(format!("{SYNC_TOKEN_PREFIX}*")),
            slot => Some(format!("{SYNC_TOKEN_PREFIX}{slot}")),
        }
    }

    /// Remembers a write to `slot`, on top of the caller's earlier ones: writes on two
    /// shards make every later read of the caller go to a primary.
    fn remember_write(&self, slot: u16) {
        let _ = self
            .wrote
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                let before = if now == NO_SLOT { self.last_write } else { now };
                Some(match before {
                    NO_SLOT => u32::from(slot),
                    EVERY_SHARD => EVERY_SHARD,
                    other => match u16::try_from(other) {
                        Ok(other) if self.backend.same_shard(other, slot) => u32::from(slot),
                        _ => EVERY_SHARD,
                    },
                })
            });
    }

    /// Where a single-slot command goes: replicas serve reads unless the caller
    /// (or this request) wrote to the same shard; writes are remembered.
    fn slot_target(&self, args: &[Bytes], slot: u16) -> Target {
        if !self.backend.reads_from_replicas() {
            return Target::Slot(slot);
        }
        let read_only = self
            .table
            .and_then(|t| t.lookup_args(args))
            .is_some_and(|info| info.has_flag("readonly"));
        if !read_only {
            self.remember_write(slot);
            return Target::Slot(slot);
        }
        let wrote = match self.wrote.load(Ordering::Relaxed) {
            NO_SLOT => self.last_write,
            slot => slot,
        };
        let on_primary = wrote == EVERY_SHARD
            || u16::try_from(wrote).is_ok_and(|w| self.backend.same_shard(w, slot));
        if on_primary {
            Target::Slot(slot)
        } else {
            Target::Replica(slot)
        }
    }

    fn plan(&self, args: &[Bytes]) -> Plan {
        if !self.backend.is_cluster() {
            return Plan::AnyNode;
        }
        let info = self.table.and_then(|t| t.lookup_args(args));
        plan(args, info, SCAN_WITH_TYPE_SCRIPT.as_bytes())
    }

    /// Runs one command and returns its reply (Redis errors included).
    pub async fn one(&self, args: Vec<Bytes>) -> Result<Frame, BackendError> {
        let plan = self.plan(&args);
        self.run_planned(args, plan).await
    }

    async fn run_planned(&self, args: Vec<Bytes>, plan: Plan) -> Result<Frame, BackendError> {
        match plan {
            Plan::AnyNode if !self.backend.is_cluster() => {
                self.backend.execute_on(args, Target::Default).await
            }
            Plan::AnyNode => self.backend.execute_on(args, Target::AnyNode).await,
            Plan::Slot(slot) => {
                let target = self.slot_target(&args, slot);
                self.backend.execute_on(args, target).await
            }
            Plan::CrossSlot => Ok(reply::error(CROSSSLOT_TEXT)),
            Plan::AskServer => match self.resolve_keys(&args).await? {
                Ok(plan) => Box::pin(self.run_planned(args, plan)).await,
                Err(error) => Ok(error),
            },
            Plan::FanOut(merge) => self.fan_out(args, merge).await,
            Plan::Split(split) => self.split(args, split).await,
            Plan::Scan { cursor_at } => self.scan(args, cursor_at).await,
        }
    }

    /// Runs commands in order, one reply each. Plain commands go out as one
    /// pipeline; fan-outs, splits and scans run in their place in the order.
    pub async fn many(&self, commands: Vec<Vec<Bytes>>) -> Result<Vec<Frame>, BackendError> {
        if !self.backend.is_cluster() {
            return self.backend.pipeline(commands).await;
        }
        let mut replies: Vec<Option<Frame>> = Vec::with_capacity(commands.len());
        let mut batch: Vec<(Vec<Bytes>, Target)> = Vec::new();
        let mut batch_slots: Vec<usize> = Vec::new();
        for args in commands {
            let plan = self.plan(&args);
            let target = match plan {
                Plan::AnyNode => Some(Target::AnyNode),
                Plan::Slot(slot) => Some(self.slot_target(&args, slot)),
                _ => None,
            };
            match (target, plan) {
                (Some(target), _) => {
                    batch_slots.push(replies.len());
                    replies.push(None);
                    batch.push((args, target));
                }
                (None, Plan::CrossSlot) => replies.push(Some(reply::error(CROSSSLOT_TEXT))),
                (None, plan) => {
                    self.flush(&mut batch, &mut batch_slots, &mut replies)
                        .await?;
                    replies.push(Some(self.run_planned(args, plan).await?));
                }
            }
        }
        self.flush(&mut batch, &mut batch_slots, &mut replies)
            .await?;
        Ok(replies
            .into_iter()
            .map(|r| r.unwrap_or(Frame::Null))
            .collect())
    }

    async fn flush(
        &self,
        batch: &mut Vec<(Vec<Bytes>, Target)>,
        slots: &mut Vec<usize>,
        replies: &mut [Option<Frame>],
    ) -> Result<(), BackendError> {
        if batch.is_empty() {
            return Ok(());
        }
        let frames = self.backend.pipeline_on(std::mem::take(batch)).await?;
        for (index, frame) in slots.drain(..).zip(frames) {
            replies[index] = Some(frame);
        }
        Ok(())
    }

    /// Runs a transaction. On a cluster every key must live in one slot.
    pub async fn transaction(
        &self,
        commands: Vec<Vec<Bytes>>,
    ) -> Result<TransactionOutcome, BackendError> {
        if !self.backend.is_cluster() {
            return self.backend.transaction(commands, Target::Default).await;
        }
        let mut slot: Option<u16> = None;
        for args in &commands {
            let mut plan = self.plan(args);
            if plan == Plan::AskServer {
                plan = match self.resolve_keys(args).await? {
                    Ok(plan) => plan,
                    Err(error) => {
                        return Ok(TransactionOutcome::Discarded(
                            reply::error_text(&error).unwrap_or_default(),
                        ))
                    }
                };
            }
            match plan {
                Plan::AnyNode => {}
                Plan::Slot(s) if slot.is_none() || slot == Some(s) => slot = Some(s),
                Plan::Slot(_) | Plan::CrossSlot | Plan::Split(_) => {
                    return Ok(TransactionOutcome::Discarded(CROSSSLOT_TEXT.to_string()))
                }
                Plan::FanOut(_) | Plan::Scan { .. } | Plan::AskServer => {
                    return Ok(TransactionOutcome::Discarded(format!(
                        "ERR '{}' needs every primary of the cluster and cannot run inside /multi-exec",
                        String::from_utf8_lossy(&args[0]).to_ascii_lowercase()
                    )))
                }
            }
        }
        if let Some(slot) = slot {
            // Transactions run on the primary; remember the write for read-your-writes.
            self.remember_write(slot);
        }
        let target = slot.map_or(Target::AnyNode, Target::Slot);
        self.backend.transaction(commands, target).await
    }

    /// Asks the server which arguments are keys (`COMMAND GETKEYS`), then plans.
    /// `Err` carries Redis' error reply (for example a syntax error) to answer as is.
    async fn resolve_keys(&self, args: &[Bytes]) -> Result<Result<Plan, Frame>, BackendError> {
        let mut ask = Vec::with_capacity(args.len() + 2);
        ask.push(Bytes::from_static(b"COMMAND"));
        ask.push(Bytes::from_static(b"GETKEYS"));
        ask.extend(args.iter().cloned());
        let reply = self.backend.execute_on(ask, Target::AnyNode).await?;
        match reply {
            Frame::Array { data, .. } => {
                let keys: Vec<Bytes> = data.iter().filter_map(frame_bytes).collect();
                Ok(Ok(plan_for_keys(keys.iter().map(|k| k.as_ref()), None)))
            }
            // "The command has no key arguments"
            other if reply::error_text(&other).is_some_and(|t| t.contains("no key arguments")) => {
                Ok(Ok(Plan::AnyNode))
            }
            other => Ok(Err(other)),
        }
    }

    async fn fan_out(&self, args: Vec<Bytes>, merge: Merge) -> Result<Frame, BackendError> {
        let nodes = self.backend.primaries().await?;
        let batch = nodes
            .into_iter()
            .map(|node| (args.clone(), Target::Node(node)))
            .collect();
        let replies = self.backend.pipeline_on(batch).await?;
        Ok(merge_replies(replies, merge))
    }

    async fn split(&self, args: Vec<Bytes>, split: Split) -> Result<Frame, BackendError> {
        let groups = split_groups(&args, split);
        let batch = groups
            .iter()
            .map(|(slot, members)| {
                let mut part = Vec::with_capacity(members.len() * 2 + 1);
                part.push(args[0].clone());
                for &i in members {
                    part.push(args[i].clone());
                    if split == Split::Pairs {
                        if let Some(value) = args.get(i + 1) {
                            part.push(value.clone());
                        }
                    }
                }
                (part, self.slot_target(&args, *slot))
            })
            .collect();
        let replies = self.backend.pipeline_on(batch).await?;
        if let Some(error) = replies.iter().find(|r| reply::error_text(r).is_some()) {
            return Ok(error.clone());
        }
        Ok(match split {
            Split::Count => merge_replies(replies, Merge::Sum),
            Split::Pairs => reply_ok(),
            Split::Values => {
                let keys = args.len() - 1;
                let mut values = vec![Frame::Null; keys];
                for ((_, members), reply) in groups.iter().zip(replies) {
                    if let Frame::Array { data, .. } = reply {
                        for (&i, value) in members.iter().zip(data) {
                            values[i - 1] = value;
                        }
                    }
                }
                reply::array(values)
            }
        })
    }

    /// One step of a scan over every primary. The composite cursor is
    /// `node_cursor * 1024 + node_index`, so `0` starts and ends a full iteration.
    async fn scan(&self, mut args: Vec<Bytes>, cursor_at: usize) -> Result<Frame, BackendError> {
        let nodes = self.backend.primaries().await?;
        let composite = args
            .get(cursor_at)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u64>().ok());
        let Some(composite) = composite else {
            return Ok(reply::error("ERR invalid cursor"));
        };
        let index = (composite % SCAN_NODE_RADIX) as usize;
        let Some(node) = nodes.get(index).cloned() else {
            return Ok(reply::error("ERR invalid cursor"));
        };
        args[cursor_at] = Bytes::from((composite / SCAN_NODE_RADIX).to_string());
        let reply = self.backend.execute_on(args, Target::Node(node)).await?;
        let Frame::Array { mut data, .. } = reply else {
            return Ok(reply);
        };
        let node_cursor = data
            .first()
            .and_then(frame_bytes)
            .and_then(|c| String::from_utf8_lossy(&c).parse::<u64>().ok())
            .unwrap_or(0);
        let next = if node_cursor != 0 {
            match node_cursor.checked_mul(SCAN_NODE_RADIX) {
                Some(c) => c + index as u64,
                None => return Ok(reply::error("ERR cursor out of range")),
            }
        } else if index + 1 < nodes.len() {
            (index + 1) as u64
        } else {
            0
        };
        if let Some(first) = data.first_mut() {
            *first = reply::bulk(next.to_string());
        }
        Ok(reply::array(data))
    }
}

/// Merges the answers of every primary.
pub fn merge_replies(replies: Vec<Frame>, merge: Merge) -> Frame {
    if let Some(error) = replies.iter().find(|r| reply::error_text(r).is_some()) {
        return error.clone();
    }
    match merge {
        Merge::Sum => Frame::Number {
            data: replies
                .iter()
                .map(|r| match r {
                    Frame::Number { data, .. } => *data,
                    _ => 0,
                })
                .sum(),
            attributes: None,
        },
        Merge::Concat => reply::array(
            replies
                .into_iter()
                .flat_map(|r| match r {
                    Frame::Array { data, .. } => data,
                    _ => Vec::new(),
                })
                .collect(),
        ),
        Merge::AnyNonNil => {
            let mut keys: Vec<Frame> = replies.into_iter().filter(|r| *r != Frame::Null).collect();
            match keys.len() {
                0 => Frame::Null,
                n => keys.swap_remove(rand::random::<u32>() as usize % n),
            }
        }
        Merge::AllOk | Merge::First => replies.into_iter().next().unwrap_or_else(reply_ok),
        Merge::AnyExists => {
            let mut result: Option<Vec<Frame>> = None;
            for r in replies {
                let Frame::Array { data, .. } = r else {
                    continue;
                };
                result = Some(match result {
                    None => data,
                    Some(acc) => acc
                        .into_iter()
                        .zip(data)
                        .map(|(a, b)| if a == int(1) { a } else { b })
                        .collect(),
                });
            }
            reply::array(result.unwrap_or_default())
        }
    }
}

fn reply_ok() -> Frame {
    Frame::SimpleString {
        data: Bytes::from_static(b"OK"),
        attributes: None,
    }
}

fn int(n: i64) -> Frame {
    Frame::Number {
        data: n,
        attributes: None,
    }
}

fn frame_bytes(frame: &Frame) -> Option<Bytes> {
    match frame {
        Frame::BlobString { data, .. } | Frame::SimpleString { data, .. } => Some(data.clone()),
        _ => None,
    }
}
