//! What a command means on a cluster.
//!
//! | command                                   | plan                                  |
//! |-------------------------------------------|---------------------------------------|
//! | keys all in one slot                      | [`Plan::Slot`]                        |
//! | no keys                                   | [`Plan::AnyNode`]                     |
//! | `DBSIZE`, `KEYS`, `RANDOMKEY`, `FLUSHDB`, `FLUSHALL`, `SCRIPT LOAD/FLUSH/EXISTS`, `FUNCTION LOAD/FLUSH/DELETE` | [`Plan::FanOut`] |
//! | `SCAN` (and `SCAN … WITHTYPE`)            | [`Plan::Scan`] with a composite cursor |
//! | `MGET`, `MSET`, `DEL`, `UNLINK`, `EXISTS`, `TOUCH` across slots | [`Plan::Split`] |
//! | any other command across slots            | [`Plan::CrossSlot`]                   |
//! | keys the specs cannot tell                | [`Plan::AskServer`] (`COMMAND GETKEYS`) |

use bytes::Bytes;

use super::keys::key_positions;
use super::slot::key_slot;
use crate::policy::table::CommandInfo;

/// Redis' own text for a cross-slot command.
pub const CROSSSLOT_TEXT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// How the answers of every primary are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Integers added up (`DBSIZE`).
    Sum,
    /// Arrays concatenated (`KEYS`).
    Concat,
    /// One of the non-nil answers, chosen at random (`RANDOMKEY`: every shard's keys
    /// can come up).
    AnyNonNil,
    /// `OK` when every node answered `OK` (`FLUSHDB`, `SCRIPT FLUSH`).
    AllOk,
    /// The first node's answer, every node having succeeded (`SCRIPT LOAD`).
    First,
    /// Element-wise OR of 0/1 arrays (`SCRIPT EXISTS`: cached on some primary, as after an
    /// EVAL; EVALSHA elsewhere answers NOSCRIPT and clients fall back to EVAL).
    AnyExists,
}

/// How a multi-key command is split by slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `MGET`: values reassembled in the caller's order.
    Values,
    /// `MSET`: key/value pairs; `OK` when every part succeeded (not atomic).
    Pairs,
    /// `DEL`, `UNLINK`, `EXISTS`, `TOUCH`: integers added up.
    Count,
}

/// Where and how a command runs on a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Any node may answer.
    AnyNode,
    /// The node that owns this slot.
    Slot(u16),
    /// Keys span slots and the command cannot be split: refuse with [`CROSSSLOT_TEXT`].
    CrossSlot,
    /// The key specs are incomplete: ask the server for the keys, then route.
    AskServer,
    /// Every primary, answers merged.
    FanOut(Merge),
    /// Split by slot; each part's keys are the argument indexes listed.
    Split(Split),
    /// A resumable scan over every primary; the cursor is the argument at this index.
    Scan {
        /// Index of the cursor argument.
        cursor_at: usize,
    },
}

/// Decides the plan for `args` (already prepared) given the command's table entry.
/// `scan_script` is the Lua body restash uses for `SCAN … WITHTYPE`.
pub fn plan(args: &[Bytes], info: Option<&CommandInfo>, scan_script: &[u8]) -> Plan {
    let name = args
        .first()
        .map(|n| String::from_utf8_lossy(n).to_ascii_lowercase())
        .unwrap_or_default();
    let sub = args
        .get(1)
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    match (name.as_str(), sub.as_deref()) {
        ("dbsize", _) => return Plan::FanOut(Merge::Sum),
        ("keys", _) => return Plan::FanOut(Merge::Concat),
        ("randomkey", _) => return Plan::FanOut(Merge::AnyNonNil),
        ("flushdb" | "flushall", _) => return Plan::FanOut(Merge::AllOk),
        ("scan", _) => return Plan::Scan { cursor_at: 1 },
        ("eval_ro", _) if args.get(1).is_some_and(|s| s.as_ref() == scan_script) => {
            return Plan::Scan { cursor_at: 3 }
        }
        ("script", Some("load")) | ("function", Some("load")) => return Plan::FanOut(Merge::First),
        ("script", Some("flush")) | ("function", Some("flush" | "delete" | "restore")) => {
            return Plan::FanOut(Merge::AllOk)
        }
        ("script", Some("exists")) => return Plan::FanOut(Merge::AnyExists),
        // They name a slot, not a key: only its owner knows its keys.
        ("cluster", Some("countkeysinslot" | "getkeysinslot")) => {
            if let Some(slot) = args
                .get(2)
                .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u16>().ok())
                .filter(|slot| *slot < 16384)
            {
                return Plan::Slot(slot);
            }
        }
        _ => {}
    }
    let Some(info) = info else {
        // Unknown to this server: any node answers with Redis' own error.
        return Plan::AnyNode;
    };
    let Some(positions) = key_positions(&info.key_specs, args) else {
        return Plan::AskServer;
    };
    let split = match name.as_str() {
        "mget" => Some(Split::Values),
        // A key without its value: split, the complete pairs would be written before
        // the last part failed. Whole, Redis refuses it: CROSSSLOT, or its arity error
        // when every key shares a slot.
        "mset" if args.len().is_multiple_of(2) => return Plan::AnyNode,
        "mset" => Some(Split::Pairs),
        "del" | "unlink" | "exists" | "touch" => Some(Split::Count),
        _ => None,
    };
    plan_for_keys(positions.iter().map(|i| args[*i].as_ref()), split)
}

/// The plan for a command whose keys are known.
pub fn plan_for_keys<'a>(keys: impl Iterator<Item = &'a [u8]>, split: Option<Split>) -> Plan {
    let mut slot = None;
    for key in keys {
        let this = key_slot(key);
        match slot {
            None => slot = Some(this),
            Some(s) if s == this => {}
            Some(_) => return split.map_or(Plan::CrossSlot, Plan::Split),
        }
    }
    slot.map_or(Plan::AnyNode, Plan::Slot)
}

/// Groups argument indexes of a split command by slot, keeping the caller's order
/// within each group. For `Pairs` each key index stands for the key and its value.
pub fn split_groups(args: &[Bytes], split: Split) -> Vec<(u16, Vec<usize>)> {
    let step = if split == Split::Pairs { 2 } else { 1 };
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let slot = key_slot(&args[i]);
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, members)) => members.push(i),
            None => groups.push((slot, vec![i])),
        }
        i += step;
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::keys::{BeginSearch, FindKeys, KeySpec};

    fn args(parts: &[&str]) -> Vec<Bytes> {
        parts.iter().map(|s| Bytes::from(s.to_string())).collect()
    }

    fn info(name: &str, last_key: i64, step: usize) -> CommandInfo {
        CommandInfo {
            name: name.to_string(),
            key_specs: vec![KeySpec {
                begin: BeginSearch::Index(1),
                find: FindKeys::Range {
                    last_key,
                    key_step: step,
                    limit: 0,
                },
                incomplete: false,
            }],
            ..CommandInfo::default()
        }
    }

    #[test]
    fn plans() {
        let get = info("get", 0, 1);
        assert_eq!(
            plan(&args(&["GET", "foo"]), Some(&get), b""),
            Plan::Slot(12182)
        );
        // Numbers hash as bytes.
        assert_eq!(
            plan(&args(&["GET", "123"]), Some(&get), b""),
            Plan::Slot(5970)
        );
        let del = info("del", -1, 1);
        assert_eq!(
            plan(&args(&["DEL", "foo", "bar"]), Some(&del), b""),
            Plan::Split(Split::Count)
        );
        assert_eq!(
            plan(&args(&["DEL", "{a}1", "{a}2"]), Some(&del), b""),
            Plan::Slot(key_slot(b"a"))
        );
        let sunion = info("sunion", -1, 1);
        assert_eq!(
            plan(&args(&["SUNION", "foo", "bar"]), Some(&sunion), b""),
            Plan::CrossSlot
        );
        assert_eq!(
            plan(&args(&["PING"]), Some(&CommandInfo::default()), b""),
            Plan::AnyNode
        );
        assert_eq!(
            plan(&args(&["DBSIZE"]), None, b""),
            Plan::FanOut(Merge::Sum)
        );
        assert_eq!(
            plan(&args(&["script", "LOAD", "x"]), None, b""),
            Plan::FanOut(Merge::First)
        );
        assert_eq!(
            plan(&args(&["EVAL_RO", "S", "0", "0"]), None, b"S"),
            Plan::Scan { cursor_at: 3 }
        );
    }

    #[test]
    fn slot_commands_go_to_the_slot_s_owner() {
        for sub in ["COUNTKEYSINSLOT", "GETKEYSINSLOT"] {
            assert_eq!(
                plan(&args(&["CLUSTER", sub, "12182", "10"]), None, b""),
                Plan::Slot(12182)
            );
            assert_eq!(
                plan(&args(&["CLUSTER", sub, "16384"]), None, b""),
                Plan::AnyNode
            );
        }
    }

    #[test]
    fn an_mset_missing_a_value_is_never_split() {
        let mset = info("mset", -1, 2);
        assert_eq!(
            plan(&args(&["MSET", "foo", "1", "bar", "2"]), Some(&mset), b""),
            Plan::Split(Split::Pairs)
        );
        assert_eq!(
            plan(&args(&["MSET", "foo", "1", "bar"]), Some(&mset), b""),
            Plan::AnyNode
        );
    }

    #[test]
    fn groups_keep_order() {
        let groups = split_groups(
            &args(&["MSET", "foo", "1", "bar", "2", "{foo}x", "3"]),
            Split::Pairs,
        );
        assert_eq!(groups, vec![(12182, vec![1, 5]), (5061, vec![3])]);
    }
}
