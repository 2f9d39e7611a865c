//! restash's own multiplexed connections (single node, the default): login and
//! database selection, replies matched to the right callers under concurrency,
//! large pipelines in order, error replies that are not UTF-8, backpressure, and
//! `RESTASH_REDIS_MULTIPLEXER=fred` as the way back to fred's connections.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};

use crate::harness::{prefix, test_config, Gateway, RedisServer};

/// A Lua script that keeps Redis busy for `ms` milliseconds.
pub(crate) fn busy_script(ms: u64) -> String {
    format!(
        "local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] \
         repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > {} \
         return 1",
        ms * 1000
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_and_selects_the_database_of_the_url() {
    let redis = RedisServer::start();
    redis.cli(&["CONFIG", "SET", "requirepass", "s3cret"]);
    let url = format!("redis://:s3cret@127.0.0.1:{}/3", redis.port);
    let gw = Gateway::start_with(test_config(&url)).await;
    let key = format!("{}db3", prefix());
    assert_eq!(
        gw.command(json!(["SET", key, "in-three"])).await,
        (200, json!({"result": "OK"}))
    );
    let seen = redis.cli(&["-a", "s3cret", "--no-auth-warning", "-n", "3", "GET", &key]);
    assert_eq!(seen.trim(), "in-three");
    let in_zero = redis.cli(&[
        "-a",
        "s3cret",
        "--no-auth-warning",
        "-n",
        "0",
        "EXISTS",
        &key,
    ]);
    assert_eq!(in_zero.trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_answers_json_503() {
    let redis = RedisServer::start();
    redis.cli(&["CONFIG", "SET", "requirepass", "s3cret"]);
    let url = format!("redis://:wrong@127.0.0.1:{}", redis.port);
    let gw = Gateway::start_with(test_config(&url)).await;
    let (status, body) = gw.command(json!(["PING"])).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("ERR Redis is unavailable")),
        "{body}"
    );
    assert_eq!(gw.send(gw.http.get(gw.at("/readyz"))).await.0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_each_get_their_own_reply() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let p = prefix();
    let pairs: Vec<_> = (0..40)
        .map(|i| json!(["SET", format!("{p}k{i}"), format!("value-{i}")]))
        .collect();
    let (status, _) = gw.post("/pipeline", Value::Array(pairs).to_string()).await;
    assert_eq!(status, 200);
    let gets = (0..400).map(|n| {
        let i = n % 40;
        let key = format!("{p}k{i}");
        let gw = &gw;
        async move { (i, gw.command(json!(["GET", key])).await) }
    });
    for (i, (status, body)) in join_all(gets).await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"result": format!("value-{i}")}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_concurrent_pipelines_stay_in_order() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let p = prefix();
    // Above the 1,024-command chunk the backend sends at once.
    let incrs: Vec<_> = (0..2_500)
        .map(|_| json!(["INCR", format!("{p}n")]))
        .collect();
    let (status, body) = gw.post("/pipeline", Value::Array(incrs).to_string()).await;
    assert_eq!(status, 200);
    let results: Vec<i64> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_i64().unwrap())
        .collect();
    assert_eq!(results, (1..=2_500).collect::<Vec<i64>>());

    let pipelines = (0..20).map(|j| {
        let body: Vec<_> = (0..100)
            .map(|_| json!(["INCR", format!("{p}c{j}")]))
            .collect();
        let gw = &gw;
        async move { gw.post("/pipeline", Value::Array(body).to_string()).await }
    });
    for (status, body) in join_all(pipelines).await {
        assert_eq!(status, 200);
        let counts: Vec<i64> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["result"].as_i64().unwrap())
            .collect();
        assert_eq!(counts, (1..=100).collect::<Vec<i64>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_reply_that_is_not_utf8_keeps_the_connection() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let script = "return redis.error_reply('ERR bad byte ' .. string.char(255))";
    let (status, body) = gw.command(json!(["EVAL", script, "0"])).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body, json!({"error": "ERR bad byte \u{fffd}"}));
    // The shared connection still answers.
    assert_eq!(
        gw.command(json!(["PING"])).await,
        (200, json!({"result": "PONG"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_command_buffer_answers_503_at_once() {
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.redis_connections = 1;
    config.command_buffer = 1;
    let gw = Gateway::start_with(config).await;
    let slow = gw.command(json!(["EVAL", busy_script(400), "0"]));
    let refused = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        gw.command(json!(["GET", "k"])).await
    };
    let ((slow_status, _), (status, body)) = tokio::join!(slow, refused);
    assert_eq!(slow_status, 200);
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("RESTASH_COMMAND_BUFFER")),
        "{body}"
    );
    assert_eq!(
        gw.command(json!(["PING"])).await,
        (200, json!({"result": "PONG"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fred_connections_remain_available() {
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.own_multiplexer = false;
    let gw = Gateway::start_with(config).await;
    let key = format!("{}fred", prefix());
    assert_eq!(
        gw.command(json!(["SET", key, "v"])).await,
        (200, json!({"result": "OK"}))
    );
    let (status, body) = gw
        .post(
            "/pipeline",
            json!([["GET", key], ["INCR", key]]).to_string(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body[0], json!({"result": "v"}));
    assert!(body[1]["error"].is_string(), "{body}");
}

/// On a single node the cache API's commands share the multiplexed connections with
/// every other command. They went through fred's connection instead (addressed by
/// hash slot), which cost a cache hit about twice the CPU of a GET. Checked on the
/// other connections (none of them ran a cache command): the multiplexed one also
/// carries the background stats writes, so its last command may be one of those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_commands_use_the_multiplexed_connections() {
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.redis_connections = 1;
    let gw = Gateway::start_with(config).await;
    // The one multiplexed connection's id, asked through it.
    let (status, body) = gw.command(json!(["CLIENT", "ID"])).await;
    assert_eq!(status, 200, "{body}");
    let id = format!("id={} ", body["result"].as_i64().expect("an id"));
    let others_ran = |commands: &[&str]| -> Vec<String> {
        redis
            .cli(&["CLIENT", "LIST"])
            .lines()
            .filter(|l| !l.starts_with(&id))
            .filter(|l| commands.iter().any(|c| l.contains(&format!(" cmd={c} "))))
            .map(str::to_string)
            .collect()
    };
    let path = format!("/cache/{}/k", prefix().trim_end_matches(':'));
    let put = gw
        .http
        .put(gw.at(&format!("{path}?ttl=60")))
        .bearer_auth(crate::harness::TOKEN)
        .body("v")
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 200);
    assert_eq!(others_ran(&["evalsha", "eval"]), Vec::<String>::new());
    let hit = gw
        .http
        .get(gw.at(&path))
        .bearer_auth(crate::harness::TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(others_ran(&["hmget", "time"]), Vec::<String>::new());
}

/// Idle connections stay connected. fred 10.1 sends `ROLE` after connecting to a single
/// node (replica discovery) and used to leave the connection marked as waiting for a
/// reply, so every idle fred connection (the transactions' and the shared one) was
/// declared unresponsive and reopened every two command timeouts, for ever, failing
/// whatever was in flight on it then (`vendor/fred-unresponsive-role.patch`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_not_reopened() {
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    // fred declares a connection unresponsive after twice this without a reply.
    config.command_timeout = Duration::from_millis(300);
    let gw = Gateway::start_with(config).await;
    let key = format!("{}idle", prefix());
    let transaction = json!([["SET", key, "1"], ["GET", key]]).to_string();
    assert_eq!(gw.post("/multi-exec", transaction).await.0, 200);
    // Connection ids, redis-cli's own left out.
    let ids = || {
        let mut ids: Vec<String> = crate::pubsub::connections(&redis)
            .iter()
            .filter(|line| !line.contains(" cmd=client|list "))
            .filter_map(|line| line.split(' ').next().map(str::to_string))
            .collect();
        ids.sort_unstable();
        ids
    };
    let before = ids();
    assert!(before.len() >= 3, "{before:?}");
    // Ten times the unresponsive limit, idle.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(ids(), before, "connections were reopened");
    assert_eq!(gw.command(json!(["GET", key])).await.0, 200);
}
