//! Cache events: a per-process Prometheus counter (through the `metrics` facade) and
//! per-namespace counters in Redis shared by every instance (`GET /cache/<ns>`).
//!
//! The counter is `restash_cache_events_total{namespace, event}`. Namespaces are chosen by
//! operators, not by callers' data, but a caller with a token could still invent many; so each
//! process gives its own label to the first [`MAX_NAMESPACE_LABELS`] namespaces it sees and
//! counts the rest under `namespace="_other"`.

use std::collections::HashSet;
use std::sync::Mutex;

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

/// Namespace label values, bounded per process.
pub struct Labels {
    seen: Mutex<HashSet<String>>,
    cap: usize,
}

impl Labels {
    /// At most `cap` distinct namespace labels.
    pub fn new(cap: usize) -> Labels {
        Labels {
            seen: Mutex::new(HashSet::new()),
            cap,
        }
    }

    /// The label for `namespace`: itself while there is room, then [`OTHER_LABEL`].
    pub fn label(&self, namespace: &str) -> String {
        let Ok(mut seen) = self.seen.lock() else {
            return OTHER_LABEL.to_string();
        };
        if seen.contains(namespace) {
            return namespace.to_string();
        }
        if seen.len() < self.cap {
            seen.insert(namespace.to_string());
            return namespace.to_string();
        }
        OTHER_LABEL.to_string()
    }
}

/// Increments the process counter of `event` under the namespace label `label`.
pub fn count(label: String, event: Event) {
    metrics::counter!(METRIC, "namespace" => label, "event" => event.label()).increment(1);
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
    fn labels_are_bounded() {
        let labels = Labels::new(2);
        assert_eq!(labels.label("a"), "a");
        assert_eq!(labels.label("b"), "b");
        assert_eq!(labels.label("c"), OTHER_LABEL);
        assert_eq!(labels.label("a"), "a");
    }

    #[test]
    fn counter_names_and_labels() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            count("ns".into(), Event::LeaseGrant);
            count("ns".into(), Event::LeaseGrant);
            count("ns".into(), Event::Bypass);
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
            seen.push((labels.join(","), n));
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                ("namespace=ns,event=bypass".to_string(), 1),
                ("namespace=ns,event=lease_grant".to_string(), 2)
            ]
        );
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
