//! What one token may do: its mode, key prefixes, command rules and rate.
//!
//! [`authorize`] is the whole decision for one command, made before [`super::prepare`]:
//!
//! ```text
//! table needed?      read-only, standard, prefixed or ruled tokens need COMMAND's table (503 until loaded)
//! admin commands     CONFIG, DEBUG, SHUTDOWN, MODULE, ACL (but WHOAMI, CAT, GENPASS, HELP),
//!                    REPLICAOF/SLAVEOF, FAILOVER, CLUSTER writes, SAVE, BGSAVE, BGREWRITEAOF,
//!                    SYNC, PSYNC, MIGRATE, SWAPDB, CLIENT KILL and everything in @admin:
//!                    admin tokens only
//! read-only          @read and not @dangerous, plus PING, ECHO, EVAL_RO, EVALSHA_RO, FCALL_RO
//! command rules      deny wins; a non-empty allow list admits only what it names
//!                    (`get`, `config|get`, `@read`)
//! key prefixes       every key from the server's key specifications starts with a prefix;
//!                    SORT's BY/GET patterns and STORE key too; KEYS and SCAN patterns are
//!                    confined (SCAN without MATCH gets `MATCH <prefix>*`); whole-keyspace
//!                    commands (FLUSHDB, FLUSHALL, DBSIZE, RANDOMKEY, SWAPDB, MOVE, COPY … DB,
//!                    CLUSTER GETKEYSINSLOT/COUNTKEYSINSLOT), scripts and functions, and commands
//!                    whose keys the specs cannot tell (MIGRATE) are refused; channels
//!                    (PUBLISH, SPUBLISH, /subscribe, /psubscribe) are confined like keys
//! ```
//!
//! Prefixes are plain bytes without glob characters, so a pattern that starts with a
//! prefix can only match keys under it.

use bytes::Bytes;

use super::prepare::{Access, Refusal};
use super::table::{CommandInfo, CommandTable};
use crate::protocol::Command;
use crate::routing::keys::key_positions;

/// A token's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every command except the administrative ones.
    #[default]
    Standard,
    /// Read commands only.
    ReadOnly,
    /// Every command restash allows, administrative ones included.
    Admin,
}

impl Mode {
    /// Parses `standard`, `read-only` (or `readonly`) and `admin`.
    pub fn parse(text: &str) -> Option<Mode> {
        match text.trim().to_ascii_lowercase().as_str() {
            "standard" => Some(Mode::Standard),
            "read-only" | "readonly" | "read_only" => Some(Mode::ReadOnly),
            "admin" => Some(Mode::Admin),
            _ => None,
        }
    }

    /// The name used in files, claims and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Standard => "standard",
            Mode::ReadOnly => "read-only",
            Mode::Admin => "admin",
        }
    }

    /// What [`super::prepare`] needs to know.
    pub fn access(self) -> Access {
        match self {
            Mode::ReadOnly => Access::ReadOnly,
            Mode::Standard | Mode::Admin => Access::Standard,
        }
    }
}

/// A request rate: `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second, on average.
    pub per_second: f64,
    /// Requests accepted at once after a quiet period (at least 1).
    pub burst: u32,
}

/// Command allow and deny lists: names (`get`), subcommands (`config|get`) or ACL
/// categories (`@read`), lower case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandRules {
    /// When not empty, only these may run.
    pub allow: Vec<String>,
    /// These never run (deny wins over allow).
    pub deny: Vec<String>,
}

impl CommandRules {
    /// Whether there is any rule at all.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// Everything a token grants.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scope {
    /// The token's name: in logs, metrics and rate-limit keys (never the token itself).
    pub name: String,
    /// Standard, read-only or admin.
    pub mode: Mode,
    /// Key (and channel) prefixes; empty means the whole keyspace.
    pub prefixes: Vec<Bytes>,
    /// Command allow and deny lists.
    pub commands: CommandRules,
    /// Request rate limit, if any.
    pub rate: Option<Rate>,
    /// Named backend; `None` is the default (`REDIS_URL`).
    pub backend: Option<String>,
}

/// Why a command was refused, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The command table is not loaded yet.
    NotReady,
    /// An administrative command from a non-admin token.
    AdminOnly,
    /// A write from a read-only token.
    ReadOnly,
    /// The token's allow or deny list.
    CommandRule,
    /// A key, pattern or channel outside the token's prefixes.
    OutsidePrefix,
    /// A command that reaches the whole keyspace (or another database).
    WholeKeyspace,
    /// Scripts and functions, refused for prefixed tokens.
    Script,
    /// A command whose keys cannot be checked.
    UnknownKeys,
    /// A key under [`RESERVED_PREFIX`] from a token that is not admin.
    Reserved,
}

impl Reason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotReady => "not_ready",
            Reason::AdminOnly => "admin_only",
            Reason::ReadOnly => "read_only",
            Reason::CommandRule => "command_rule",
            Reason::OutsidePrefix => "outside_prefix",
            Reason::WholeKeyspace => "whole_keyspace",
            Reason::Script => "script",
            Reason::UnknownKeys => "unknown_keys",
            Reason::Reserved => "reserved",
        }
    }
}

/// A refused command: why (for audit) and what the caller is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Why, as a metric label.
    pub reason: Reason,
    /// What the caller is told.
    pub refusal: Refusal,
}

impl From<Denied> for Refusal {
    fn from(denied: Denied) -> Self {
        denied.refusal
    }
}

/// Administrative commands that need an admin token, beyond the `@admin` category.
const ADMIN_ONLY: &[&str] = &[
    "config",
    "debug",
    "shutdown",
    "module",
    "replicaof",
    "slaveof",
    "failover",
    "save",
    "bgsave",
    "bgrewriteaof",
    "sync",
    "psync",
    "migrate",
    "swapdb",
    "monitor",
    "client|kill",
    "cluster|addslots",
    "cluster|addslotsrange",
    "cluster|bumpepoch",
    "cluster|delslots",
    "cluster|delslotsrange",
    "cluster|failover",
    "cluster|flushslots",
    "cluster|forget",
    "cluster|meet",
    "cluster|replicate",
    "cluster|reset",
    "cluster|saveconfig",
    "cluster|set-config-epoch",
    "cluster|setslot",
];

/// The ACL subcommands clients use; every other `ACL …` is for admin tokens.
const ACL_FOR_CLIENTS: &[&str] = &["acl|whoami", "acl|cat", "acl|genpass", "acl|help"];

/// Characters a prefix may not contain: glob syntax, so that a pattern starting with
/// a prefix only matches keys under it.
const PATTERN_CHARS: &[u8] = b"*?[]\\";

/// The slowest rate a token may have: one request in about 17 minutes.
const MIN_RATE: f64 = 0.001;
/// The fastest rate a token may have: the shared limiter counts in microseconds.
const MAX_RATE: f64 = 1e6;
/// The largest burst a token may have.
const MAX_BURST: u32 = 1_000_000_000;

/// Where restash keeps its own keys (the cache API's entries, shared rate limits): no
/// tenant's prefix may reach into it, or contain it, or a prefixed token could read
/// every tenant's cache through `POST /`.
pub const RESERVED_PREFIX: &[u8] = b"restash:";

impl Scope {
    /// A scope over the whole keyspace with no rules (the static tokens).
    pub fn unrestricted(name: &str, mode: Mode) -> Scope {
        Scope {
            name: name.to_string(),
            mode,
            ..Scope::default()
        }
    }

    /// Checks that the scope can be enforced: prefixes are non-empty, free of glob
    /// characters and apart from [`RESERVED_PREFIX`], rule entries are non-empty, the
    /// rate is positive.
    pub fn validate(&self) -> Result<(), String> {
        if self.mode == Mode::Admin && self.is_prefixed() {
            return Err(
                "mode \"admin\" cannot be combined with prefixes: administrative commands \
                 (CONFIG, SLOWLOG, DEBUG, …) reach every tenant's data"
                    .into(),
            );
        }
        for prefix in &self.prefixes {
            if prefix.is_empty() {
                return Err("a prefix may not be empty".into());
            }
            if prefix.starts_with(RESERVED_PREFIX) || RESERVED_PREFIX.starts_with(prefix) {
                return Err(format!(
                    "prefix {:?} overlaps 'restash:', where restash keeps the cache and shared rate limits",
                    String::from_utf8_lossy(prefix)
                ));
            }
            if prefix.iter().any(|b| PATTERN_CHARS.contains(b)) {
                return Err(format!(
                    "prefix {:?} contains a glob character (* ? [ ] \\)",
                    String::from_utf8_lossy(prefix)
                ));
            }
        }
        let rules = self.commands.allow.iter().chain(&self.commands.deny);
        if rules.into_iter().any(|r| r.trim().is_empty()) {
            return Err("a command rule may not be empty".into());
        }
        if let Some(rate) = self.rate {
            // Bounds keep the bucket arithmetic finite: a rate far below one a day
            // overflows a wait, and above a million a second the shared limiter's
            // interval (in microseconds) rounds to nothing.
            let per_second = rate.per_second;
            if !(MIN_RATE..=MAX_RATE).contains(&per_second)
                || !(1..=MAX_BURST).contains(&rate.burst)
            {
                return Err(format!(
                    "rate needs per_second between {MIN_RATE} and {MAX_RATE:e}, and burst between 1 and {MAX_BURST}"
                ));
            }
        }
        Ok(())
    }

    /// Whether keys are confined to prefixes.
    pub fn is_prefixed(&self) -> bool {
        !self.prefixes.is_empty()
    }

    /// Whether `key` (or a channel, or a pattern) lies under one of the prefixes
    /// (always true for an unprefixed scope).
    pub fn owns(&self, key: &[u8]) -> bool {
        !self.is_prefixed() || self.prefixes.iter().any(|p| key.starts_with(p))
    }

    fn needs_table(&self) -> bool {
        self.mode != Mode::Admin || self.is_prefixed() || !self.commands.is_empty()
    }
}

/// Decides whether `scope` may run `command`; may confine it (SCAN gets a MATCH).
pub fn authorize(
    scope: &Scope,
    command: Command,
    table: Option<&CommandTable>,
) -> Result<Command, Denied> {
    if !scope.needs_table() {
        return Ok(command);
    }
    let Some(table) = table else {
        return Err(Denied {
            reason: Reason::NotReady,
            refusal: Refusal::NotReady,
        });
    };
    let name = command.name_lowercase();
    let info = table.lookup_named(&name, &command);
    // Redis' ACL errors name subcommands as `config|set`.
    let acl_name: &str = info.map_or(name.as_str(), |i| i.name.as_str());
    if scope.mode != Mode::Admin && is_admin_command(&name, acl_name, info) {
        return Err(no_permission(Reason::AdminOnly, acl_name));
    }
    if scope.mode == Mode::ReadOnly && !info.is_some_and(|i| i.read_only_allowed) {
        return Err(no_permission(Reason::ReadOnly, acl_name));
    }
    if !scope.commands.is_empty()
        && !rules_admit(
            &scope.commands,
            &name,
            acl_name,
            info,
            table.named(&name).is_some(),
        )
    {
        return Err(Denied {
            reason: Reason::CommandRule,
            refusal: Refusal::NoPermission(format!(
                "NOPERM this token may not run the '{acl_name}' command"
            )),
        });
    }
    if !scope.is_prefixed() {
        if scope.mode == Mode::Standard {
            keep_out_of_reserved(&command, &name, info)?;
        }
        return Ok(command);
    }
    confine(scope, command, &name, acl_name, info)
}

/// Refuses keys under [`RESERVED_PREFIX`] to a standard token without prefixes: they
/// hold the shared rate limits (a limited token could reset its own) and the cache's
/// entries, leases and logs, which only the cache API may change. Where the keys
/// cannot be told from the specs, any argument under the prefix counts as one; SORT's
/// `STORE` destination is found as Redis finds it. Scripts name keys at run time and
/// are not covered (README: deny `@scripting` to a token that must keep its limit).
fn keep_out_of_reserved(
    command: &Command,
    name: &str,
    info: Option<&CommandInfo>,
) -> Result<(), Denied> {
    let reserved = |key: &&Bytes| key.starts_with(RESERVED_PREFIX);
    let args = &command.args;
    let found = match info.and_then(|i| key_positions(&i.key_specs, args)) {
        // Its key and every `STORE` (Redis takes the last one); a SORT that does not
        // parse is left for Redis to refuse.
        _ if matches!(name, "sort" | "sort_ro") => {
            let mut found = args.get(1).filter(reserved);
            let _ = walk_sort(args, |part| {
                if let SortPart::Store(destination) = part {
                    found = found.or(Some(destination).filter(reserved));
                }
                Ok(())
            });
            found
        }
        Some(positions) => positions
            .into_iter()
            .filter_map(|p| args.get(p))
            .find(reserved),
        None => args.iter().skip(1).find(reserved),
    };
    match found {
        Some(key) => Err(outside(
            Reason::Reserved,
            format!(
                "key '{}' is under 'restash:', where restash keeps its own data (cache, shared rate limits); only admin tokens may touch it",
                String::from_utf8_lossy(key)
            ),
        )),
        None => Ok(()),
    }
}

fn no_permission(reason: Reason, acl_name: &str) -> Denied {
    Denied {
        reason,
        refusal: Refusal::NoPermission(format!(
            "NOPERM this user has no permissions to run the '{acl_name}' command"
        )),
    }
}

fn outside(reason: Reason, text: String) -> Denied {
    Denied {
        reason,
        refusal: Refusal::NoPermission(format!("NOPERM {text}")),
    }
}

/// Whether a command is administrative: named in [`ADMIN_ONLY`], an `ACL` subcommand
/// clients do not need, or in the server's `@admin` category.
pub fn is_admin_command(name: &str, acl_name: &str, info: Option<&CommandInfo>) -> bool {
    if name == "acl" {
        return !ACL_FOR_CLIENTS.contains(&acl_name);
    }
    ADMIN_ONLY.contains(&name)
        || ADMIN_ONLY.contains(&acl_name)
        || info.is_some_and(|i| i.acl_categories.iter().any(|c| c == "@admin"))
}

fn rules_admit(
    rules: &CommandRules,
    name: &str,
    acl_name: &str,
    info: Option<&CommandInfo>,
    known: bool,
) -> bool {
    let matches = |entry: &String| {
        let entry = entry.trim().to_ascii_lowercase();
        if entry.starts_with('@') {
            info.is_some_and(|i| i.acl_categories.contains(&entry))
        } else {
            entry == name || entry == acl_name
        }
    };
    if rules.deny.iter().any(matches) {
        return false;
    }
    // A command the table does not know at all (a module loaded since start-up) may
    // be in a denied category: refused rather than let through.
    if !known && rules.deny.iter().any(|e| e.trim().starts_with('@')) {
        return false;
    }
    rules.allow.is_empty() || rules.allow.iter().any(matches)
}

/// The prefix checks, for a scope with prefixes.
fn confine(
    scope: &Scope,
    mut command: Command,
    name: &str,
    acl_name: &str,
    info: Option<&CommandInfo>,
) -> Result<Command, Denied> {
    let Some(info) = info else {
        return Err(outside(
            Reason::UnknownKeys,
            format!("'{acl_name}' is unknown to this server, so its keys cannot be checked"),
        ));
    };
    let is = |category: &str| info.acl_categories.iter().any(|c| c == category);
    match name {
        "eval" | "eval_ro" | "evalsha" | "evalsha_ro" | "fcall" | "fcall_ro" | "script"
        | "function" => return Err(script_refusal(acl_name)),
        _ if is("@scripting") => return Err(script_refusal(acl_name)),
        "keys" => {
            let pattern = command.args.get(1).cloned().unwrap_or_default();
            if command.args.len() != 2 || !scope.owns(&pattern) {
                return Err(pattern_refusal(scope, "KEYS"));
            }
            return Ok(command);
        }
        "scan" => {
            confine_scan(scope, &mut command)?;
            return Ok(command);
        }
        "sort" | "sort_ro" => {
            check_sort(scope, &command.args)?;
            return Ok(command);
        }
        "move" => {
            return Err(whole_keyspace(
                acl_name,
                "it moves keys to another database",
            ))
        }
        "copy" if has_db_option(&command.args) => {
            return Err(whole_keyspace(
                acl_name,
                "COPY … DB writes to another database",
            ))
        }
        "publish" => {
            let channel = command.args.get(1).cloned().unwrap_or_default();
            if !scope.owns(&channel) {
                return Err(outside(
                    Reason::OutsidePrefix,
                    format!(
                        "channel '{}' is outside this token's prefixes",
                        String::from_utf8_lossy(&channel)
                    ),
                ));
            }
            return Ok(command);
        }
        _ if is("@pubsub") && acl_name != "spublish" => {
            return Err(whole_keyspace(
                acl_name,
                "it lists channels of every tenant",
            ))
        }
        _ => {}
    }
    if matches!(
        acl_name,
        "cluster|getkeysinslot" | "cluster|countkeysinslot"
    ) {
        return Err(whole_keyspace(acl_name, "it lists keys of every tenant"));
    }
    let Some(positions) = key_positions(&info.key_specs, &command.args) else {
        return Err(outside(
            Reason::UnknownKeys,
            format!(
                "the keys of '{acl_name}' cannot be told from its arguments, so it is refused for tokens with key prefixes"
            ),
        ));
    };
    if positions.is_empty() && is("@keyspace") && acl_name != "object|help" {
        return Err(whole_keyspace(acl_name, "it reaches the whole keyspace"));
    }
    if positions.is_empty() && (info.has_flag("module") || info.has_flag("movablekeys")) {
        // A module command without key specs (RediSearch's FT.SEARCH reads every
        // hash its index covers), or a command whose keys move and were not found.
        return Err(outside(
            Reason::UnknownKeys,
            format!(
                "the keys of '{acl_name}' cannot be told from its arguments, so it is refused for tokens with key prefixes"
            ),
        ));
    }
    for position in positions {
        let key = command
            .args
            .get(position)
            .map(|k| &k[..])
            .unwrap_or_default();
        if !scope.owns(key) {
            return Err(key_refusal(key));
        }
    }
    Ok(command)
}

fn key_refusal(key: &[u8]) -> Denied {
    outside(
        Reason::OutsidePrefix,
        format!(
            "key '{}' is outside this token's prefixes",
            String::from_utf8_lossy(key)
        ),
    )
}

fn script_refusal(acl_name: &str) -> Denied {
    outside(
        Reason::Script,
        format!(
            "'{acl_name}' is refused for tokens with key prefixes: a script could reach any key"
        ),
    )
}

fn whole_keyspace(acl_name: &str, why: &str) -> Denied {
    outside(
        Reason::WholeKeyspace,
        format!("'{acl_name}' is refused for tokens with key prefixes: {why}"),
    )
}

fn pattern_refusal(scope: &Scope, what: &str) -> Denied {
    let first = scope
        .prefixes
        .first()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    outside(
        Reason::OutsidePrefix,
        format!("{what} patterns must start with one of this token's prefixes, e.g. '{first}*'"),
    )
}

/// `SCAN cursor [MATCH p] [COUNT n] [TYPE t] [WITHTYPE]`: every `MATCH` pattern must
/// start with a prefix; without one, a single-prefix token gets `MATCH <prefix>*`.
///
/// The check runs on the arguments as Redis will see them (`WITHTYPE` words are
/// removed before sending, so they are skipped here too).
fn confine_scan(scope: &Scope, command: &mut Command) -> Result<(), Denied> {
    let sent: Vec<&Bytes> = command
        .args
        .iter()
        .filter(|a| !a.eq_ignore_ascii_case(b"withtype"))
        .collect();
    let mut has_match = false;
    for (i, arg) in sent.iter().enumerate().skip(2) {
        if arg.eq_ignore_ascii_case(b"match") {
            has_match = true;
            let owned = sent.get(i + 1).is_some_and(|p| scope.owns(p));
            if !owned {
                return Err(pattern_refusal(scope, "SCAN MATCH"));
            }
        }
    }
    if has_match {
        return Ok(());
    }
    match scope.prefixes.as_slice() {
        [only] => {
            let mut pattern = only.to_vec();
            pattern.push(b'*');
            command.args.push(Bytes::from_static(b"MATCH"));
            command.args.push(Bytes::from(pattern));
            Ok(())
        }
        _ => Err(pattern_refusal(scope, "SCAN MATCH")),
    }
}

/// `SORT key [BY pattern] [LIMIT offset count] [GET pattern …] [ASC|DESC] [ALPHA]
/// [STORE destination]`: the key and the destination under a prefix; BY and GET
/// patterns that reach keys (those with a `*`) start with a prefix (`GET #` is the
/// element itself). Mirrors Redis' own option parser; anything else is a syntax error.
fn check_sort(scope: &Scope, args: &[Bytes]) -> Result<(), Denied> {
    let key = args.get(1).map(|k| &k[..]).unwrap_or_default();
    if !scope.owns(key) {
        return Err(key_refusal(key));
    }
    walk_sort(args, |part| match part {
        SortPart::Store(destination) if !scope.owns(destination) => Err(key_refusal(destination)),
        SortPart::Pattern(pattern) => {
            let reaches_keys = pattern.contains(&b'*') && &pattern[..] != b"#";
            if reaches_keys && !scope.owns(pattern) {
                return Err(pattern_refusal(scope, "SORT BY/GET"));
            }
            Ok(())
        }
        SortPart::Store(_) => Ok(()),
    })
}

/// What SORT reaches besides its key.
enum SortPart<'a> {
    /// A `STORE` destination (Redis writes to the last one).
    Store(&'a Bytes),
    /// A `BY` or `GET` pattern.
    Pattern(&'a Bytes),
}

/// Walks SORT's options as Redis does, handing `visit` each destination and pattern;
/// a syntax error is refused as Redis would refuse it.
fn walk_sort<'a>(
    args: &'a [Bytes],
    mut visit: impl FnMut(SortPart<'a>) -> Result<(), Denied>,
) -> Result<(), Denied> {
    let syntax = || Denied {
        reason: Reason::UnknownKeys,
        refusal: Refusal::Unsupported("ERR syntax error".into()),
    };
    let mut i = 2;
    while i < args.len() {
        let word = args[i].to_ascii_lowercase();
        let value = args.get(i + 1);
        match (word.as_slice(), value) {
            (b"asc" | b"desc" | b"alpha", _) => i += 1,
            (b"limit", _) if i + 2 < args.len() => i += 3,
            (b"store", Some(destination)) => {
                visit(SortPart::Store(destination))?;
                i += 2;
            }
            (b"by" | b"get", Some(pattern)) => {
                visit(SortPart::Pattern(pattern))?;
                i += 2;
            }
            _ => return Err(syntax()),
        }
    }
    Ok(())
}

fn has_db_option(args: &[Bytes]) -> bool {
    args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"db"))
}

/// The cache API for a prefixed token: a namespace must start with a prefix, or be
/// a prefix without its final `:` (`acme:` → `acme`).
///
/// Only `:` is stripped: tokens whose key prefixes do not overlap then never share a
/// namespace. (Stripping any separator gave `acme:` and `acme-` both `acme`.)
pub fn check_namespace(scope: &Scope, namespace: &str) -> Result<(), Denied> {
    let ns = namespace.as_bytes();
    let owned = !scope.is_prefixed()
        || scope
            .prefixes
            .iter()
            .any(|p| ns.starts_with(p) || (!ns.is_empty() && p.strip_suffix(b":") == Some(ns)));
    if owned {
        Ok(())
    } else {
        Err(outside(
            Reason::OutsidePrefix,
            format!("cache namespace '{namespace}' is outside this token's prefixes"),
        ))
    }
}

/// A token's command rules on a command restash runs for it outside `POST /` (a
/// stream's `subscribe`, the cache's `get`); `table` gives the categories, and
/// without it rules cannot be judged.
fn check_rules(scope: &Scope, name: &str, table: Option<&CommandTable>) -> Result<(), Denied> {
    if scope.commands.is_empty() {
        return Ok(());
    }
    let Some(table) = table else {
        return Err(Denied {
            reason: Reason::NotReady,
            refusal: Refusal::NotReady,
        });
    };
    if rules_admit(
        &scope.commands,
        name,
        name,
        table.named(name),
        table.named(name).is_some(),
    ) {
        Ok(())
    } else {
        Err(Denied {
            reason: Reason::CommandRule,
            refusal: Refusal::NoPermission(format!(
                "NOPERM this token may not run the '{name}' command"
            )),
        })
    }
}

/// What a cache API request does, judged by command rules as the Redis command it
/// stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOperation {
    /// Reading an entry or a namespace's counters: `get`.
    Read,
    /// Storing an entry or taking a lease: `set`.
    Write,
    /// Removing an entry, or invalidating by tag or prefix: `del`.
    Remove,
}

impl CacheOperation {
    /// The Redis command whose rules apply.
    pub fn command(self) -> &'static str {
        match self {
            CacheOperation::Read => "get",
            CacheOperation::Write => "set",
            CacheOperation::Remove => "del",
        }
    }
}

/// Whether a token's command rules admit a cache operation: `allow = ["@read"]`
/// admits reads only, `deny = ["@write"]` refuses writes and removals.
pub fn check_cache(
    scope: &Scope,
    operation: CacheOperation,
    table: Option<&CommandTable>,
) -> Result<(), Denied> {
    check_rules(scope, operation.command(), table)
}

/// What a Server-Sent Events endpoint streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream<'a> {
    /// `/subscribe/<channel>`.
    Channel(&'a [u8]),
    /// `/psubscribe/<pattern>`.
    Pattern(&'a [u8]),
    /// `/ssubscribe/<channel>` (sharded Pub/Sub).
    ShardChannel(&'a [u8]),
    /// `/monitor`: every command of every tenant.
    Monitor,
}

/// Whether `scope` may open a stream: MONITOR needs an admin token (without prefixes);
/// channels and patterns lie under the prefixes; command rules apply to
/// `subscribe`, `psubscribe`, `ssubscribe` and `monitor`, categories included
/// (`table` tells them; without it, rules cannot be judged and the stream waits).
pub fn check_stream(
    scope: &Scope,
    stream: Stream<'_>,
    table: Option<&CommandTable>,
) -> Result<(), Denied> {
    let name = match stream {
        Stream::Channel(_) => "subscribe",
        Stream::Pattern(_) => "psubscribe",
        Stream::ShardChannel(_) => "ssubscribe",
        Stream::Monitor => "monitor",
    };
    check_rules(scope, name, table)?;
    match stream {
        Stream::Monitor if scope.mode != Mode::Admin => Err(no_permission(
            if scope.mode == Mode::ReadOnly {
                Reason::ReadOnly
            } else {
                Reason::AdminOnly
            },
            "monitor",
        )),
        Stream::Monitor if scope.is_prefixed() => Err(whole_keyspace(
            "monitor",
            "it shows the commands of every tenant",
        )),
        Stream::Channel(name) | Stream::Pattern(name) | Stream::ShardChannel(name)
            if !scope.owns(name) =>
        {
            Err(outside(
                Reason::OutsidePrefix,
                format!(
                    "channel '{}' is outside this token's prefixes",
                    String::from_utf8_lossy(name)
                ),
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::reply::{array, bulk, Frame};

    fn int(n: i64) -> Frame {
        Frame::Number {
            data: n,
            attributes: None,
        }
    }

    /// A key spec `index <i>` + `range lastkey <l> keystep <s> limit 0`.
    fn range_spec(index: i64, last: i64, step: i64) -> Frame {
        array(vec![
            bulk("flags"),
            array(vec![]),
            bulk("begin_search"),
            array(vec![
                bulk("type"),
                bulk("index"),
                bulk("spec"),
                array(vec![bulk("index"), int(index)]),
            ]),
            bulk("find_keys"),
            array(vec![
                bulk("type"),
                bulk("range"),
                bulk("spec"),
                array(vec![
                    bulk("lastkey"),
                    int(last),
                    bulk("keystep"),
                    int(step),
                    bulk("limit"),
                    int(0),
                ]),
            ]),
        ])
    }

    fn unknown_spec() -> Frame {
        array(vec![
            bulk("flags"),
            array(vec![]),
            bulk("begin_search"),
            array(vec![
                bulk("type"),
                bulk("unknown"),
                bulk("spec"),
                array(vec![]),
            ]),
            bulk("find_keys"),
            array(vec![
                bulk("type"),
                bulk("unknown"),
                bulk("spec"),
                array(vec![]),
            ]),
        ])
    }

    fn entry(name: &str, acl: &[&str], specs: Vec<Frame>, subs: Vec<Frame>) -> Frame {
        array(vec![
            bulk(name.to_string()),
            int(-1),
            array(vec![]),
            int(0),
            int(0),
            int(0),
            array(acl.iter().map(|c| bulk(c.to_string())).collect()),
            array(vec![]),
            array(specs),
            array(subs),
        ])
    }

    fn flagged(name: &str, flags: &[&str], acl: &[&str]) -> Frame {
        array(vec![
            bulk(name.to_string()),
            int(-1),
            array(flags.iter().map(|f| bulk(f.to_string())).collect()),
            int(0),
            int(0),
            int(0),
            array(acl.iter().map(|c| bulk(c.to_string())).collect()),
            array(vec![]),
            array(vec![]),
            array(vec![]),
        ])
    }

    fn table() -> CommandTable {
        CommandTable::from_frame(&array(vec![
            // RediSearch registers its commands without key specs.
            flagged("ft.search", &["readonly", "module"], &["@read"]),
            flagged(
                "xreadgroup",
                &["write", "blocking", "movablekeys"],
                &["@write", "@stream"],
            ),
            entry(
                "get",
                &["@read", "@string"],
                vec![range_spec(1, 0, 1)],
                vec![],
            ),
            entry(
                "set",
                &["@write", "@string"],
                vec![range_spec(1, 0, 1)],
                vec![],
            ),
            entry("mset", &["@write"], vec![range_spec(1, -1, 2)], vec![]),
            entry(
                "del",
                &["@write", "@keyspace"],
                vec![range_spec(1, -1, 1)],
                vec![],
            ),
            entry(
                "keys",
                &["@keyspace", "@read", "@dangerous"],
                vec![],
                vec![],
            ),
            entry("scan", &["@keyspace", "@read"], vec![], vec![]),
            entry("dbsize", &["@keyspace", "@read"], vec![], vec![]),
            entry(
                "flushall",
                &["@keyspace", "@write", "@dangerous"],
                vec![],
                vec![],
            ),
            entry("eval", &["@scripting"], vec![], vec![]),
            entry("ping", &["@connection"], vec![], vec![]),
            entry("publish", &["@pubsub"], vec![], vec![]),
            entry("subscribe", &["@pubsub", "@slow"], vec![], vec![]),
            entry(
                "monitor",
                &["@admin", "@slow", "@dangerous"],
                vec![],
                vec![],
            ),
            entry(
                "copy",
                &["@write", "@keyspace"],
                vec![range_spec(1, 1, 1)],
                vec![],
            ),
            entry(
                "sort",
                &["@write", "@dangerous"],
                vec![range_spec(1, 0, 1), unknown_spec()],
                vec![],
            ),
            entry(
                "config",
                &[],
                vec![],
                vec![
                    entry("config|get", &["@admin", "@dangerous"], vec![], vec![]),
                    entry("config|set", &["@admin", "@dangerous"], vec![], vec![]),
                ],
            ),
            entry(
                "object",
                &[],
                vec![],
                vec![entry(
                    "object|encoding",
                    &["@keyspace", "@read"],
                    vec![range_spec(2, 0, 1)],
                    vec![],
                )],
            ),
            entry(
                "acl",
                &[],
                vec![],
                vec![
                    entry("acl|whoami", &[], vec![], vec![]),
                    entry("acl|setuser", &["@admin"], vec![], vec![]),
                ],
            ),
        ]))
        .unwrap()
    }

    fn cmd(parts: &[&str]) -> Command {
        Command::from_parts(parts.iter().map(|s| s.to_string()))
    }

    fn tenant(prefixes: &[&str]) -> Scope {
        Scope {
            name: "t".into(),
            prefixes: prefixes
                .iter()
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect(),
            ..Scope::default()
        }
    }

    fn allowed(scope: &Scope, parts: &[&str]) -> Result<Vec<String>, Reason> {
        authorize(scope, cmd(parts), Some(&table()))
            .map(|c| {
                c.args
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .map_err(|d| d.reason)
    }

    #[test]
    fn keys_must_lie_under_a_prefix() {
        let s = tenant(&["a:", "b:"]);
        assert!(allowed(&s, &["GET", "a:1"]).is_ok());
        assert!(allowed(&s, &["MSET", "a:1", "x", "b:2", "y"]).is_ok());
        assert_eq!(
            allowed(&s, &["MSET", "a:1", "x", "c:2", "y"]),
            Err(Reason::OutsidePrefix)
        );
        // A value that looks like a foreign key is not a key.
        assert!(allowed(&s, &["SET", "a:1", "c:2"]).is_ok());
        assert_eq!(
            allowed(&s, &["DEL", "a:1", "c"]),
            Err(Reason::OutsidePrefix)
        );
        assert_eq!(allowed(&s, &["GET", "A:1"]), Err(Reason::OutsidePrefix));
        assert_eq!(allowed(&s, &["NOSUCH", "a:1"]), Err(Reason::UnknownKeys));
        assert!(allowed(&s, &["PING"]).is_ok());
    }

    #[test]
    fn patterns_and_whole_keyspace() {
        let one = tenant(&["a:"]);
        assert!(allowed(&one, &["KEYS", "a:*"]).is_ok());
        assert_eq!(allowed(&one, &["KEYS", "*"]), Err(Reason::OutsidePrefix));
        assert_eq!(
            allowed(&one, &["SCAN", "0"]).unwrap(),
            ["SCAN", "0", "MATCH", "a:*"]
        );
        assert_eq!(
            allowed(&one, &["SCAN", "0", "MATCH", "a:*", "MATCH", "*"]),
            Err(Reason::OutsidePrefix)
        );
        // WITHTYPE words are removed before sending: the pattern is checked as sent.
        assert_eq!(
            allowed(&one, &["SCAN", "0", "MATCH", "WITHTYPE", "*"]),
            Err(Reason::OutsidePrefix)
        );
        assert_eq!(
            allowed(&tenant(&["a:", "b:"]), &["SCAN", "0"]),
            Err(Reason::OutsidePrefix)
        );
        assert_eq!(allowed(&one, &["DBSIZE"]), Err(Reason::WholeKeyspace));
        assert_eq!(allowed(&one, &["FLUSHALL"]), Err(Reason::WholeKeyspace));
        assert_eq!(
            allowed(&one, &["EVAL", "return 1", "0"]),
            Err(Reason::Script)
        );
        assert_eq!(
            allowed(&one, &["COPY", "a:1", "a:2", "DB", "1"]),
            Err(Reason::WholeKeyspace)
        );
        assert!(allowed(&one, &["COPY", "a:1", "a:2", "REPLACE"]).is_ok());
        assert_eq!(
            allowed(&one, &["PUBLISH", "b:c", "m"]),
            Err(Reason::OutsidePrefix)
        );
        assert!(allowed(&one, &["PUBLISH", "a:c", "m"]).is_ok());
    }

    #[test]
    fn sort_patterns() {
        let s = tenant(&["a:"]);
        assert!(allowed(
            &s,
            &["SORT", "a:l", "BY", "a:w_*", "GET", "#", "GET", "a:o_*"]
        )
        .is_ok());
        assert!(allowed(
            &s,
            &["SORT", "a:l", "BY", "nosort", "LIMIT", "0", "5", "ALPHA"]
        )
        .is_ok());
        assert_eq!(
            allowed(&s, &["SORT", "a:l", "GET", "b:*"]),
            Err(Reason::OutsidePrefix)
        );
        assert_eq!(
            allowed(&s, &["SORT", "a:l", "BY", "*"]),
            Err(Reason::OutsidePrefix)
        );
        assert_eq!(
            allowed(&s, &["SORT", "a:l", "STORE", "b:out"]),
            Err(Reason::OutsidePrefix)
        );
        assert_eq!(allowed(&s, &["SORT", "b:l"]), Err(Reason::OutsidePrefix));
        assert_eq!(
            allowed(&s, &["SORT", "a:l", "BOGUS"]),
            Err(Reason::UnknownKeys)
        );
    }

    #[test]
    fn keyless_module_commands_are_refused_to_prefixed_tokens() {
        assert_eq!(
            allowed(&tenant(&["shop:"]), &["FT.SEARCH", "idx", "*"]),
            Err(Reason::UnknownKeys)
        );
        assert!(allowed(
            &Scope::unrestricted("s", Mode::Standard),
            &["FT.SEARCH", "idx", "*"]
        )
        .is_ok());
    }

    #[test]
    fn xreadgroup_keys_are_found_as_redis_finds_them() {
        // A prefix that is a prefix of "streams": the group and consumer named
        // "streams" are not keys; "orders:q" is, and lies outside.
        let s = tenant(&["s"]);
        let sneaky = [
            "XREADGROUP",
            "COUNT",
            "1",
            "GROUP",
            "workers",
            "streams",
            "STREAMS",
            "orders:q",
            ">",
        ];
        assert_eq!(allowed(&s, &sneaky), Err(Reason::OutsidePrefix));
        let fine = [
            "XREADGROUP",
            "GROUP",
            "streams",
            "streams",
            "STREAMS",
            "s:q",
            ">",
        ];
        assert!(allowed(&s, &fine).is_ok());
    }

    #[test]
    fn standard_tokens_without_prefixes_keep_out_of_restash_keys() {
        let standard = Scope::unrestricted("s", Mode::Standard);
        assert_eq!(
            allowed(&standard, &["DEL", "restash:rate:{jwt:partner}"]),
            Err(Reason::Reserved)
        );
        assert_eq!(
            allowed(&standard, &["GET", "restash:cache:v:{ns:k}"]),
            Err(Reason::Reserved)
        );
        assert!(allowed(&standard, &["GET", "restashed"]).is_ok());
        // SORT's destination, whose key spec is "unknown".
        assert_eq!(
            allowed(&standard, &["SORT", "l", "STORE", "restash:rate:{me}"]),
            Err(Reason::Reserved)
        );
        assert!(allowed(&standard, &["SORT", "l", "STORE", "mine"]).is_ok());
        assert_eq!(
            allowed(
                &standard,
                &["SORT", "l", "STORE", "mine", "STORE", "restash:x"]
            ),
            Err(Reason::Reserved)
        );
        for trusted in [Mode::Admin, Mode::ReadOnly] {
            let scope = Scope::unrestricted("t", trusted);
            assert!(allowed(&scope, &["GET", "restash:cache:v:{ns:k}"]).is_ok());
        }
    }

    #[test]
    fn admin_mode_cannot_have_prefixes() {
        let mut admin = tenant(&["shop:"]);
        admin.mode = Mode::Admin;
        assert!(admin.validate().unwrap_err().contains("admin"));
        admin.prefixes.clear();
        assert!(admin.validate().is_ok());
    }

    #[test]
    fn modes_and_rules() {
        let standard = Scope::unrestricted("s", Mode::Standard);
        assert_eq!(
            allowed(&standard, &["CONFIG", "GET", "x"]),
            Err(Reason::AdminOnly)
        );
        assert_eq!(
            allowed(&standard, &["ACL", "SETUSER", "x"]),
            Err(Reason::AdminOnly)
        );
        assert!(allowed(&standard, &["ACL", "WHOAMI"]).is_ok());
        assert!(allowed(&standard, &["FLUSHALL"]).is_ok());
        let admin = Scope::unrestricted("a", Mode::Admin);
        assert!(allowed(&admin, &["CONFIG", "GET", "x"]).is_ok());
        // Admin without rules or prefixes does not even need the table.
        assert!(authorize(&admin, cmd(&["CONFIG", "GET", "x"]), None).is_ok());
        assert_eq!(
            authorize(&standard, cmd(&["GET", "x"]), None)
                .unwrap_err()
                .refusal,
            Refusal::NotReady
        );
        let read_only = Scope::unrestricted("r", Mode::ReadOnly);
        assert!(allowed(&read_only, &["GET", "x"]).is_ok());
        assert_eq!(
            allowed(&read_only, &["SET", "x", "1"]),
            Err(Reason::ReadOnly)
        );
        let mut ruled = Scope::unrestricted("r", Mode::Standard);
        ruled.commands.allow = vec!["@read".into(), "set".into(), "config|get".into()];
        ruled.commands.deny = vec!["keys".into()];
        assert!(allowed(&ruled, &["GET", "x"]).is_ok());
        assert!(allowed(&ruled, &["SET", "x", "1"]).is_ok());
        assert_eq!(allowed(&ruled, &["DEL", "x"]), Err(Reason::CommandRule));
        assert_eq!(allowed(&ruled, &["KEYS", "*"]), Err(Reason::CommandRule));
        // An allow list does not lift the admin rule.
        assert_eq!(
            allowed(&ruled, &["CONFIG", "GET", "x"]),
            Err(Reason::AdminOnly)
        ); // A command the table does not know may be in a denied category: refused.
        let mut denying = Scope::unrestricted("d", Mode::Standard);
        denying.commands.deny = vec!["@dangerous".into()];
        assert_eq!(
            allowed(&denying, &["MODULE.NEWCMD", "x"]),
            Err(Reason::CommandRule)
        );
        assert!(allowed(&denying, &["GET", "x"]).is_ok());
        // A known command with an unknown subcommand is left for Redis to refuse.
        assert!(allowed(&denying, &["OBJECT", "NOSUCH"]).is_ok());
    }

    #[test]
    fn command_rules_apply_to_streams_with_their_categories() {
        let stream = |allow: &[&str], deny: &[&str], stream: Stream<'_>| {
            let mut scope = Scope::unrestricted("r", Mode::Admin);
            scope.commands.allow = allow.iter().map(|s| s.to_string()).collect();
            scope.commands.deny = deny.iter().map(|s| s.to_string()).collect();
            check_stream(&scope, stream, Some(&table())).map_err(|d| d.reason)
        };
        let channel = || Stream::Channel(b"c");
        assert_eq!(
            stream(&[], &["@dangerous"], Stream::Monitor),
            Err(Reason::CommandRule)
        );
        assert_eq!(
            stream(&[], &["@pubsub"], channel()),
            Err(Reason::CommandRule)
        );
        assert_eq!(stream(&["@pubsub"], &[], channel()), Ok(()));
        assert_eq!(stream(&["@read"], &[], channel()), Err(Reason::CommandRule));
        assert_eq!(stream(&[], &["@dangerous"], channel()), Ok(()));
        assert_eq!(stream(&["monitor"], &[], Stream::Monitor), Ok(()));
        // Without the command table the rules cannot be judged: not yet.
        let mut ruled = Scope::unrestricted("r", Mode::Admin);
        ruled.commands.deny = vec!["@dangerous".into()];
        assert_eq!(
            check_stream(&ruled, Stream::Monitor, None).map_err(|d| d.reason),
            Err(Reason::NotReady)
        );
    }

    #[test]
    fn namespaces_streams_and_validation() {
        let s = tenant(&["acme:", "shop."]);
        assert!(check_namespace(&s, "acme").is_ok());
        assert!(check_namespace(&s, "shop.reports").is_ok());
        assert!(check_namespace(&s, "shop").is_err());
        assert!(check_namespace(&s, "acme2").is_err());
        assert!(check_namespace(&s, "other").is_err());
        // Prefixes that do not overlap own no namespace in common.
        let dashed = tenant(&["acme-", "acme.", "acme_"]);
        assert!(check_namespace(&dashed, "acme").is_err());
        assert!(check_namespace(&dashed, "acme-x").is_ok());
        assert!(check_namespace(&tenant(&[":"]), "").is_err());
        assert!(check_stream(&s, Stream::Channel(b"acme:c"), None).is_ok());
        assert!(check_stream(&s, Stream::ShardChannel(b"acme:c"), None).is_ok());
        assert!(check_stream(&s, Stream::ShardChannel(b"other:c"), None).is_err());
        assert!(check_stream(&s, Stream::Pattern(b"*"), None).is_err());
        assert!(check_stream(&s, Stream::Monitor, None).is_err());
        assert!(check_stream(
            &Scope::unrestricted("a", Mode::Admin),
            Stream::Monitor,
            None
        )
        .is_ok());
        assert!(tenant(&["a*"]).validate().is_err());
        assert!(tenant(&[""]).validate().is_err());
        assert!(tenant(&["a:"]).validate().is_ok());
        // restash's own keys are nobody's: neither under a prefix nor above one.
        for reserved in ["restash:", "restash:cache:", "restash", "r"] {
            assert!(tenant(&[reserved]).validate().is_err(), "{reserved}");
        }
        assert!(tenant(&["restashed:"]).validate().is_ok());
        assert_eq!(Mode::parse("read-only"), Some(Mode::ReadOnly));
        assert_eq!(Mode::parse("root"), None);
    }
}
