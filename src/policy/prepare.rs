//! Turns a parsed [`Command`] into what is sent to Redis, or refuses it.
//!
//! Order of checks: command-name validity, connection-state commands (refused on
//! a shared connection), the read-only policy, then rewrites: blocking commands
//! run as their non-blocking forms (Upstash answers them as if they could not
//! wait), and Lua scripts lose Upstash's `allow-key-locking` flag.

use std::time::Duration;

use bytes::Bytes;

use super::scripts::ScriptRegistry;
use super::table::CommandTable;
use crate::protocol::reply::{self, Frame};
use crate::protocol::Command;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every command restash allows.
    Standard,
    /// Commands in Redis' `@read` category that are not `@dangerous`, plus a few extras.
    ReadOnly,
}

/// A change applied to Redis' reply before it is encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyFix {
    /// Send the reply as it is.
    None,
    /// Replace a successful reply (SCRIPT LOAD answers the client's SHA).
    Replace(Frame),
    /// `LMPOP` reply `[key, [value]]` to `BLPOP`'s `[key, value]`.
    ListPopPair,
    /// `ZMPOP` reply `[key, [[member, score]]]` to `BZPOPMIN`'s `[key, member, score]`.
    SortedSetPopTriple,
    /// `ZRANGE … LIMIT` by rank (an Upstash extension): keep `count` items from
    /// `offset` (a negative count keeps the rest); items are pairs WITHSCORES.
    Slice {
        /// Items to skip.
        offset: usize,
        /// Items to keep; negative for all.
        count: i64,
        /// Whether each item is a member and a score.
        pairs: bool,
    },
}

impl ReplyFix {
    /// Applies the fix; error replies always pass through unchanged.
    pub fn apply(&self, frame: Frame) -> Frame {
        if reply::error_text(&frame).is_some() {
            return frame;
        }
        match self {
            ReplyFix::None => frame,
            ReplyFix::Replace(replacement) => replacement.clone(),
            ReplyFix::ListPopPair => match frame {
                Frame::Array { mut data, .. } if data.len() == 2 => {
                    let values = data.pop();
                    let key = data.pop();
                    match (key, values) {
                        (Some(key), Some(Frame::Array { data: mut vals, .. }))
                            if !vals.is_empty() =>
                        {
                            reply::array(vec![key, vals.swap_remove(0)])
                        }
                        _ => Frame::Null,
                    }
                }
                other => other,
            },
            ReplyFix::Slice {
                offset,
                count,
                pairs,
            } => match frame {
                Frame::Array { data, .. } => {
                    let width = if *pairs { 2 } else { 1 };
                    let take =
                        usize::try_from(*count).map_or(usize::MAX, |c| c.saturating_mul(width));
                    reply::array(
                        data.into_iter()
                            .skip(offset.saturating_mul(width))
                            .take(take)
                            .collect(),
                    )
                }
                other => other,
            },
            ReplyFix::SortedSetPopTriple => match frame {
                Frame::Array { mut data, .. } if data.len() == 2 => {
                    let pairs = data.pop();
                    let key = data.pop();
                    match (key, pairs) {
                        (
                            Some(key),
                            Some(Frame::Array {
                                data: mut pairs, ..
                            }),
                        ) if !pairs.is_empty() => match pairs.swap_remove(0) {
                            Frame::Array { data: mut pair, .. } if pair.len() == 2 => {
                                let score = pair.pop().unwrap_or(Frame::Null);
                                let member = pair.pop().unwrap_or(Frame::Null);
                                reply::array(vec![key, member, score])
                            }
                            _ => Frame::Null,
                        },
                        _ => Frame::Null,
                    }
                }
                other => other,
            },
        }
    }
}

/// A command ready for Redis, or answered by restash itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Name and arguments as sent (empty when `answer` is set).
    pub args: Vec<Bytes>,
    /// What to do with the reply.
    pub fix: ReplyFix,
    /// restash's own answer; nothing is sent to Redis (e.g. `UNLINK` with no keys).
    pub answer: Option<Frame>,
    /// A blocking command that really blocks (`RESTASH_BLOCKING=true`): run it on a
    /// dedicated connection; Redis holds it for at most this long.
    pub wait: Option<Duration>,
}

/// How blocking commands run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockingMode {
    /// As their non-blocking forms, answered at once (Upstash's behaviour).
    #[default]
    Rewrite,
    /// For real, on dedicated connections, with every timeout clamped to `max`
    /// (a timeout of 0, "forever", becomes `max`).
    Block {
        /// The longest a command may block.
        max: Duration,
    },
}

impl Prepared {
    fn send(args: Vec<Bytes>, fix: ReplyFix) -> Self {
        Prepared {
            args,
            fix,
            answer: None,
            wait: None,
        }
    }

    fn answer(frame: Frame) -> Self {
        Prepared {
            args: Vec::new(),
            fix: ReplyFix::None,
            answer: Some(frame),
            wait: None,
        }
    }
}

/// Upstash's `SCAN … WITHTYPE`: one atomic, read-only script that scans and types.
pub const SCAN_WITH_TYPE_SCRIPT: &str = "local reply = redis.call('SCAN', unpack(ARGV))
local typed = {}
for _, key in ipairs(reply[2]) do
  typed[#typed + 1] = key
  typed[#typed + 1] = redis.call('TYPE', key)['ok']
end
return {reply[1], typed}";

/// Why restash will not send a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not available over a shared connection, or malformed: 400.
    #[error("{0}")]
    Unsupported(String),
    /// The token may not run it: 403.
    #[error("{0}")]
    NoPermission(String),
    /// The command table is not loaded yet (Redis unreachable since start-up): 503.
    #[error("ERR restash has not loaded the Redis command table yet; Redis may be unreachable")]
    NotReady,
}

/// Decides what to send for `command`; blocking commands run as their non-blocking forms.
pub fn prepare(
    command: Command,
    access: Access,
    table: Option<&CommandTable>,
    scripts: &ScriptRegistry,
) -> Result<Prepared, Refusal> {
    prepare_with(command, access, table, scripts, BlockingMode::Rewrite)
}

/// [`prepare`], with blocking commands handled as `blocking` says.
pub fn prepare_with(
    command: Command,
    access: Access,
    table: Option<&CommandTable>,
    scripts: &ScriptRegistry,
    blocking_mode: BlockingMode,
) -> Result<Prepared, Refusal> {
    let name = command.name_lowercase();
    if let Some(reason) = connection_state_reason(&name, &command) {
        return Err(Refusal::Unsupported(format!(
            "ERR Command is not available: '{}'. {reason}",
            display_name(&name, &command)
        )));
    }
    let info = table.and_then(|t| t.lookup_named(&name, &command));
    if access == Access::ReadOnly {
        if table.is_none() {
            return Err(Refusal::NotReady);
        }
        if !info.is_some_and(|i| i.read_only_allowed) {
            // Redis' ACL errors name subcommands as `config|set`.
            let acl_name = info.map_or(name.as_str(), |i| i.name.as_str());
            return Err(Refusal::NoPermission(format!(
                "NOPERM this user has no permissions to run the '{acl_name}' command"
            )));
        }
    }
    if let Some(text) = table.and_then(|t| non_utf8_error_echo(&name, &command, info, t)) {
        // Redis would echo these bytes in an error reply, which must be UTF-8 on the
        // wire to clients like fred: answer Redis' own text here instead.
        return Ok(Prepared::answer(reply::error(text)));
    }
    let blocking = info.is_some_and(|i| i.has_flag("blocking"));
    let mut args = command.args;
    if let BlockingMode::Block { max } = blocking_mode {
        if let Some(wait) = clamp_blocking_timeout(&name, &mut args, max) {
            let mut prepared = Prepared::send(args, ReplyFix::None);
            prepared.wait = Some(wait);
            return Ok(prepared);
        }
    }
    let fix = match name.as_str() {
        "blpop" | "brpop" if args.len() >= 3 => {
            // BLPOP k1 k2 timeout -> LMPOP 2 k1 k2 LEFT
            let side: &'static [u8] = if name == "blpop" { b"LEFT" } else { b"RIGHT" };
            args.pop();
            let keys = args.len() - 1;
            args[0] = Bytes::from_static(b"LMPOP");
            args.insert(1, count_arg(keys));
            args.push(Bytes::from_static(side));
            ReplyFix::ListPopPair
        }
        "bzpopmin" | "bzpopmax" if args.len() >= 3 => {
            let side: &'static [u8] = if name == "bzpopmin" { b"MIN" } else { b"MAX" };
            args.pop();
            let keys = args.len() - 1;
            args[0] = Bytes::from_static(b"ZMPOP");
            args.insert(1, count_arg(keys));
            args.push(Bytes::from_static(side));
            ReplyFix::SortedSetPopTriple
        }
        "blmpop" | "bzmpop" if args.len() >= 5 => {
            // BLMPOP timeout numkeys … -> LMPOP numkeys …
            args.remove(1);
            args[0] = Bytes::from_static(if name == "blmpop" { b"LMPOP" } else { b"ZMPOP" });
            ReplyFix::None
        }
        "blmove" if args.len() == 6 => {
            args.pop();
            args[0] = Bytes::from_static(b"LMOVE");
            ReplyFix::None
        }
        "brpoplpush" if args.len() == 4 => {
            args.pop();
            args[0] = Bytes::from_static(b"RPOPLPUSH");
            ReplyFix::None
        }
        "xread" | "xreadgroup" => {
            remove_block_option(&mut args);
            ReplyFix::None
        }
        "wait" | "waitaof" => {
            return Err(Refusal::Unsupported(format!(
                "ERR Command is not available: '{name}'. It blocks a connection that other callers share"
            )))
        }
        "eval" | "eval_ro" if args.len() >= 2 => {
            if let Some((script, _)) = scripts.rewrite(&args[1]) {
                args[1] = script;
            }
            ReplyFix::None
        }
        "evalsha" | "evalsha_ro" if args.len() >= 2 => {
            if let Some(sha) = scripts.server_sha(&args[1]) {
                args[1] = sha;
            }
            ReplyFix::None
        }
        "script" => prepare_script_subcommand(&mut args, scripts),
        // Upstash extensions (plain Redis rejects these forms).
        "unlink" if args.len() == 1 => {
            return Ok(Prepared::answer(Frame::Number {
                data: 0,
                attributes: None,
            }))
        }
        "scan" if has_word(&args[1..], b"withtype") => {
            args.retain(|a| !a.eq_ignore_ascii_case(b"withtype"));
            args[0] = Bytes::from_static(SCAN_WITH_TYPE_SCRIPT.as_bytes());
            args.insert(0, Bytes::from_static(b"EVAL_RO"));
            args.insert(2, Bytes::from_static(b"0"));
            ReplyFix::None
        }
        "zrange" if args.len() > 4 => rank_limit_fix(&mut args),
        _ => {
            if blocking {
                return Err(Refusal::Unsupported(format!(
                    "ERR Command is not available: '{name}'. Blocking commands cannot run on a shared connection"
                )));
            }
            ReplyFix::None
        }
    };
    Ok(Prepared::send(args, fix))
}

fn prepare_script_subcommand(args: &mut [Bytes], scripts: &ScriptRegistry) -> ReplyFix {
    let sub = args
        .get(1)
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    match sub.as_deref() {
        Some("load") if args.len() == 3 => match scripts.rewrite(&args[2]) {
            Some((script, client_sha)) => {
                args[2] = script;
                ReplyFix::Replace(reply::bulk(client_sha))
            }
            None => ReplyFix::None,
        },
        Some("exists") => {
            for sha in args.iter_mut().skip(2) {
                if let Some(server) = scripts.server_sha(sha) {
                    *sha = server;
                }
            }
            ReplyFix::None
        }
        _ => ReplyFix::None,
    }
}

/// Why a connection-state command cannot run over shared connections, if it is one.
fn connection_state_reason(name: &str, command: &Command) -> Option<&'static str> {
    const SHARED: &str = "Connections to Redis are shared by every caller, so per-connection state cannot be kept between requests";
    match name {
        "multi" | "exec" | "discard" => {
            Some("Send the whole transaction to /multi-exec instead")
        }
        "watch" | "unwatch" => Some(SHARED),
        "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" => Some("Use the /subscribe/<channel> or /psubscribe/<pattern> Server-Sent Events endpoints instead"),
        "ssubscribe" | "sunsubscribe" => {
            Some("Use the /ssubscribe/<channel> Server-Sent Events endpoint instead")
        }
        "monitor" => Some("Use the /monitor Server-Sent Events endpoint instead"),
        "auth" | "select" | "hello" | "quit" | "reset" | "readonly" | "readwrite" | "sync"
        | "psync" | "replconf" => Some(SHARED),
        "client" => {
            let sub = command.arg_lowercase(1).unwrap_or_default();
            match sub.as_str() {
                "id" | "info" | "list" | "getname" | "getredir" | "trackinginfo" | "help" => None,
                _ => Some(SHARED),
            }
        }
        _ => None,
    }
}

fn display_name(name: &str, command: &Command) -> String {
    match (name, command.arg_lowercase(1)) {
        ("client", Some(sub)) => format!("client|{sub}"),
        _ => name.to_string(),
    }
}

/// The error Redis would answer for a command whose error text would echo bytes
/// that are not valid UTF-8, or `None` when the command is safe to send.
///
/// Redis echoes the arguments of unknown commands and subcommands, cut at 128
/// bytes (possibly inside a multi-byte character), and fred cannot decode an
/// error reply that is not UTF-8: it would wedge a shared connection. So those
/// errors are answered here, cut at a character boundary; pure ASCII still goes
/// to Redis for its verbatim text. Scripts must be UTF-8 (Lua errors quote them).
fn non_utf8_error_echo(
    name: &str,
    command: &Command,
    info: Option<&super::table::CommandInfo>,
    table: &CommandTable,
) -> Option<String> {
    let lossy = |a: &Bytes| String::from_utf8_lossy(a).replace(['\r', '\n'], " ");
    match info {
        None if table.has_command(name) => {
            let sub = command.args.get(1)?;
            (!sub.is_ascii()).then(|| {
                format!(
                    "ERR unknown subcommand '{}'. Try {} HELP.",
                    truncate(&lossy(sub), 128),
                    name.to_ascii_uppercase()
                )
            })
        }
        None => {
            if command.args.iter().all(|a| a.is_ascii()) {
                return None;
            }
            // Redis 7: "unknown command '%.128s', with args beginning with: " and then
            // "'%.*s' " per argument while the list is shorter than 128 bytes.
            let mut listed = String::new();
            for arg in command.args.iter().skip(1) {
                if listed.len() >= 128 {
                    break;
                }
                let room = 128 - listed.len();
                listed.push_str(&format!("'{}' ", truncate(&lossy(arg), room)));
            }
            Some(format!(
                "ERR unknown command '{}', with args beginning with: {listed}",
                truncate(&lossy(&command.args[0]), 128)
            ))
        }
        Some(_) => match name {
            "eval" | "eval_ro" | "function" | "script"
                if !command
                    .args
                    .get(1..3)
                    .unwrap_or_default()
                    .iter()
                    .all(|a| std::str::from_utf8(a).is_ok()) =>
            {
                Some("ERR scripts and function libraries must be valid UTF-8".to_string())
            }
            _ => None,
        },
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn has_word(args: &[Bytes], word: &[u8]) -> bool {
    args.iter().any(|a| a.eq_ignore_ascii_case(word))
}

/// `ZRANGE key start stop [REV] LIMIT offset count [WITHSCORES]` without BYSCORE or
/// BYLEX: Redis refuses it, Upstash applies the limit to the rank range.
fn rank_limit_fix(args: &mut Vec<Bytes>) -> ReplyFix {
    let options = &args[4..];
    if has_word(options, b"byscore") || has_word(options, b"bylex") {
        return ReplyFix::None;
    }
    let Some(at) = args
        .iter()
        .skip(4)
        .position(|a| a.eq_ignore_ascii_case(b"limit"))
    else {
        return ReplyFix::None;
    };
    let at = at + 4;
    let number = |i: usize| {
        args.get(i)
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|s| s.parse::<i64>().ok())
    };
    let (Some(offset), Some(count)) = (number(at + 1), number(at + 2)) else {
        return ReplyFix::None;
    };
    args.drain(at..at + 3);
    ReplyFix::Slice {
        offset: usize::try_from(offset).unwrap_or(0),
        count,
        pairs: has_word(&args[4..], b"withscores"),
    }
}

fn count_arg(count: usize) -> Bytes {
    Bytes::from(count.to_string())
}

/// For a command that blocks, clamps its timeout argument to `max` (0 meaning
/// `max`) and returns how long Redis may hold it; `None` for anything else.
/// An unreadable timeout is left for Redis to refuse at once.
fn clamp_blocking_timeout(name: &str, args: &mut [Bytes], max: Duration) -> Option<Duration> {
    let len = args.len();
    let (index, in_seconds) = match name {
        "blpop" | "brpop" | "bzpopmin" | "bzpopmax" if len >= 3 => (len - 1, true),
        "blmove" if len == 6 => (5, true),
        "brpoplpush" if len == 4 => (3, true),
        "blmpop" | "bzmpop" if len >= 5 => (1, true),
        // Redis obeys the last BLOCK.
        "xread" | "xreadgroup" => (*block_values(args).last()?, false),
        _ => return None,
    };
    let arg = args.get_mut(index)?;
    let text = std::str::from_utf8(arg).ok();
    let requested = if in_seconds {
        text.and_then(seconds_as_redis_reads_them)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(max.as_secs_f64() + 1.0)))
    } else {
        text.and_then(|t| t.trim().parse::<u64>().ok())
            .map(Duration::from_millis)
    };
    match requested {
        Some(wait) if !wait.is_zero() && wait <= max => Some(wait),
        Some(_) => {
            let millis = max.as_millis();
            *arg = Bytes::from(if in_seconds {
                format!("{}.{:03}", millis / 1000, millis % 1000)
            } else {
                millis.to_string()
            });
            Some(max)
        }
        None => Some(max),
    }
}

/// A timeout in seconds as Redis reads it (`strtold`): decimal, or hexadecimal
/// (`0x10` is 16 s, `0x.8` half a second, `0x1p-2` a quarter); `None` for what
/// neither reads (Redis refuses it at once).
fn seconds_as_redis_reads_them(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Some(seconds);
    }
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, text.strip_prefix('+').unwrap_or(text)),
    };
    let hex = unsigned
        .strip_prefix("0x")
        .or_else(|| unsigned.strip_prefix("0X"))?;
    let (mantissa, exponent) = match hex.split_once(['p', 'P']) {
        Some((mantissa, exponent)) => (mantissa, Some(exponent.parse::<i32>().ok()?)),
        None => (hex, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let mut value = 0.0;
    for digit in whole.chars() {
        value = value * 16.0 + f64::from(digit.to_digit(16)?);
    }
    let mut scale = 1.0 / 16.0;
    for digit in fraction.chars() {
        value += f64::from(digit.to_digit(16)?) * scale;
        scale /= 16.0;
    }
    Some(sign * value * 2f64.powi(exponent.unwrap_or(0)))
}

/// Drops every `BLOCK <ms>` from XREAD/XREADGROUP options.
fn remove_block_option(args: &mut Vec<Bytes>) {
    for value in block_values(args).into_iter().rev() {
        args.drain(value - 1..=value);
    }
}

/// Where the values of XREAD/XREADGROUP's `BLOCK` options are. The options are
/// walked as Redis walks them (`GROUP <group> <consumer>`, `COUNT <n>`,
/// `BLOCK <ms>`, `NOACK`, up to `STREAMS`), so that a group or consumer named
/// "streams" or "block" is read as a name.
fn block_values(args: &[Bytes]) -> Vec<usize> {
    let mut values = Vec::new();
    crate::routing::keys::walk_stream_options(args, |value| values.push(value));
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(parts: &[&str]) -> Command {
        Command::from_parts(parts.iter().map(|s| s.to_string()))
    }

    /// XREADGROUP with a consumer group named like its STREAMS keyword.
    const GROUP_NAMED_STREAMS: [&str; 9] = [
        "XREADGROUP",
        "GROUP",
        "streams",
        "c",
        "BLOCK",
        "0",
        "STREAMS",
        "s",
        ">",
    ];

    fn sent(parts: &[&str]) -> Vec<String> {
        let p = prepare(
            cmd(parts),
            Access::Standard,
            None,
            &ScriptRegistry::default(),
        )
        .unwrap();
        p.args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn blocking_commands_become_non_blocking() {
        assert_eq!(
            sent(&["BLPOP", "a", "b", "5"]),
            ["LMPOP", "2", "a", "b", "LEFT"]
        );
        assert_eq!(sent(&["brpop", "a", "0"]), ["LMPOP", "1", "a", "RIGHT"]);
        assert_eq!(sent(&["BZPOPMAX", "z", "1"]), ["ZMPOP", "1", "z", "MAX"]);
        assert_eq!(
            sent(&["BLMOVE", "s", "d", "LEFT", "RIGHT", "0"]),
            ["LMOVE", "s", "d", "LEFT", "RIGHT"]
        );
        assert_eq!(
            sent(&["BRPOPLPUSH", "s", "d", "1"]),
            ["RPOPLPUSH", "s", "d"]
        );
        assert_eq!(
            sent(&["BLMPOP", "0", "1", "k", "LEFT", "COUNT", "2"]),
            ["LMPOP", "1", "k", "LEFT", "COUNT", "2"]
        );
        assert_eq!(
            sent(&["XREAD", "COUNT", "2", "BLOCK", "0", "STREAMS", "block", "0"]),
            ["XREAD", "COUNT", "2", "STREAMS", "block", "0"]
        );
        // Group and consumer names are names, even "streams" and "block";
        // every BLOCK goes (Redis obeys the last).
        assert_eq!(
            sent(&GROUP_NAMED_STREAMS),
            ["XREADGROUP", "GROUP", "streams", "c", "STREAMS", "s", ">"]
        );
        assert_eq!(
            sent(&["XREADGROUP", "GROUP", "block", "block", "STREAMS", "s", ">"]),
            ["XREADGROUP", "GROUP", "block", "block", "STREAMS", "s", ">"]
        );
        assert_eq!(
            sent(&[
                "XREADGROUP",
                "COUNT",
                "1",
                "GROUP",
                "g",
                "c",
                "BLOCK",
                "5",
                "NOACK",
                "BLOCK",
                "0",
                "STREAMS",
                "s",
                ">"
            ]),
            [
                "XREADGROUP",
                "COUNT",
                "1",
                "GROUP",
                "g",
                "c",
                "NOACK",
                "STREAMS",
                "s",
                ">"
            ]
        );
        // Wrong arity goes to Redis untouched, which answers its own error at once.
        assert_eq!(sent(&["BLPOP", "a"]), ["BLPOP", "a"]);
    }

    #[test]
    fn blocking_mode_clamps_timeouts() {
        let max = Duration::from_millis(2500);
        let run = |parts: &[&str]| {
            let p = prepare_with(
                cmd(parts),
                Access::Standard,
                None,
                &ScriptRegistry::default(),
                BlockingMode::Block { max },
            )
            .unwrap();
            let args: Vec<String> = p
                .args
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (args, p.wait)
        };
        assert_eq!(
            run(&["BLPOP", "a", "b", "0"]),
            (
                vec!["BLPOP".into(), "a".into(), "b".into(), "2.500".into()],
                Some(max)
            )
        );
        assert_eq!(
            run(&["BLMOVE", "s", "d", "LEFT", "RIGHT", "0.5"]).1,
            Some(Duration::from_millis(500))
        );
        assert_eq!(run(&["BRPOPLPUSH", "s", "d", "100"]).0[3], "2.500");
        assert_eq!(run(&["BLMPOP", "7", "1", "k", "LEFT"]).0[1], "2.500");
        assert_eq!(
            run(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]),
            (
                ["XREAD", "BLOCK", "2500", "STREAMS", "s", "$"]
                    .map(String::from)
                    .to_vec(),
                Some(max)
            )
        );
        assert_eq!(
            run(&["XREAD", "BLOCK", "10", "STREAMS", "s", "$"]).1,
            Some(Duration::from_millis(10))
        );
        // A group named "streams" does not hide the BLOCK after it.
        let (args, wait) = run(&GROUP_NAMED_STREAMS);
        assert_eq!((args[5].as_str(), wait), ("2500", Some(max)));
        // Unreadable timeouts go to Redis unchanged (it refuses them at once).
        assert_eq!(run(&["BLPOP", "a", "soon"]).0[2], "soon");
        assert_eq!(run(&["BLPOP", "a", "0x"]).0[2], "0x");
        assert_eq!(run(&["BLPOP", "a", "-0x10"]).0[2], "-0x10");
        // Hexadecimal, which Redis reads too (0x10 is 16 s): capped like decimal.
        assert_eq!(run(&["BLPOP", "a", "0x10"]).0[2], "2.500");
        assert_eq!(run(&["BLPOP", "a", "0x1"]).1, Some(Duration::from_secs(1)));
        assert_eq!(run(&["BLPOP", "a", "0X1.8p3"]).0[2], "2.500");
        assert_eq!(run(&["BLPOP", "a", "0xffffffffffffffffff"]).0[2], "2.500");
        assert_eq!(
            run(&["BLPOP", "a", "0x.8"]).1,
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            run(&["BLPOP", "a", "0x1p-2"]).1,
            Some(Duration::from_millis(250))
        );
        // Not hexadecimal numbers either: unchanged, for Redis to refuse.
        for odd in ["0x1p", "0x1-", "0x.", "0xg", "0x1.2.3"] {
            assert_eq!(run(&["BLPOP", "a", odd]).0[2], odd);
        }
        // Not blocking: the usual path.
        assert_eq!(run(&["XREAD", "STREAMS", "s", "0"]).1, None);
        assert_eq!(run(&["GET", "k"]).1, None);
        // The default mode still rewrites.
        assert_eq!(sent(&["BLPOP", "a", "0"])[0], "LMPOP");
    }

    #[test]
    fn unknown_commands_with_binary_arguments_are_answered_here() {
        let table = CommandTable::default();
        let command = Command {
            args: vec![
                Bytes::from_static(b"nosuch"),
                Bytes::from_static(b"a\xffb\r\n"),
            ],
        };
        let p = prepare(
            command,
            Access::Standard,
            Some(&table),
            &ScriptRegistry::default(),
        )
        .unwrap();
        assert_eq!(
            p.answer,
            Some(reply::error(
                "ERR unknown command 'nosuch', with args beginning with: 'a\u{fffd}b  ' "
            ))
        );
        // Plain UTF-8 goes to Redis for its verbatim answer.
        let p = prepare(
            cmd(&["nosuch", "x"]),
            Access::Standard,
            Some(&table),
            &ScriptRegistry::default(),
        )
        .unwrap();
        assert_eq!(p.answer, None);
    }

    #[test]
    fn multi_byte_text_is_cut_at_a_character_boundary() {
        // "ab" then 4-byte characters: Redis would cut at byte 128, inside a character.
        let long = format!("ab{}", "\u{1d47b}".repeat(40));
        let table = CommandTable::default();
        let scripts = ScriptRegistry::default();
        let p = prepare(
            cmd(&["nosuch", &long]),
            Access::Standard,
            Some(&table),
            &scripts,
        )
        .unwrap();
        let expected = format!(
            "ERR unknown command 'nosuch', with args beginning with: 'ab{}' ",
            "\u{1d47b}".repeat(31)
        );
        assert_eq!(p.answer, Some(reply::error(expected)));
    }

    #[test]
    fn upstash_extensions() {
        let scripts = ScriptRegistry::default();
        let p = prepare(cmd(&["UNLINK"]), Access::Standard, None, &scripts).unwrap();
        assert_eq!(
            p.answer,
            Some(Frame::Number {
                data: 0,
                attributes: None
            })
        );
        let sent_scan = sent(&["SCAN", "0", "MATCH", "a*", "WITHTYPE"]);
        assert_eq!(sent_scan[0], "EVAL_RO");
        assert_eq!(sent_scan[2..], ["0", "0", "MATCH", "a*"]);
        assert_eq!(
            sent(&["ZRANGE", "z", "0", "-1", "LIMIT", "1", "2", "WITHSCORES"]),
            ["ZRANGE", "z", "0", "-1", "WITHSCORES"]
        );
        assert_eq!(
            sent(&["ZRANGE", "z", "0", "5", "BYSCORE", "LIMIT", "1", "2"]),
            ["ZRANGE", "z", "0", "5", "BYSCORE", "LIMIT", "1", "2"]
        );
        let p = prepare(
            cmd(&["zrange", "z", "0", "-1", "limit", "1", "2", "withscores"]),
            Access::Standard,
            None,
            &scripts,
        )
        .unwrap();
        let items = reply::array((0..8).map(|i| reply::bulk(i.to_string())).collect());
        assert_eq!(
            p.fix.apply(items),
            reply::array(
                ["2", "3", "4", "5"]
                    .iter()
                    .map(|s| reply::bulk(s.to_string()))
                    .collect()
            )
        );
    }

    #[test]
    fn reply_fixes() {
        let pair = reply::array(vec![reply::bulk("k"), reply::array(vec![reply::bulk("v")])]);
        assert_eq!(
            ReplyFix::ListPopPair.apply(pair),
            reply::array(vec![reply::bulk("k"), reply::bulk("v")])
        );
        assert_eq!(ReplyFix::ListPopPair.apply(Frame::Null), Frame::Null);
        let zpop = reply::array(vec![
            reply::bulk("z"),
            reply::array(vec![reply::array(vec![
                reply::bulk("m"),
                reply::bulk("1.5"),
            ])]),
        ]);
        assert_eq!(
            ReplyFix::SortedSetPopTriple.apply(zpop),
            reply::array(vec![reply::bulk("z"), reply::bulk("m"), reply::bulk("1.5")])
        );
        let err = reply::error("ERR x");
        assert_eq!(ReplyFix::Replace(reply::bulk("y")).apply(err.clone()), err);
    }

    #[test]
    fn connection_state_commands_are_refused() {
        let scripts = ScriptRegistry::default();
        for parts in [
            &["SELECT", "1"][..],
            &["AUTH", "x"],
            &["MULTI"],
            &["exec"],
            &["WATCH", "k"],
            &["SUBSCRIBE", "c"],
            &["MONITOR"],
            &["CLIENT", "SETNAME", "x"],
            &["HELLO", "3"],
            &["WAIT", "1", "0"],
        ] {
            let err = prepare(cmd(parts), Access::Standard, None, &scripts).unwrap_err();
            assert!(
                matches!(&err, Refusal::Unsupported(m) if m.starts_with("ERR Command is not available")),
                "{parts:?}: {err:?}"
            );
        }
        assert!(prepare(cmd(&["CLIENT", "ID"]), Access::Standard, None, &scripts).is_ok());
    }

    #[test]
    fn read_only_without_table_is_not_ready() {
        let err = prepare(
            cmd(&["GET", "k"]),
            Access::ReadOnly,
            None,
            &ScriptRegistry::default(),
        )
        .unwrap_err();
        assert_eq!(err, Refusal::NotReady);
    }

    #[test]
    fn script_load_answers_the_client_sha() {
        let scripts = ScriptRegistry::default();
        let source = "#!lua flags=allow-key-locking\nreturn 1";
        let p = prepare(
            cmd(&["SCRIPT", "LOAD", source]),
            Access::Standard,
            None,
            &scripts,
        )
        .unwrap();
        assert_eq!(p.args[2], Bytes::from_static(b"#!lua\nreturn 1"));
        assert_eq!(
            p.fix,
            ReplyFix::Replace(reply::bulk(super::super::scripts::sha1_hex(
                source.as_bytes()
            )))
        );
        let client_sha = super::super::scripts::sha1_hex(source.as_bytes());
        let p = prepare(
            cmd(&["EVALSHA", &client_sha, "0"]),
            Access::Standard,
            None,
            &scripts,
        )
        .unwrap();
        assert_eq!(
            p.args[1],
            Bytes::from(super::super::scripts::sha1_hex(b"#!lua\nreturn 1"))
        );
    }
}
