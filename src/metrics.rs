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
//! | `restash_redis_pool_connections` | gauge | `pool` |
//! | `restash_redis_pool_in_use` | gauge | `pool` (`transactions`) |
//! | `restash_build_info` | gauge | `version` |

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
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
/// Connections each pool holds.
pub const REDIS_POOL_CONNECTIONS: &str = "restash_redis_pool_connections";
/// Dedicated connections lent out right now (transactions).
pub const REDIS_POOL_IN_USE: &str = "restash_redis_pool_in_use";

/// Histogram buckets for request latency, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Most distinct command names one request body may contribute; the rest count as `other`.
const MAX_NAMES_PER_REQUEST: usize = 64;
/// Longest command name the scanner keeps (Redis' longest is under 32 bytes).
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

/// Records one finished HTTP request.
pub fn record_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    let route = route.to_string();
    let method = method_label(method);
    metrics::counter!(
        REQUESTS_TOTAL,
        "route" => route.clone(),
        "method" => method,
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(REQUEST_DURATION, "route" => route, "method" => method)
        .record(elapsed.as_secs_f64());
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

/// Sets how many connections `pool` holds.
pub fn set_pool_size(pool: &'static str, size: usize) {
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
        metrics::gauge!(IN_FLIGHT).increment(1.0);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT).decrement(1.0);
    }
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

/// Counts commands by name (already aggregated per request).
pub fn record_commands(names: &[(Vec<u8>, u64)], table: Option<&CommandTable>) {
    for (name, count) in names {
        metrics::counter!(REDIS_COMMANDS_TOTAL, "command" => command_label(name, table))
            .increment(*count);
    }
}

/// Where command names sit in a JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyShape {
    /// `["SET","k","v"]`: the first element of the top array.
    Command,
    /// `[["SET","k","v"],["GET","k"]]`: the first element of each inner array.
    Pipeline,
}

/// Finds command names in a JSON request body as it streams past, chunk by
/// chunk, without buffering it or parsing anything but the names.
///
/// The names count only if the body turned out to be one complete JSON array
/// ([`NameScanner::finish`]); a malformed body is refused by the handler anyway.
#[derive(Debug)]
pub struct NameScanner {
    target_depth: u32,
    depth: u32,
    in_string: bool,
    escaped: bool,
    expect_name: bool,
    capture: Option<Vec<u8>>,
    closed: bool,
    invalid: bool,
    names: Vec<(Vec<u8>, u64)>,
}

impl NameScanner {
    /// A scanner for a body of the given shape.
    pub fn new(shape: BodyShape) -> NameScanner {
        NameScanner {
            target_depth: match shape {
                BodyShape::Command => 1,
                BodyShape::Pipeline => 2,
            },
            depth: 0,
            in_string: false,
            escaped: false,
            expect_name: false,
            capture: None,
            closed: false,
            invalid: false,
            names: Vec::new(),
        }
    }

    /// Feeds the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        for &byte in chunk {
            if self.invalid {
                return;
            }
            self.step(byte);
        }
    }

    fn step(&mut self, byte: u8) {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
                self.capture = None;
            } else if byte == b'\\' {
                self.escaped = true;
                // Escaped names are unusual: count them as `other`.
                if self.capture.take().is_some() {
                    self.add(b"");
                }
            } else if byte == b'"' {
                self.in_string = false;
                if let Some(name) = self.capture.take() {
                    self.add(&name);
                }
            } else if let Some(name) = self.capture.as_mut() {
                if name.len() < MAX_NAME_BYTES {
                    name.push(byte);
                } else {
                    self.capture = None;
                    self.add(b"");
                }
            }
            return;
        }
        if byte.is_ascii_whitespace() {
            return;
        }
        if self.closed {
            self.invalid = true;
            return;
        }
        match byte {
            b'[' => {
                self.depth += 1;
                self.expect_name = self.depth == self.target_depth;
            }
            b']' => {
                self.expect_name = false;
                match self.depth {
                    0 => self.invalid = true,
                    1 => {
                        self.depth = 0;
                        self.closed = true;
                    }
                    _ => self.depth -= 1,
                }
            }
            b'"' => {
                if self.depth == 0 {
                    self.invalid = true;
                    return;
                }
                self.in_string = true;
                if self.expect_name {
                    self.capture = Some(Vec::with_capacity(8));
                }
                self.expect_name = false;
            }
            _ => {
                if self.depth == 0 {
                    self.invalid = true;
                }
                self.expect_name = false;
            }
        }
    }

    fn add(&mut self, name: &[u8]) {
        let name: Vec<u8> = name.to_ascii_uppercase();
        if let Some(entry) = self.names.iter_mut().find(|(n, _)| *n == name) {
            entry.1 += 1;
        } else if self.names.len() < MAX_NAMES_PER_REQUEST {
            self.names.push((name, 1));
        } else if let Some(entry) = self.names.iter_mut().find(|(n, _)| n.is_empty()) {
            entry.1 += 1;
        } else {
            self.names.push((Vec::new(), 1));
        }
    }

    /// The names found, upper-cased with their counts, if the body was one
    /// complete JSON array; `None` otherwise.
    pub fn finish(self) -> Option<Vec<(Vec<u8>, u64)>> {
        (self.closed && !self.invalid && !self.in_string).then_some(self.names)
    }
}

/// The command name of a path-style request (`/get/key` → `GET`), if any.
pub fn path_command_name(path: &str) -> Option<&[u8]> {
    let name = path.trim_start_matches('/').split('/').next()?;
    (!name.is_empty()).then_some(name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(shape: BodyShape, chunks: &[&str]) -> Option<Vec<(String, u64)>> {
        let mut scanner = NameScanner::new(shape);
        for chunk in chunks {
            scanner.feed(chunk.as_bytes());
        }
        scanner.finish().map(|names| {
            names
                .into_iter()
                .map(|(n, c)| (String::from_utf8(n).unwrap(), c))
                .collect()
        })
    }

    #[test]
    fn single_command_name() {
        assert_eq!(
            scan(BodyShape::Command, &[r#" ["set", "k", "[\"x\"]", 1] "#]),
            Some(vec![("SET".into(), 1)])
        );
    }

    #[test]
    fn pipeline_names_across_chunk_boundaries() {
        let body = r#"[["SET","a","]"],["get","a"],  ["SET", "b", "\"["]]"#;
        let whole = scan(BodyShape::Pipeline, &[body]);
        assert_eq!(whole, Some(vec![("SET".into(), 2), ("GET".into(), 1)]));
        for split in 0..body.len() {
            let (a, b) = body.split_at(split);
            assert_eq!(
                scan(BodyShape::Pipeline, &[a, b]),
                whole,
                "split at {split}"
            );
        }
    }

    #[test]
    fn keys_never_become_names() {
        let names = scan(BodyShape::Pipeline, &[r#"[["GET","secret-key"]]"#]).unwrap();
        assert_eq!(names, vec![("GET".into(), 1)]);
    }

    #[test]
    fn malformed_bodies_count_nothing() {
        assert_eq!(scan(BodyShape::Command, &[r#"["SET","k""#]), None);
        assert_eq!(scan(BodyShape::Command, &[r#"["SET"] x"#]), None);
        assert_eq!(scan(BodyShape::Command, &[r#"{"a":1}"#]), None);
        assert_eq!(scan(BodyShape::Command, &[""]), None);
    }

    #[test]
    fn odd_names_are_other() {
        let names = scan(BodyShape::Command, &[r#"["S\u0045T","k"]"#]).unwrap();
        assert_eq!(names, vec![("".into(), 1)]);
        let long = format!(r#"["{}"]"#, "x".repeat(100));
        assert_eq!(scan(BodyShape::Command, &[&long]).unwrap()[0].0, "");
    }

    #[test]
    fn path_names() {
        assert_eq!(path_command_name("/get/k"), Some(&b"get"[..]));
        assert_eq!(path_command_name("/dbsize"), Some(&b"dbsize"[..]));
        assert_eq!(path_command_name("/"), None);
    }

    #[test]
    fn labels_need_a_table() {
        assert_eq!(command_label(b"GET", None), "other");
    }
}
