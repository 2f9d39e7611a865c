//! The cache-aside API's semantics: key layout, entries, leases, tags, invalidation and stats.
//!
//! Pure logic lives in [`keys`], [`entry`], [`lease`], [`params`] and [`stats`] (plain functions,
//! unit-tested); [`store`] talks to Redis through [`crate::backend::Backend`] with the Lua
//! scripts of [`scripts`]. The HTTP handlers are in `crate::http::cache`.
//!
//! # Key layout (every key starts with [`keys::PREFIX`], `restash:cache:`)
//!
//! ```text
//! restash:cache:v:{<ns>:<key>}   hash: the entry (d data, c content type, a stored at ms,
//!                                f fresh until ms, s stale until ms, e ETag, w write id, t tags);
//!                                expires at the end of its stale window
//! restash:cache:l:{<ns>:<key>}   string: the lease token, PX = lease duration
//! restash:cache:tz:{<ns>:<tag>}  sorted set: keys stored with that tag, scored by when each
//!                                entry ends (ms); every fill of the tag drops ended members;
//!                                expires with its longest entry
//! restash:cache:t:{<ns>:<tag>}   set: the same before tag sets were sorted (never pruned);
//!                                no longer written, still walked by invalidations
//! restash:cache:meta:{<ns>}      hash: seq (invalidation counter), cut (log truncated up to)
//! restash:cache:log:{<ns>}       sorted set: recent invalidations (t:<tag>, p:<prefix>) by seq
//! restash:cache:stats:{<ns>}     hash: event counters shared by every restash instance
//! ```
//!
//! An entry's value and lease keys share one hash tag, so every script that touches an entry
//! touches one slot of a Redis Cluster. Tag sets, the invalidation log and the stats live in
//! their own slots and are only ever touched by single-slot commands and scripts; an
//! invalidation walks a tag set and deletes member entries one entry (one slot) at a time.
//!
//! # Leases and stale sets
//!
//! A lease token is `<seq>.<random>`, where `seq` is the namespace's invalidation counter read
//! *before* the lease was granted. A fill carrying the token is refused (409) when the lease key
//! no longer holds that token (a `DELETE`, a write, or a prefix invalidation removed it, or it
//! expired), or when the invalidation log shows a tag of the fill or a prefix of its key was
//! invalidated after `seq` (checked before the write and again after it; a fill that loses that
//! race is undone). So a value computed before an invalidation never outlives it, even though
//! the tag sets and the entry live on different cluster slots. When the log cannot tell (the
//! counter went back or the records of later invalidations are gone: evicted), the fill is
//! refused too.

pub mod entry;
pub mod keys;
pub mod lease;
pub mod params;
pub mod scripts;
pub mod stats;
pub mod store;
pub mod wait;

use std::sync::Arc;
use std::time::Duration;

pub use entry::Entry;
pub use keys::Namespace;
pub use lease::LeaseToken;
pub use params::InputError;
pub use stats::Event;
pub use store::{CacheError, FillOutcome, Lookup};

/// Default of `RESTASH_CACHE_TIMEOUT_MS`: how long a cache read waits for Redis before failing open.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// Settings of the cache-aside API.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Longest wait for one Redis round trip of a cache request; then reads answer
    /// `X-Cache: BYPASS` and writes 503.
    pub timeout: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Process-wide cache state: settings, the Lua scripts, the bounded metric labels, the
/// event counts not yet in Redis and the shared poll loops of waiting callers.
pub struct Cache {
    settings: CacheSettings,
    scripts: Arc<scripts::Scripts>,
    labels: stats::Labels,
    pending: stats::Pending,
    /// Held while pending counts are written, so a stats read waits for a flush in flight.
    flushing: tokio::sync::Mutex<()>,
    polls: wait::Polls,
}

impl Cache {
    /// Builds the cache state with `settings`.
    pub fn new(settings: CacheSettings) -> Cache {
        Cache {
            settings,
            scripts: Arc::new(scripts::Scripts::default()),
            labels: stats::Labels::new(stats::MAX_NAMESPACE_LABELS),
            pending: stats::Pending::default(),
            flushing: tokio::sync::Mutex::new(()),
            polls: wait::Polls::default(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new(CacheSettings::default())
    }
}
