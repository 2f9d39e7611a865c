//! Pure routing decisions for Redis Cluster: key positions from the server's own
//! key specifications, hash slots, and what a command means on a cluster
//! (one slot, any node, every primary, or split by slot).
//!
//! Nothing here talks to Redis; `crate::dispatch` carries the decisions out.

pub mod keys;
pub mod plan;
pub mod slot;

pub use keys::KeySpec;
pub use plan::{plan, Plan};
pub use slot::key_slot;
