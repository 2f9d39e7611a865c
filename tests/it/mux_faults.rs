//! Faults the own multiplexer (src/backend/mux) must survive, found in review:
//! connections killed under load must not leak the command buffer, a Redis at
//! `maxclients` must not break a connection for good, reconnections back off,
//! and replies nested deeper than any fixed limit are answered. Each test says
//! what it guards against; the `through_fred` ones are the fred baselines.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{test_config, Gateway, RedisServer, TOKEN};
use crate::multiplexer::busy_script;

/// Sends one raw RESP command on `stream` and reads (some of) its reply.
async fn raw(stream: &mut tokio::net::TcpStream, args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
    }
    stream.write_all(out.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = stream.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

/// How many of `count` GETs sent while a 700 ms script occupies the only
/// connection are refused with "RESTASH_COMMAND_BUFFER". With a buffer larger
/// than 1 + `count` and nothing leaked, none is.
async fn refused_while_busy(gw: &Gateway, count: usize) -> usize {
    let script = busy_script(700);
    let slow = gw.command(json!(["EVAL", script, "0"]));
    let probes = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let gets = (0..count).map(|_| gw.command(json!(["GET", "review:probe"])));
        join_all(gets).await
    };
    let ((slow_status, slow_body), answers) = tokio::join!(slow, probes);
    assert_eq!(slow_status, 200, "{slow_body}");
    if let Some((_, body)) = answers.iter().find(|(s, _)| *s != 200) {
        eprintln!("first refusal: {body}");
    }
    answers
        .iter()
        .filter(|(status, body)| {
            *status == 503
                && body["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("RESTASH_COMMAND_BUFFER"))
        })
        .count()
}

/// Connections killed under concurrent load must not leak the command count:
/// afterwards the whole RESTASH_COMMAND_BUFFER is usable again. (Found in
/// review: jobs held across the writer's yield were dropped uncounted when the
/// connection ended, until every request answered 503.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_under_load_do_not_leak_the_command_buffer() {
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.redis_connections = 1;
    config.command_buffer = 100;
    let gw = Arc::new(Gateway::start_with(config).await);

    // Baseline: nothing leaked yet.
    assert_eq!(refused_while_busy(&gw, 60).await, 0);

    // 48 callers hammer the one connection while Redis drops it again and again.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..48 {
        let gw = gw.clone();
        let stop = stop.clone();
        let done = done.clone();
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = gw
                    .http
                    .post(gw.at("/"))
                    .bearer_auth(TOKEN)
                    .body(r#"["GET","review:k"]"#)
                    .send()
                    .await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut killer = tokio::net::TcpStream::connect(("127.0.0.1", redis.port))
        .await
        .unwrap();
    let started = Instant::now();
    let mut kills = 0;
    while started.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let reply = raw(
            &mut killer,
            &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
        )
        .await;
        if reply.starts_with(':') && reply != ":0\r\n" {
            kills += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let _ = task.await;
    }
    eprintln!(
        "{kills} kills, {} requests during the kills",
        done.load(Ordering::Relaxed)
    );

    // Wait until the connection is back.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, body) = gw.command(json!(["PING"])).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PING never answered again: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused_while_busy(&gw, 60).await;
    assert_eq!(
        refused, 0,
        "{refused} of 60 commands refused with RESTASH_COMMAND_BUFFER=100 while only \
         one other command was waiting: the queued counter leaked"
    );
}

/// Nests `depth` Lua tables around a number: a reply of `depth` nested arrays.
fn nested_script(depth: usize) -> String {
    format!("local t = {{7}} for i = 2, {depth} do t = {{t}} end return t")
}

fn nesting_of(mut value: &Value) -> usize {
    let mut depth = 0;
    while let Some(items) = value.as_array() {
        depth += 1;
        value = &items[0];
    }
    depth
}

/// Lua scripts can return tables nested thousands of levels deep, and Redis
/// sends them as nested arrays: the multiplexer's parser has no depth limit, and
/// other callers' replies on the same connection are unaffected. (Found in
/// review: a 64-level limit dropped the shared connection and answered 503 to
/// every caller on it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_script_replies_are_answered() {
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.redis_connections = 1;
    let gw = Gateway::start_with(config).await;
    let script = nested_script(70);

    // Another caller's command is on the same connection while the reply arrives.
    let victim_script = busy_script(300);
    let victim = gw.command(json!(["EVAL", victim_script, "0"]));
    let deep = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        gw.command(json!(["EVAL", script, "0"])).await
    };
    let ((victim_status, victim_body), (status, body)) = tokio::join!(victim, deep);
    assert_eq!(status, 200, "{body}");
    assert_eq!(nesting_of(&body["result"]), 70, "{body}");
    assert_eq!(victim_status, 200, "{victim_body}");
}

/// The same reply through fred's connections (RESTASH_REDIS_MULTIPLEXER=fred):
/// the baseline the multiplexer should match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_script_replies_through_fred() {
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.own_multiplexer = false;
    let gw = Gateway::start_with(config).await;
    let (status, body) = gw.command(json!(["EVAL", nested_script(70), "0"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(nesting_of(&body["result"]), 70, "{body}");
}

/// A raw connection to `redis` for the test's own commands.
async fn raw_connection(redis: &RedisServer) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(("127.0.0.1", redis.port))
        .await
        .unwrap()
}

/// The value of `field` in `INFO stats`.
async fn info_stat(stream: &mut tokio::net::TcpStream, field: &str) -> u64 {
    let mut out = String::from("*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n");
    stream.write_all(out.as_bytes()).await.unwrap();
    out.clear();
    let mut buf = vec![0u8; 16 * 1024];
    let n = stream.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {text}"))
}

/// Drops every gateway connection while Redis is at `maxclients`, so that each
/// reconnection is accepted and answered "-ERR max number of clients reached"
/// at once (what Redis does when full), for `full_for`; then lifts the limit.
/// Returns the connections Redis rejected meanwhile.
async fn drop_connections_while_full(redis: &RedisServer, full_for: Duration) -> u64 {
    let mut holder = raw_connection(redis).await;
    let before = info_stat(&mut holder, "rejected_connections").await;
    assert_eq!(
        raw(&mut holder, &["CONFIG", "SET", "maxclients", "1"]).await,
        "+OK\r\n"
    );
    let killed = raw(
        &mut holder,
        &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
    )
    .await;
    assert!(killed.starts_with(':') && killed != ":0\r\n", "{killed}");
    tokio::time::sleep(full_for).await;
    let rejected = info_stat(&mut holder, "rejected_connections").await - before;
    assert_eq!(
        raw(&mut holder, &["CONFIG", "SET", "maxclients", "10000"]).await,
        "+OK\r\n"
    );
    rejected
}

/// Redis at maxclients accepts a connection, writes "-ERR max number of clients
/// reached" and closes it. The handshake's PING turns that into a failed
/// connect, and a reply with no waiter never touches the command count, so the
/// connection works again once Redis has room. (Found in review: the count
/// wrapped to usize::MAX and every later request got 503, forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_does_not_break_the_connection_for_good() {
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.redis_connections = 1;
    let gw = Gateway::start_with(config).await;
    assert_eq!(gw.command(json!(["PING"])).await.0, 200);

    drop_connections_while_full(&redis, Duration::from_millis(300)).await;

    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, body) = gw.command(json!(["PING"])).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PING never answered again once Redis had room: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server that accepts and then closes at once (Redis at maxclients, a proxy
/// in front of a Redis that is down) must not make a link reconnect in a tight
/// loop: after a lost connection the supervisor always waits (50 ms, doubling).
/// (Found in review: the backoff was reset to zero on every accepted connection.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnections_back_off_when_redis_closes_at_once() {
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.redis_connections = 1;
    config.transaction_connections = 1;
    let gw = Gateway::start_with(config).await;
    assert_eq!(gw.command(json!(["PING"])).await.0, 200);

    let rejected = drop_connections_while_full(&redis, Duration::from_millis(500)).await;
    // With an exponential backoff from 50 ms, a handful per connection.
    assert!(
        rejected < 100,
        "{rejected} connections rejected in 500 ms: reconnecting without backoff"
    );
}

/// The same through fred's connections only (RESTASH_REDIS_MULTIPLEXER=fred): the baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnections_back_off_through_fred() {
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.own_multiplexer = false;
    config.redis_connections = 1;
    config.transaction_connections = 1;
    let gw = Gateway::start_with(config).await;
    assert_eq!(gw.command(json!(["PING"])).await.0, 200);
    let rejected = drop_connections_while_full(&redis, Duration::from_millis(500)).await;
    eprintln!("fred: {rejected} rejected in 500 ms");
    assert!(rejected < 100, "{rejected} connections rejected in 500 ms");
    let deadline = Instant::now() + Duration::from_secs(3);
    while gw.command(json!(["PING"])).await.0 != 200 {
        assert!(Instant::now() < deadline, "fred never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
