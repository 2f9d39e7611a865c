//! Sharded Pub/Sub on a cluster: one subscriber link per primary, shared by every
//! `/ssubscribe` stream whose channel's hash slot that primary owns.
//!
//! ```text
//! join(channel)   slot = CRC16(channel or its {hash tag}) mod 16384
//!                 owner = slot map (CLUSTER SLOTS, cached)
//!                 SSUBSCRIBE on the owner's link (opened on demand, closed when idle)
//!   -MOVED/-ASK   retry on the node MOVED names, reading the slot map again
//!                 (at most ATTEMPTS attempts)
//! link breaks     its streams end (Delivery::Lost), the slot map is read again next time
//! slot moves      Redis sends sunsubscribe: those streams end (Delivery::Unsubscribed)
//! ```
//!
//! `SPUBLISH` reaches only the subscribers of the shard that owns the channel, so a
//! link on any other node would never see the message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use fred::types::config::Server;
use tokio_util::sync::CancellationToken;

use super::link::Endpoint;
use super::shard::{Joining, Recovery, Shard, Timing, TopicKey};
use super::slots::{self, SlotMap};
use super::BufferLimits;
use super::{StreamError, Subscription, TopicKind};
use crate::routing::key_slot;

/// Subscription attempts when Redis redirects (`MOVED`, `ASK`).
const ATTEMPTS: usize = 3;

/// The sharded links of a cluster, one per primary.
pub struct ClusterLinks {
    endpoint: Arc<Endpoint>,
    /// The nodes `REDIS_URL` names, asked first for the slot map.
    seeds: Vec<Server>,
    timing: Timing,
    command_timeout: Duration,
    buffer: BufferLimits,
    shutdown: CancellationToken,
    /// Raised by a link that broke or could not connect: read the slot map again.
    stale: Arc<AtomicBool>,
    /// One refresh at a time; the generation tells a caller whether the map changed
    /// since the one that sent it to the wrong node.
    map: tokio::sync::Mutex<Cached>,
    links: Mutex<HashMap<Server, Shard>>,
}

#[derive(Default)]
struct Cached {
    map: Option<Arc<SlotMap>>,
    generation: u64,
}

impl ClusterLinks {
    /// No connection is opened until a stream needs one.
    pub fn new(
        endpoint: Arc<Endpoint>,
        seeds: Vec<Server>,
        timing: Timing,
        command_timeout: Duration,
        buffer: BufferLimits,
        shutdown: CancellationToken,
    ) -> ClusterLinks {
        ClusterLinks {
            endpoint,
            seeds,
            timing,
            command_timeout,
            buffer,
            shutdown,
            stale: Arc::new(AtomicBool::new(false)),
            map: tokio::sync::Mutex::new(Cached::default()),
            links: Mutex::new(HashMap::new()),
        }
    }

    /// Joins the sharded channel `name` on the primary that owns its slot, once
    /// Redis has confirmed the subscription (each attempt waits at most `wait`).
    pub async fn join(&self, name: Bytes, wait: Duration) -> Result<Subscription, StreamError> {
        let slot = key_slot(&name);
        let mut wrong = None;
        let mut moved_to: Option<Server> = None;
        let mut redirect = String::new();
        for _ in 0..ATTEMPTS {
            let (map, generation) = self.slot_map(wrong).await?;
            let owner = match moved_to.take().or_else(|| map.owner(slot).cloned()) {
                Some(owner) => owner,
                None => {
                    return Err(StreamError::Unavailable(format!(
                        "no cluster node serves hash slot {slot}"
                    )))
                }
            };
            let key = TopicKey {
                kind: TopicKind::Shard,
                name: name.clone(),
            };
            match self.enter(&owner, key).confirmed(wait).await {
                Err(StreamError::Redis(text)) if is_redirect(&text) => {
                    wrong = Some(generation);
                    moved_to = moved_target(&text, &owner);
                    redirect = text;
                }
                Err(StreamError::Redis(text)) if is_cluster_unavailable(&text) => {
                    return Err(StreamError::Unavailable(text))
                }
                other => return other,
            }
        }
        Err(StreamError::Unavailable(format!(
            "the cluster still redirects hash slot {slot} after {ATTEMPTS} attempts: {redirect}"
        )))
    }

    /// Adds a stream on `owner`'s link (started on first use). Under the links lock,
    /// so an idle link cannot be stopped between lookup and entry.
    fn enter(&self, owner: &Server, key: TopicKey) -> Joining {
        let mut links = self.lock();
        let shard = links.entry(owner.clone()).or_insert_with(|| {
            Shard::start(
                Arc::new(self.endpoint.at(owner.clone())),
                "restash:spubsub",
                Recovery::EndStreams(self.stale.clone()),
                self.timing,
                self.buffer,
                self.shutdown.clone(),
            )
        });
        shard.enter(key)
    }

    /// The cached slot map, read again first if a link raised the stale flag, if
    /// there is none yet, or if it is still the map of generation `wrong`.
    async fn slot_map(&self, wrong: Option<u64>) -> Result<(Arc<SlotMap>, u64), StreamError> {
        let mut cached = self.map.lock().await;
        let stale = self.stale.swap(false, Ordering::AcqRel);
        if let (false, Some(map), false) = (
            stale,
            &cached.map,
            wrong.is_some_and(|g| g == cached.generation),
        ) {
            return Ok((map.clone(), cached.generation));
        }
        let mut seeds = self.seeds.clone();
        if let Some(map) = &cached.map {
            seeds.extend(
                map.primaries()
                    .into_iter()
                    .filter(|s| !self.seeds.contains(s)),
            );
        }
        let fetched = slots::fetch(
            &self.endpoint,
            &seeds,
            self.timing.connect,
            self.command_timeout,
        )
        .await;
        match fetched {
            Ok(map) => {
                self.forget_idle(&map);
                let map = Arc::new(map);
                cached.map = Some(map.clone());
                cached.generation += 1;
                Ok((map, cached.generation))
            }
            Err(error) => {
                if stale {
                    self.stale.store(true, Ordering::Release);
                }
                Err(StreamError::Unavailable(format!(
                    "cannot read the cluster's slot map: {error}"
                )))
            }
        }
    }

    /// Stops the idle links of nodes that are no longer primaries.
    fn forget_idle(&self, map: &SlotMap) {
        let primaries = map.primaries();
        self.lock().retain(|server, shard| {
            let keep = primaries.contains(server) || !shard.is_idle();
            if !keep {
                shard.stop();
            }
            keep
        });
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Server, Shard>> {
        self.links
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `MOVED 3999 127.0.0.1:6381` or `ASK …`: another node serves the slot.
fn is_redirect(text: &str) -> bool {
    text.starts_with("MOVED ") || text.starts_with("ASK ")
}

/// The node a `MOVED <slot> <host>:<port>` names (an empty host is `asked`'s).
fn moved_target(text: &str, asked: &Server) -> Option<Server> {
    let address = text.strip_prefix("MOVED ")?.split_whitespace().nth(1)?;
    let (host, port) = address.rsplit_once(':')?;
    let host = if host.is_empty() {
        asked.host.to_string()
    } else {
        host.to_string()
    };
    Some(Server::new(host, port.parse().ok()?))
}

/// The cluster cannot serve the slot right now.
fn is_cluster_unavailable(text: &str) -> bool {
    text.starts_with("CLUSTERDOWN") || text.starts_with("TRYAGAIN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_redirects_from_other_errors() {
        assert!(is_redirect("MOVED 3999 127.0.0.1:6381"));
        assert!(is_redirect("ASK 3999 127.0.0.1:6381"));
        assert!(!is_redirect("ERR unknown command"));
        assert!(is_cluster_unavailable("CLUSTERDOWN The cluster is down"));
        assert!(is_cluster_unavailable(
            "TRYAGAIN Multiple keys request during rehashing"
        ));
        assert!(!is_cluster_unavailable("MOVED 1 h:1"));
    }

    #[test]
    fn reads_the_node_a_redirect_names() {
        let asked = Server::new("10.0.0.1", 7000);
        assert_eq!(
            moved_target("MOVED 3999 10.0.0.2:7001", &asked),
            Some(Server::new("10.0.0.2", 7001))
        );
        assert_eq!(
            moved_target("MOVED 3999 :7002", &asked),
            Some(Server::new("10.0.0.1", 7002))
        );
        assert_eq!(moved_target("ASK 3999 10.0.0.2:7001", &asked), None);
        assert_eq!(moved_target("MOVED 3999", &asked), None);
    }
}
