//! What restash sends to Redis for a parsed command, decided by pure functions.
//!
//! - [`table`]: the server's own command table (`COMMAND`), for arity, flags and ACL categories;
//! - [`scripts`]: the Lua `allow-key-locking` rewrite and its SHA1 mapping;
//! - [`scope`]: what one token may do (modes, key prefixes, command rules), checked first;
//! - [`prepare`]: refusals (connection state, read-only tokens), blocking-to-non-blocking
//!   rewrites, and the reply fix-ups that go with them.

pub mod prepare;
pub mod scope;
pub mod scripts;
pub mod table;

pub use prepare::{prepare, Access, Prepared, Refusal, ReplyFix};
pub use scripts::ScriptRegistry;
pub use table::CommandTable;
