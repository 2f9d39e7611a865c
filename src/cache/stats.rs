//! Cache events: a per-process Prometheus counter (through the `metrics` facade) and
//! per-namespace counters in Redis shared by every instance (`GET /cache/<ns>`).
//!
//! The Redis counters are not written per event: each process adds up its events in
//! [`Pending`] and sends them as one pipeline of `HINCRBY` every [`FLUSH_INTERVAL`],
//! before it answers a stats request, and at shutdown. A cache hit thus costs Redis one
//! command, not two; another instance's events show up within the interval. A pipeline
//! that fails is not sent again (some of it may have run): the counts are at most once.
//!
//! The counter is `restash_cache_events_total{namespace, event}`. Namespaces are chosen by
//! operators, not by callers' data, but a caller with a token could still invent many; so each
//! process gives its own label to the first [`MAX_NAMESPACE_LABELS`] namespaces it sees and
//! counts the rest under `namespace="_other"`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::keys::Namespace;

/// How often a process adds its pending event counts to the shared Redis counters.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Namespaces with their own metric label, per process.
pub const MAX_NAMESPACE_LABELS: usize = 100;
/// The label of namespaces beyond [`MAX_NAMESPACE_LABELS`].
pub const OTHER_LABEL: &str = "_other";
/// The metric name.
pub const METRIC: &str = "restash_cache_events_total";

/// Something that happened to a cache request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A fresh value was served (directly or after waiting for a lease holder).
    Hit,
    /// No value was served (404 `X-Cache: MISS`).
    Miss,
    /// A stale value was served.
    Stale,
    /// A lease was handed out.
    LeaseGrant,
    /// A request waited for another caller's lease.
    LeaseWait,
    /// A value was stored.
    Fill,
    /// Redis was unreachable or slow: the read failed open (not stored in Redis).
    Bypass,
}

impl Event {
    /// Every event, in the order of the JSON stats.
    pub const ALL: [Event; 7] = [
        Event::Hit,
        Event::Miss,
        Event::Stale,
        Event::LeaseGrant,
        Event::LeaseWait,
        Event::Fill,
        Event::Bypass,
    ];

    /// The position of the event in [`Event::ALL`] (and in per-event arrays).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The `event` label value.
    pub fn label(self) -> &'static str {
        match self {
            Event::Hit => "hit",
            Event::Miss => "miss",
            Event::Stale => "stale",
            Event::LeaseGrant => "lease_grant",
            Event::LeaseWait => "lease_wait",
            Event::Fill => "fill",
            Event::Bypass => "bypass",
        }
    }

    /// The field of the JSON stats (and of the Redis stats hash).
    pub fn field(self) -> &'static str {
        match self {
            Event::Hit => "hits",
            Event::Miss => "misses",
            Event::Stale => "stale_hits",
            Event::LeaseGrant => "lease_grants",
            Event::LeaseWait => "lease_waits",
            Event::Fill => "fills",
            Event::Bypass => "bypasses",
        }
    }

    /// Whether it is also counted in Redis (a bypass happens when Redis cannot be reached).
    pub fn shared(self) -> bool {
        self != Event::Bypass
    }
}

// Per-event arrays are indexed by `Event::index`, so `ALL` must list the events in
// their declaration order.
const _: () = {
    let mut i = 0;
    while i < Event::ALL.len() {
        assert!(Event::ALL[i].index() == i);
        i += 1;
    }
};

/// Event counts of this process not yet added to the shared Redis counters.
#[derive(Default)]
pub struct Pending {
    counts: Mutex<HashMap<Namespace, [u64; Event::ALL.len()]>>,
}

impl Pending {
    /// Counts one `event` of `ns` (events that are not [`Event::shared`] are ignored).
    pub fn add(&self, ns: &Namespace, event: Event) {
        self.add_many(ns, event, 1);
    }

    /// Counts `n` events (gives back counts a flush could not write).
    pub fn add_many(&self, ns: &Namespace, event: Event, n: u64) {
        if !event.shared() || n == 0 {
            return;
        }
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        match counts.get_mut(ns) {
            Some(row) => row[event.index()] += n,
            None => {
                let mut row = [0; Event::ALL.len()];
                row[event.index()] = n;
                counts.insert(ns.clone(), row);
            }
        }
    }

    /// Takes every pending count: `(namespace, event, count)`, counts above zero only.
    pub fn take(&self) -> Vec<(Namespace, Event, u64)> {
        let counts = match self.counts.lock() {
            Ok(mut counts) => std::mem::take(&mut *counts),
            Err(_) => return Vec::new(),
        };
        counts
            .into_iter()
            .flat_map(|(ns, row)| {
                Event::ALL
                    .iter()
                    .filter(move |e| row[e.index()] > 0)
                    .map(move |e| (ns.clone(), *e, row[e.index()]))
            })
            .collect()
    }
}

/// The Prometheus counters of each namespace, with labels bounded per process:
/// registered once per namespace, not looked up per event.
pub struct Labels {
    seen: Mutex<HashMap<String, EventCounters>>,
    other: std::sync::OnceLock<EventCounters>,
    cap: usize,
}

/// One counter handle per event, for one namespace label.
type EventCounters = [metrics::Counter; Event::ALL.len()];

fn register(label: &str) -> EventCounters {
    Event::ALL.map(|event| {
        metrics::counter!(METRIC, "namespace" => label.to_string(), "event" => event.label())
    })
}

impl Labels {
    /// At most `cap` distinct namespace labels.
    pub fn new(cap: usize) -> Labels {
        Labels {
            seen: Mutex::new(HashMap::new()),
            other: std::sync::OnceLock::new(),
            cap,
        }
    }

    /// Counts `event` under `namespace`'s own label while there is room, then under
    /// [`OTHER_LABEL`].
    pub fn count(&self, namespace: &str, event: Event) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        if let Some(counters) = seen.get(namespace) {
            counters[event.index()].increment(1);
            return;
        }
        if seen.len() < self.cap {
            let counters = register(namespace);
            counters[event.index()].increment(1);
            seen.insert(namespace.to_string(), counters);
            return;
        }
        drop(seen);
        self.other.get_or_init(|| register(OTHER_LABEL))[event.index()].increment(1);
    }
}

/// The JSON stats of `namespace` from the Redis hash's field/value pairs.
pub fn stats_json<'a>(
    namespace: &str,
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    object.insert("namespace".into(), namespace.into());
    for event in Event::ALL.iter().filter(|e| e.shared()) {
        object.insert(event.field().into(), 0.into());
    }
    for (field, value) in pairs {
        let Ok(field) = std::str::from_utf8(field) else {
            continue;
        };
        if let Some(event) = Event::ALL.iter().find(|e| e.field() == field) {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            object.insert(event.field().into(), n.into());
        }
    }
    serde_json::Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn counters_are_bounded_per_namespace_label() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let labels = Labels::new(2);
            labels.count("a", Event::LeaseGrant);
            labels.count("a", Event::LeaseGrant);
            labels.count("b", Event::Bypass);
            labels.count("c", Event::Hit);
            labels.count("d", Event::Hit);
            labels.count("a", Event::Hit);
        });
        let mut seen = vec![];
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let DebugValue::Counter(n) = value else {
                panic!("not a counter")
            };
            assert_eq!(key.key().name(), METRIC);
            if n > 0 {
                seen.push((labels.join(","), n));
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                ("namespace=_other,event=hit".to_string(), 2),
                ("namespace=a,event=hit".to_string(), 1),
                ("namespace=a,event=lease_grant".to_string(), 2),
                ("namespace=b,event=bypass".to_string(), 1),
            ]
        );
    }

    #[test]
    fn pending_counts_add_up_and_are_taken_once() {
        let pending = Pending::default();
        let (a, b) = (
            Namespace::parse("a").unwrap(),
            Namespace::parse("b").unwrap(),
        );
        pending.add(&a, Event::Hit);
        pending.add(&a, Event::Hit);
        pending.add(&b, Event::Fill);
        pending.add(&a, Event::Bypass); // not shared: never sent to Redis
        pending.add_many(&b, Event::Fill, 3);
        let mut taken: Vec<(String, &str, u64)> = pending
            .take()
            .into_iter()
            .map(|(ns, e, n)| (ns.as_str().to_string(), e.field(), n))
            .collect();
        taken.sort();
        assert_eq!(
            taken,
            [("a".to_string(), "hits", 2), ("b".to_string(), "fills", 4)]
        );
        assert!(pending.take().is_empty());
    }

    #[test]
    fn json_stats() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"hits", b"3"), (b"fills", b"1"), (b"junk", b"9")];
        assert_eq!(
            stats_json("ns", pairs.into_iter()),
            serde_json::json!({
                "namespace": "ns", "hits": 3, "misses": 0, "stale_hits": 0,
                "lease_grants": 0, "lease_waits": 0, "fills": 1
            })
        );
    }
}
