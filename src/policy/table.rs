//! The command table, parsed from the server's `COMMAND` reply at start-up.
//!
//! ```text
//! COMMAND -> [[name, arity, [flags], first_key, last_key, step, [acl categories],
//!              [tips], [key specs], [subcommands (same shape)]], …]
//! ```
//! Container commands (`SCRIPT`, `CLIENT`, `CONFIG`, …) carry their policy on
//! their subcommands, named `script|load`.

use crate::protocol::reply::Frame;
use crate::protocol::Command;
use crate::routing::KeySpec;

/// The table's maps, looked up for every command: a fast seeded hasher instead of
/// SipHash (issue 7). Their keys come from the server's `COMMAND` reply.
pub type HashMap<K, V> = foldhash::HashMap<K, V>;

/// Commands a read-only token may run although they are not in `@read`.
const READ_ONLY_EXTRAS: &[&str] = &["ping", "echo", "eval_ro", "evalsha_ro", "fcall_ro"];

/// One command (or subcommand) as the server describes it.
#[derive(Debug, Clone, Default)]
pub struct CommandInfo {
    /// Lower-case name; subcommands are `container|sub`.
    pub name: String,
    /// Redis arity: positive is exact, negative is a minimum.
    pub arity: i64,
    /// Command flags such as `write`, `readonly`, `blocking`.
    pub flags: Vec<String>,
    /// ACL categories such as `@read`, `@dangerous`.
    pub acl_categories: Vec<String>,
    /// Key specifications, for slot routing.
    pub key_specs: Vec<KeySpec>,
    /// Subcommands by lower-case subcommand name.
    pub subcommands: HashMap<String, CommandInfo>,
    /// Precomputed: may a read-only token run it?
    pub read_only_allowed: bool,
}

impl CommandInfo {
    /// Whether the command has the given flag (`blocking`, `write`, …).
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// Why a `COMMAND` reply could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The reply is not the documented shape.
    #[error("unexpected COMMAND reply: {0}")]
    Shape(&'static str),
}

/// The server's commands, by lower-case name.
#[derive(Debug, Clone, Default)]
pub struct CommandTable {
    commands: HashMap<String, CommandInfo>,
}

impl CommandTable {
    /// Parses the reply of `COMMAND`.
    pub fn from_frame(frame: &Frame) -> Result<Self, TableError> {
        let entries = as_array(frame).ok_or(TableError::Shape("not an array"))?;
        let mut commands = HashMap::with_capacity_and_hasher(entries.len(), Default::default());
        for entry in entries {
            let info = parse_entry(entry)?;
            commands.insert(info.name.clone(), info);
        }
        Ok(CommandTable { commands })
    }

    /// Number of top-level commands.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The entry for a command, resolving `CONTAINER sub` to the subcommand entry.
    pub fn lookup(&self, command: &Command) -> Option<&CommandInfo> {
        self.lookup_named(&command.name_lowercase(), command)
    }

    /// [`CommandTable::lookup`] for a caller that already holds the lower-cased name.
    pub fn lookup_named(&self, name: &str, command: &Command) -> Option<&CommandInfo> {
        let top = self.named(name)?;
        if top.subcommands.is_empty() {
            return Some(top);
        }
        let sub = command.arg_lowercase(1)?;
        top.subcommands.get(&format!("{}|{}", top.name, sub))
    }

    /// The entry of the top-level command `name` (lower case), subcommands unresolved.
    pub fn named(&self, name: &str) -> Option<&CommandInfo> {
        self.commands.get(name)
    }

    /// Whether the server has a top-level command named `name` (lower case).
    pub fn has_command(&self, name: &str) -> bool {
        self.commands.contains_key(name)
    }

    /// The entry for a command given as raw arguments (name first).
    pub fn lookup_args(&self, args: &[bytes::Bytes]) -> Option<&CommandInfo> {
        let name = std::str::from_utf8(args.first()?)
            .ok()?
            .to_ascii_lowercase();
        let top = self.commands.get(&name)?;
        if top.subcommands.is_empty() {
            return Some(top);
        }
        let sub = std::str::from_utf8(args.get(1)?).ok()?.to_ascii_lowercase();
        top.subcommands.get(&format!("{}|{}", top.name, sub))
    }

    /// Whether a read-only token may run `command`. Unknown commands are refused.
    pub fn read_only_allows(&self, command: &Command) -> bool {
        self.lookup(command).is_some_and(|c| c.read_only_allowed)
    }
}

fn parse_entry(entry: &Frame) -> Result<CommandInfo, TableError> {
    let fields = as_array(entry).ok_or(TableError::Shape("entry is not an array"))?;
    let name = fields
        .first()
        .and_then(as_text)
        .ok_or(TableError::Shape("entry without a name"))?
        .to_ascii_lowercase();
    let arity = match fields.get(1) {
        Some(Frame::Number { data, .. }) => *data,
        _ => return Err(TableError::Shape("entry without an arity")),
    };
    let flags = fields.get(2).map(text_list).unwrap_or_default();
    let acl_categories = fields.get(6).map(text_list).unwrap_or_default();
    let key_specs = match fields.get(8) {
        Some(Frame::Array { data, .. }) => data.iter().filter_map(KeySpec::from_frame).collect(),
        _ => Vec::new(),
    };
    let mut subcommands = HashMap::default();
    if let Some(subs) = fields.get(9).and_then(as_array) {
        for sub in subs {
            let info = parse_entry(sub)?;
            subcommands.insert(info.name.clone(), info);
        }
    }
    let read_only_allowed = READ_ONLY_EXTRAS.contains(&name.as_str())
        || (acl_categories.iter().any(|c| c == "@read")
            && !acl_categories.iter().any(|c| c == "@dangerous"));
    Ok(CommandInfo {
        name,
        arity,
        flags,
        acl_categories,
        key_specs,
        subcommands,
        read_only_allowed,
    })
}

fn as_array(frame: &Frame) -> Option<&Vec<Frame>> {
    match frame {
        Frame::Array { data, .. } => Some(data),
        _ => None,
    }
}

fn as_text(frame: &Frame) -> Option<String> {
    match frame {
        Frame::SimpleString { data, .. } | Frame::BlobString { data, .. } => {
            Some(String::from_utf8_lossy(data).into_owned())
        }
        _ => None,
    }
}

fn text_list(frame: &Frame) -> Vec<String> {
    as_array(frame)
        .map(|items| items.iter().filter_map(as_text).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::reply::{array, bulk};

    fn simple(s: &str) -> Frame {
        Frame::SimpleString {
            data: bytes::Bytes::copy_from_slice(s.as_bytes()),
            attributes: None,
        }
    }

    fn entry(name: &str, arity: i64, acl: &[&str], subs: Vec<Frame>) -> Frame {
        array(vec![
            bulk(name.to_string()),
            Frame::Number {
                data: arity,
                attributes: None,
            },
            array(vec![simple("readonly")]),
            Frame::Number {
                data: 1,
                attributes: None,
            },
            Frame::Number {
                data: 1,
                attributes: None,
            },
            Frame::Number {
                data: 1,
                attributes: None,
            },
            array(acl.iter().map(|c| simple(c)).collect()),
            array(vec![]),
            array(vec![]),
            array(subs),
        ])
    }

    #[test]
    fn read_only_policy_from_acl_categories() {
        let reply = array(vec![
            entry("get", 2, &["@read", "@string", "@fast"], vec![]),
            entry("set", -3, &["@write", "@string"], vec![]),
            entry(
                "keys",
                2,
                &["@keyspace", "@read", "@slow", "@dangerous"],
                vec![],
            ),
            entry("ping", -1, &["@fast", "@connection"], vec![]),
            entry(
                "script",
                -2,
                &["@slow"],
                vec![
                    entry("script|exists", -3, &["@slow", "@scripting"], vec![]),
                    entry("script|load", 3, &["@slow", "@scripting"], vec![]),
                ],
            ),
            entry(
                "object",
                -2,
                &["@slow"],
                vec![entry("object|encoding", 3, &["@keyspace", "@read"], vec![])],
            ),
        ]);
        let table = CommandTable::from_frame(&reply).unwrap();
        let allows = |parts: &[&str]| {
            table.read_only_allows(&Command::from_parts(parts.iter().map(|s| s.to_string())))
        };
        assert!(allows(&["GET", "k"]));
        assert!(!allows(&["SET", "k", "v"]));
        assert!(!allows(&["KEYS", "*"]));
        assert!(allows(&["ping"]));
        assert!(!allows(&["SCRIPT", "LOAD", "return 1"]));
        assert!(allows(&["object", "ENCODING", "k"]));
        assert!(!allows(&["object", "freq", "k"]));
        assert!(!allows(&["nosuchcommand"]));
        assert_eq!(table.len(), 6);
    }
}
