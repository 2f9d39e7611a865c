//! Prometheus metrics: one process-wide recorder, rendered at `GET /metrics`.
//!
//! Other modules record with the `metrics` macros (`metrics::counter!(…)`); the
//! recorder installed here collects them. Labels are bounded sets only: routes
//! come from axum's matched route pattern, command names from the server's own
//! command table (anything else is `other`), never keys or raw paths.
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `restash_http_requests_total` | counter | `route`, `method`, `status` |
//! | `restash_http_request_duration_seconds` | histogram | `route`, `method` |
//! | `restash_http_requests_in_flight` | gauge | |
//! | `restash_redis_commands_total` | counter | `command` |
//! | `restash_redis_errors_total` | counter | `kind` (`unavailable`, `timeout`) |
//! | `restash_load_shed_total` | counter | |
//! | `restash_redis_reconnects_total` | counter | `pool` (`shared`, `transactions`) |
//! | `restash_redis_redirects_total` | counter | `kind` (`retried`, `ask`) |
//! | `restash_redis_pool_connections` | gauge | `pool` |
//! | `restash_redis_pool_in_use` | gauge | `pool` (`transactions`) |
//! | `restash_build_info` | gauge | `version` |

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::policy::CommandTable;
use crate::protocol::Command;

/// Requests by route, method and status.
pub const REQUESTS_TOTAL: &str = "restash_http_requests_total";
/// Request latency in seconds, by route and method.
pub const REQUEST_DURATION: &str = "restash_http_request_duration_seconds";
/// Requests being handled right now.
pub const IN_FLIGHT: &str = "restash_http_requests_in_flight";
/// Commands received for Redis, by command name.
pub const REDIS_COMMANDS_TOTAL: &str = "restash_redis_commands_total";
/// Requests that failed because Redis was unreachable (503) or late (504).
pub const REDIS_ERRORS_TOTAL: &str = "restash_redis_errors_total";
/// Requests refused because `RESTASH_MAX_CONCURRENCY` requests were in flight.
pub const LOAD_SHED_TOTAL: &str = "restash_load_shed_total";

/// Reconnections to Redis after a lost connection, by pool.
pub const REDIS_RECONNECTS_TOTAL: &str = "restash_redis_reconnects_total";
/// Cluster redirects: commands sent again after the slot map was read (`retried`) or
/// to an importing node after `ASKING` (`ask`).
pub const REDIS_REDIRECTS_TOTAL: &str = "restash_redis_redirects_total";
/// Connections each pool holds.
pub const REDIS_POOL_CONNECTIONS: &str = "restash_redis_pool_connections";
/// Dedicated connections lent out right now (transactions).
pub const REDIS_POOL_IN_USE: &str = "restash_redis_pool_in_use";

/// Histogram buckets for request latency, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Longest command name counted by name (Redis' longest is under 32 bytes).
const MAX_NAME_BYTES: usize = 48;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle.
///
/// Safe to call many times (tests start many gateways in one process). If another
/// recorder was installed first, a detached handle is returned and logged.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.to_string()), LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        metrics::gauge!("restash_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        // Histograms keep raw samples until upkeep folds them into buckets.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("restash-metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the metrics upkeep thread");
        }
        handle
    })
}

/// The current metrics in Prometheus text format.
pub fn render() -> String {
    handle().render()
}

fn describe() {
    metrics::describe_counter!(REQUESTS_TOTAL, "HTTP requests by route, method and status");
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency by route and method"
    );
    metrics::describe_gauge!(IN_FLIGHT, "HTTP requests being handled");
    metrics::describe_counter!(
        REDIS_COMMANDS_TOTAL,
        "commands received for Redis by name (names outside the server's command table: other)"
    );
    metrics::describe_counter!(
        REDIS_ERRORS_TOTAL,
        "requests failed because Redis was unreachable (unavailable, 503) or late (timeout, 504)"
    );
    metrics::describe_counter!(
        REDIS_RECONNECTS_TOTAL,
        "reconnections to Redis after a lost connection, by pool"
    );
    metrics::describe_counter!(
        REDIS_REDIRECTS_TOTAL,
        "cluster redirects followed: sent again after reading the slot map (retried) or to the \
         importing node of a slot being migrated, after ASKING (ask)"
    );
    metrics::describe_gauge!(REDIS_POOL_CONNECTIONS, "connections each Redis pool holds");
    metrics::describe_gauge!(
        REDIS_POOL_IN_USE,
        "dedicated Redis connections lent out right now (transactions)"
    );
    metrics::describe_counter!(
        LOAD_SHED_TOTAL,
        "requests refused with 503 because RESTASH_MAX_CONCURRENCY requests were in flight"
    );
}

/// Records one finished HTTP request. Handles are cached per thread, so the
/// hot path neither allocates label strings nor searches the registry.
pub fn record_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    let method = method_label(method);
    REQUEST_METRICS.with(|cache| {
        let mut cache = cache.borrow_mut();
        let route_metrics = match cache.get_mut(route) {
            Some(found) => found,
            None => cache.entry(route.to_owned()).or_default(),
        };
        route_metrics.record(route, method, status, elapsed);
    });
}

thread_local! {
    /// This thread's handles, by route (routes are a fixed set of patterns).
    static REQUEST_METRICS: RefCell<foldhash::HashMap<String, RouteMetrics>> = RefCell::default();
    /// This thread's command counters, by lower-case name (known names only).
    static COMMAND_COUNTERS: RefCell<foldhash::HashMap<Box<[u8]>, Counter>> = RefCell::default();
}

/// Metric handles of one route.
#[derive(Default)]
struct RouteMetrics {
    /// By method and status: a handful per route.
    counters: Vec<(&'static str, u16, Counter)>,
    /// By method.
    durations: Vec<(&'static str, Histogram)>,
}

impl RouteMetrics {
    fn record(&mut self, route: &str, method: &'static str, status: u16, elapsed: Duration) {
        match self
            .counters
            .iter()
            .find(|(m, s, _)| *m == method && *s == status)
        {
            Some((_, _, counter)) => counter.increment(1),
            None => {
                let counter = metrics::counter!(
                    REQUESTS_TOTAL,
                    "route" => route.to_owned(),
                    "method" => method,
                    "status" => status.to_string()
                );
                counter.increment(1);
                self.counters.push((method, status, counter));
            }
        }
        match self.durations.iter().find(|(m, _)| *m == method) {
            Some((_, histogram)) => histogram.record(elapsed.as_secs_f64()),
            None => {
                let histogram = metrics::histogram!(
                    REQUEST_DURATION, "route" => route.to_owned(), "method" => method
                );
                histogram.record(elapsed.as_secs_f64());
                self.durations.push((method, histogram));
            }
        }
    }
}

/// Counts a request that failed on the Redis transport: 503 `unavailable`, 504 `timeout`.
pub fn record_redis_error(status: u16) {
    let kind = match status {
        503 => "unavailable",
        504 => "timeout",
        _ => return,
    };
    metrics::counter!(REDIS_ERRORS_TOTAL, "kind" => kind).increment(1);
}

/// Counts a reconnection of `pool` to Redis.
pub fn record_redis_reconnect(pool: &'static str) {
    metrics::counter!(REDIS_RECONNECTS_TOTAL, "pool" => pool).increment(1);
}

/// Counts a cluster redirect followed: `retried` or `ask`.
pub fn record_redirect(kind: &'static str) {
    metrics::counter!(REDIS_REDIRECTS_TOTAL, "kind" => kind).increment(1);
}

/// Sets how many connections `pool` holds.
pub fn set_pool_size(pool: &'static str, size: usize) {
    // Backends connect before the HTTP layer exists: install the recorder first.
    handle();
    metrics::gauge!(REDIS_POOL_CONNECTIONS, "pool" => pool).set(size as f64);
}

/// Marks one dedicated connection of `pool` as lent out until the guard drops.
pub struct PoolLease(&'static str);

impl PoolLease {
    /// +1 on the in-use gauge of `pool` now, -1 when dropped.
    pub fn start(pool: &'static str) -> PoolLease {
        metrics::gauge!(REDIS_POOL_IN_USE, "pool" => pool).increment(1.0);
        PoolLease(pool)
    }
}

impl Drop for PoolLease {
    fn drop(&mut self) {
        metrics::gauge!(REDIS_POOL_IN_USE, "pool" => self.0).decrement(1.0);
    }
}

/// Counts a request refused by the concurrency limit.
pub fn record_load_shed() {
    metrics::counter!(LOAD_SHED_TOTAL).increment(1);
}

/// Tracks the in-flight gauge: +1 now, -1 when dropped (also on cancellation).
pub struct InFlight(());

impl InFlight {
    /// Counts one more request in flight.
    pub fn start() -> InFlight {
        in_flight_gauge().increment(1.0);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        in_flight_gauge().decrement(1.0);
    }
}

fn in_flight_gauge() -> &'static Gauge {
    static GAUGE: OnceLock<Gauge> = OnceLock::new();
    GAUGE.get_or_init(|| {
        handle();
        metrics::gauge!(IN_FLIGHT)
    })
}

fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// The label for a command name: its lower-case name when the server's command
/// table knows it, else `other` (so that clients cannot create label values).
pub fn command_label(name: &[u8], table: Option<&CommandTable>) -> String {
    let Some(table) = table else {
        return "other".to_string();
    };
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return "other".to_string();
    }
    let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
    let bare = Command::from_parts([Bytes::from(lower.clone())]);
    // Containers (CLIENT, CONFIG, …) resolve only with a subcommand; all have HELP.
    let container = Command::from_parts([Bytes::from(lower.clone()), Bytes::from_static(b"help")]);
    if table.lookup(&bare).is_some() || table.lookup(&container).is_some() {
        lower
    } else {
        "other".to_string()
    }
}

/// Counts one command received for Redis, by name (see [`command_label`]).
pub fn record_command(name: &[u8], table: Option<&CommandTable>) {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return other_command_counter().increment(1);
    }
    let mut buffer = [0u8; MAX_NAME_BYTES];
    let lower = &mut buffer[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let lower = &*lower;
    let cached = COMMAND_COUNTERS.with(|cache| {
        cache
            .borrow()
            .get(lower)
            .map(|counter| counter.increment(1))
    });
    if cached.is_some() {
        return;
    }
    let label = command_label(lower, table);
    if label == "other" {
        // Not cached: unknown names are the client's to invent.
        return other_command_counter().increment(1);
    }
    let counter = metrics::counter!(REDIS_COMMANDS_TOTAL, "command" => label);
    counter.increment(1);
    COMMAND_COUNTERS.with(|cache| cache.borrow_mut().insert(lower.into(), counter));
}

fn other_command_counter() -> &'static Counter {
    static OTHER: OnceLock<Counter> = OnceLock::new();
    OTHER.get_or_init(|| {
        handle();
        metrics::counter!(REDIS_COMMANDS_TOTAL, "command" => "other")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_need_a_table() {
        assert_eq!(command_label(b"GET", None), "other");
    }
}
