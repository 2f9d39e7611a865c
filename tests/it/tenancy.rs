//! Many tenants, one gateway: the token file, JWTs, key-prefix isolation, the command
//! policy, rate limits, named backends, CORS and the audit counter.
//!
//! The isolation suite tries every way out of a prefixed token (key arguments of every
//! kind of command, pipelines, transactions, the cache API, SCAN/KEYS patterns,
//! whole-database commands, scripts, OBJECT, DUMP/RESTORE, MIGRATE, SORT BY/GET,
//! COPY … DB, channels and streams) and then proves that no key outside the prefix
//! changed, on a single node and on a cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command as Process;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::harness::{
    test_config, Gateway, OutputWithin, RedisCluster, RedisServer, CLI_LIMIT, TOKEN,
};

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("restash-tenancy-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        // Write then rename, so the reloader never reads half a file.
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const TENANT_TOKEN: &str = "acme-token";
const TENANT_FILE: &str = r#"
[[tokens]]
name = "acme"
token = "acme-token"
prefixes = ["acme:"]

[[tokens]]
name = "acme-reader"
token = "acme-reader-token"
mode = "read-only"
prefixes = ["acme:"]

[[tokens]]
name = "plain"
token = "plain-token"

[[tokens]]
name = "ops"
token_sha256 = "OPS_SHA"
mode = "admin"
"#;

fn tenant_file() -> String {
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(b"ops-token"));
    TENANT_FILE.replace("OPS_SHA", &sha)
}

async fn gateway_with(url: &str, adjust: impl FnOnce(&mut restash::config::Config)) -> Gateway {
    let mut config = test_config(url);
    adjust(&mut config);
    Gateway::start_with(config).await
}

/// `POST /` with `token`.
async fn run(gw: &Gateway, token: &str, command: Value) -> (u16, Value) {
    gw.send(
        gw.http
            .post(gw.at("/"))
            .bearer_auth(token)
            .body(command.to_string()),
    )
    .await
}

/// `POST path` with `token`.
async fn post(gw: &Gateway, token: &str, path: &str, body: Value) -> (u16, Value) {
    gw.send(
        gw.http
            .post(gw.at(path))
            .bearer_auth(token)
            .body(body.to_string()),
    )
    .await
}

/// Every key outside `acme:` with its type, TTL and DUMP payload (admin token).
async fn foreign_snapshot(gw: &Gateway) -> BTreeMap<String, String> {
    let mut keys = Vec::new();
    let mut cursor = "0".to_string();
    for _ in 0..10_000 {
        let (status, body) = gw.command(json!(["SCAN", cursor, "COUNT", "1000"])).await;
        assert_eq!(status, 200, "{body}");
        cursor = body["result"][0].as_str().expect("cursor").to_string();
        for key in body["result"][1].as_array().expect("keys") {
            keys.push(key.as_str().expect("key").to_string());
        }
        if cursor == "0" {
            break;
        }
    }
    let mut snapshot = BTreeMap::new();
    for key in keys.into_iter().filter(|k| !k.starts_with("acme:")) {
        let dump = gw
            .send(
                gw.http
                    .post(gw.at("/"))
                    .bearer_auth(TOKEN)
                    .header("Upstash-Encoding", "base64")
                    .body(json!(["DUMP", key]).to_string()),
            )
            .await;
        let ttl = gw.command(json!(["PTTL", key])).await;
        let ttl = ttl.1["result"].as_i64().map_or(0, |t| t.signum());
        snapshot.insert(key, format!("{} ttl:{ttl}", dump.1["result"]));
    }
    snapshot
}

/// Foreign data a tenant must never reach (one key of each type, plus channels' keys).
async fn seed(gw: &Gateway) {
    for command in [
        json!(["SET", "other:str", "secret"]),
        json!(["RPUSH", "other:list", "3", "1", "2"]),
        json!(["HSET", "other:hash", "f", "v"]),
        json!(["SADD", "other:set", "m"]),
        json!(["ZADD", "other:zset", "1", "m"]),
        json!(["XADD", "other:stream", "*", "f", "v"]),
        json!(["PFADD", "other:hll", "a"]),
        json!(["SET", "other:w_1", "9"]),
        json!(["SET", "acmeX", "lookalike"]),
        json!(["SET", "ACME:x", "case"]),
        json!(["SET", "acme:a", "mine"]),
        json!(["RPUSH", "acme:list", "1", "2"]),
        json!(["SET", "acme:w_1", "5"]),
        json!(["SET", "acme:w_2", "1"]),
        json!(["GEOADD", "acme:geo", "13.4", "52.5", "berlin"]),
    ] {
        let (status, body) = gw.command(command.clone()).await;
        assert_eq!(status, 200, "{command}: {body}");
    }
}

/// Expects a refusal by restash before Redis: 403 with `NOPERM …` (SELECT, which no
/// token may run on a shared connection, is a 400 "not available").
fn refused(what: &str, (status, body): (u16, Value)) {
    let text = body["error"].as_str().unwrap_or_default();
    let ok = if what.contains("\"SELECT\"") {
        status == 400 && text.starts_with("ERR Command is not available")
    } else {
        status == 403 && text.starts_with("NOPERM")
    };
    assert!(ok, "{what} was not refused: {status} {body}");
}

/// Tries to escape `acme:` every way; returns how many distinct attempts were made.
async fn escape_attempts(gw: &Gateway, redis_port: u16, cluster: bool) -> usize {
    let mut attempts = 0;
    let t = TENANT_TOKEN;
    // 1. Key arguments of every shape of command (from the server's key specs).
    let commands: Vec<Value> = vec![
        json!(["GET", "other:str"]),
        json!(["gEt", "other:str"]),
        json!(["SET", "other:str", "x"]),
        json!(["SET", "acmeX", "x"]),
        json!(["SET", "ACME:x", "x"]),
        json!(["APPEND", "other:str", "x"]),
        json!(["GETDEL", "other:str"]),
        json!(["GETEX", "other:str", "PERSIST"]),
        json!(["DEL", "acme:a", "other:str"]),
        json!(["UNLINK", "other:str"]),
        json!(["EXISTS", "other:str"]),
        json!(["TYPE", "other:str"]),
        json!(["TOUCH", "other:str"]),
        json!(["EXPIRE", "other:str", "1"]),
        json!(["PERSIST", "other:str"]),
        json!(["MGET", "acme:a", "other:str"]),
        json!(["MSET", "acme:a", "1", "other:str", "2"]),
        json!(["MSETNX", "acme:n", "1", "other:n", "2"]),
        json!(["RENAME", "acme:a", "other:new"]),
        json!(["RENAME", "other:str", "acme:stolen"]),
        json!(["COPY", "other:str", "acme:copy"]),
        json!(["COPY", "acme:a", "other:copy"]),
        json!(["LMOVE", "other:list", "acme:list", "LEFT", "RIGHT"]),
        json!(["RPOPLPUSH", "other:list", "acme:list"]),
        json!(["BLMOVE", "other:list", "acme:list", "LEFT", "RIGHT", "0"]),
        json!(["BLPOP", "acme:list", "other:list", "0"]),
        json!(["LMPOP", "2", "acme:list", "other:list", "LEFT"]),
        json!(["HGETALL", "other:hash"]),
        json!(["SUNIONSTORE", "acme:dst", "other:set"]),
        json!(["SMOVE", "other:set", "acme:set", "m"]),
        json!(["SINTERCARD", "1", "other:set"]),
        json!(["ZUNIONSTORE", "acme:dst", "1", "other:zset"]),
        json!(["ZRANGESTORE", "acme:dst", "other:zset", "0", "-1"]),
        json!(["XREAD", "STREAMS", "other:stream", "0"]),
        json!(["XREADGROUP", "GROUP", "g", "c", "STREAMS", "other:stream", ">"]),
        json!(["GEOSEARCHSTORE", "other:dst", "acme:geo", "FROMLONLAT", "13", "52", "BYRADIUS", "500", "km"]),
        json!(["GEORADIUS", "acme:geo", "13", "52", "500", "km", "STORE", "other:dst"]),
        // Redis writes to the last STORE; its key specs name the first.
        json!(["GEORADIUS", "acme:geo", "13", "52", "500", "km", "STORE", "acme:dst", "STORE", "other:dst"]),
        json!(["GEORADIUS", "acme:geo", "13", "52", "500", "km", "STOREDIST", "acme:dst", "STOREDIST", "other:dst"]),
        json!(["GEORADIUSBYMEMBER", "acme:geo", "m", "500", "km", "STORE", "acme:dst", "STORE", "other:dst"]),
        json!(["BITOP", "AND", "other:dst", "acme:a"]),
        json!(["PFMERGE", "acme:hll", "other:hll"]),
        json!(["LCS", "acme:a", "other:str"]),
        json!(["OBJECT", "ENCODING", "other:str"]),
        json!(["OBJECT", "FREQ", "other:str"]),
        json!(["MEMORY", "USAGE", "other:str"]),
        json!(["DUMP", "other:str"]),
        json!(["RESTORE", "other:restored", "0", "payload"]),
        json!(["DEBUG", "OBJECT", "other:str"]),
        // 2. Whole-database commands.
        json!(["KEYS", "*"]),
        json!(["KEYS", "other:*"]),
        json!(["KEYS", "acme*"]),
        json!(["SCAN", "0", "MATCH", "*"]),
        json!(["SCAN", "0", "MATCH", "acme:*", "MATCH", "*"]),
        json!(["SCAN", "0", "MATCH", "*", "WITHTYPE"]),
        json!(["SCAN", "0", "MATCH", "WITHTYPE", "*"]),
        json!(["RANDOMKEY"]),
        json!(["DBSIZE"]),
        json!(["FLUSHDB"]),
        json!(["FLUSHALL"]),
        json!(["SWAPDB", "0", "1"]),
        json!(["MOVE", "acme:a", "1"]),
        json!(["COPY", "acme:a", "acme:b", "DB", "1"]),
        json!(["SELECT", "1"]),
        json!(["CLUSTER", "GETKEYSINSLOT", "0", "10"]),
        json!(["CLUSTER", "COUNTKEYSINSLOT", "0"]),
        // 3. Scripts and functions.
        json!(["EVAL", "return redis.call('GET', 'other:str')", "0"]),
        json!(["EVAL", "return redis.call('DEL', 'other:str')", "1", "acme:a"]),
        json!(["EVAL_RO", "return redis.call('GET', 'other:str')", "0"]),
        json!(["EVALSHA", "0000000000000000000000000000000000000000", "0"]),
        json!(["SCRIPT", "LOAD", "return redis.call('GET', 'other:str')"]),
        json!(["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('f', function() return redis.call('GET','other:str') end)"]),
        json!(["FCALL", "f", "0"]),
        // 4. MIGRATE, SORT patterns.
        json!(["MIGRATE", "127.0.0.1", redis_port.to_string(), "other:str", "0", "1000"]),
        json!(["MIGRATE", "127.0.0.1", redis_port.to_string(), "", "0", "1000", "KEYS", "other:str"]),
        json!(["SORT", "other:list"]),
        json!(["SORT", "acme:list", "BY", "other:w_*"]),
        json!(["SORT", "acme:list", "GET", "other:w_*"]),
        json!(["SORT", "acme:list", "BY", "acme:w_*", "GET", "#", "GET", "*"]),
        json!(["SORT", "acme:list", "STORE", "other:sorted"]),
        json!(["SORT_RO", "acme:list", "GET", "other:w_*"]),
        // 5. Administrative commands, channels.
        json!(["CONFIG", "GET", "*"]),
        json!(["CONFIG", "SET", "maxmemory", "1"]),
        json!(["ACL", "SETUSER", "evil", "on", ">pw", "+@all", "~*"]),
        json!(["CLIENT", "KILL", "TYPE", "normal"]),
        json!(["SLOWLOG", "GET"]),
        json!(["PUBLISH", "other:chan", "hi"]),
        json!(["PUBSUB", "CHANNELS"]),
        json!(["SPUBLISH", "other:chan", "hi"]),
    ];
    for command in &commands {
        refused(&command.to_string(), run(gw, t, command.clone()).await);
        attempts += 1;
    }
    // 6. Path-style commands, percent-encoded too.
    for path in [
        "/get/other:str",
        "/get/other%3Astr",
        "/del/other:str",
        "/keys/*",
    ] {
        let answer = gw.send(gw.http.get(gw.at(path)).bearer_auth(t)).await;
        refused(path, answer);
        attempts += 1;
    }
    let answer = gw
        .send(
            gw.http
                .post(gw.at("/set/other:str"))
                .bearer_auth(t)
                .body("v"),
        )
        .await;
    refused("POST /set/other:str", answer);
    attempts += 1;
    // 7. Pipelines: refused items in place, allowed items run.
    let (status, body) = post(
        gw,
        t,
        "/pipeline",
        json!([
            ["GET", "acme:a"],
            ["GET", "other:str"],
            ["DEL", "other:str"],
            ["KEYS", "*"]
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["result"], "mine");
    for item in 1..4 {
        let text = body[item]["error"].as_str().unwrap_or_default();
        assert!(text.starts_with("NOPERM"), "pipeline item {item}: {body}");
    }
    attempts += 3;
    // 8. Transactions: one foreign key refuses the whole transaction.
    let (status, body) = post(
        gw,
        t,
        "/multi-exec",
        json!([["SET", "acme:a", "changed"], ["DEL", "other:str"]]),
    )
    .await;
    refused("multi-exec", (status, body));
    attempts += 1;
    let (_, body) = run(gw, t, json!(["GET", "acme:a"])).await;
    assert_eq!(body["result"], "mine", "a refused transaction ran in part");
    // 9. The cache API: namespaces outside the prefixes.
    for (method, path, body) in [
        (reqwest::Method::GET, "/cache/other/k", ""),
        (reqwest::Method::PUT, "/cache/other/k?ttl=60", "v"),
        (reqwest::Method::DELETE, "/cache/other/k", ""),
        (
            reqwest::Method::POST,
            "/cache/other/invalidate",
            r#"{"prefix":""}"#,
        ),
        (reqwest::Method::GET, "/cache/other", ""),
        (reqwest::Method::GET, "/cache/acme2/k", ""),
    ] {
        let answer = gw
            .send(
                gw.http
                    .request(method.clone(), gw.at(path))
                    .bearer_auth(t)
                    .body(body),
            )
            .await;
        refused(&format!("{method} {path}"), answer);
        attempts += 1;
    }
    // 10. Streams: foreign channels, every pattern, MONITOR.
    for path in [
        "/subscribe/other:chan",
        "/psubscribe/*",
        "/psubscribe/acme*",
        "/monitor",
    ] {
        let answer = gw.send(gw.http.get(gw.at(path)).bearer_auth(t)).await;
        refused(path, answer);
        attempts += 1;
    }
    // 11. The read-only tenant may not write even under its prefix, nor read outside.
    refused(
        "read-only SET",
        run(gw, "acme-reader-token", json!(["SET", "acme:a", "x"])).await,
    );
    refused(
        "read-only GET outside",
        run(gw, "acme-reader-token", json!(["GET", "other:str"])).await,
    );
    attempts += 2;

    // What a tenant may do still works.
    assert_eq!(run(gw, t, json!(["SET", "acme:b", "1"])).await.0, 200);
    assert_eq!(
        run(gw, "acme-reader-token", json!(["GET", "acme:b"]))
            .await
            .1["result"],
        "1"
    );
    let (status, body) = run(gw, t, json!(["SCAN", "0", "COUNT", "1000"])).await;
    assert_eq!(status, 200, "{body}");
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = body["result"][0].as_str().unwrap_or("0").to_string();
    seen.extend(
        body["result"][1]
            .as_array()
            .into_iter()
            .flatten()
            .map(|k| k.as_str().unwrap_or("").to_string()),
    );
    while cursor != "0" {
        let (_, body) = run(gw, t, json!(["SCAN", cursor, "COUNT", "1000"])).await;
        cursor = body["result"][0].as_str().unwrap_or("0").to_string();
        seen.extend(
            body["result"][1]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| k.as_str().unwrap_or("").to_string()),
        );
    }
    assert!(seen.contains(&"acme:a".to_string()), "{seen:?}");
    assert!(
        seen.iter().all(|k| k.starts_with("acme:")),
        "SCAN leaked {seen:?}"
    );
    let (_, keys) = run(gw, t, json!(["KEYS", "acme:*"])).await;
    let keys = keys["result"].as_array().cloned().unwrap_or_default();
    assert!(
        !keys.is_empty()
            && keys
                .iter()
                .all(|k| k.as_str().unwrap_or("").starts_with("acme:"))
    );
    if !cluster {
        // SORT BY/GET patterns under the prefix (refused by Redis itself on a cluster).
        let (status, body) = run(
            gw,
            t,
            json!(["SORT", "acme:list", "BY", "acme:w_*", "GET", "#"]),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"], json!(["2", "1"]));
    }
    let (status, body) = run(gw, t, json!(["PUBLISH", "acme:chan", "hi"])).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = gw
        .send(
            gw.http
                .put(gw.at("/cache/acme/k?ttl=60"))
                .bearer_auth(t)
                .body("cached"),
        )
        .await;
    assert_eq!(status, 200);
    attempts
}

async fn isolation_suite(gw: &Gateway, redis_port: u16, cluster: bool) {
    seed(gw).await;
    let before = foreign_snapshot(gw).await;
    assert!(before.contains_key("other:str") && before.contains_key("acmeX"));
    let attempts = escape_attempts(gw, redis_port, cluster).await;
    assert!(attempts >= 40, "only {attempts} attempts");
    let after = foreign_snapshot(gw).await;
    // Nothing outside the prefix changed, appeared or disappeared (the cache API's
    // own keys live under restash:cache: and are written by the allowed PUT).
    let strip = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.iter()
            .filter(|(k, _)| !k.starts_with("restash:"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(strip(&before), strip(&after), "a foreign key changed");
    println!("isolation: {attempts} escape attempts refused (cluster: {cluster})");
}

#[tokio::test]
async fn prefixed_tokens_cannot_escape_on_a_single_node() {
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let file = scratch.write("tokens.toml", &tenant_file());
    let gw = gateway_with(&redis.url(), |c| c.tokens_file = Some(file)).await;
    isolation_suite(&gw, redis.port, false).await;
    // Nothing was written to another database either.
    assert_eq!(redis.cli(&["-n", "1", "DBSIZE"]), "0");
    // Refusals are counted by reason.
    let metrics = gw.metrics().await;
    for reason in [
        "outside_prefix",
        "whole_keyspace",
        "script",
        "admin_only",
        "read_only",
    ] {
        assert!(
            metrics.contains(&format!(
                "restash_refused_requests_total{{reason=\"{reason}\"}}"
            )),
            "no {reason} counter"
        );
    }
}

#[tokio::test]
async fn prefixed_tokens_cannot_escape_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    let scratch = Scratch::new();
    let file = scratch.write("tokens.toml", &tenant_file());
    let gw = gateway_with(&cluster.url(), |c| c.tokens_file = Some(file)).await;
    isolation_suite(&gw, cluster.nodes[0].port, true).await;
}

#[tokio::test]
async fn administrative_commands_need_an_admin_token() {
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let file = scratch.write("tokens.toml", &tenant_file());
    let gw = gateway_with(&redis.url(), |c| c.tokens_file = Some(file)).await;
    let port = redis.port.to_string();
    let admin_only = [
        json!(["CONFIG", "GET", "maxmemory"]),
        json!(["DEBUG", "SLEEP", "0"]),
        json!(["SHUTDOWN", "NOSAVE"]),
        json!(["MODULE", "LIST"]),
        json!(["ACL", "SETUSER", "x"]),
        json!(["ACL", "LIST"]),
        json!(["REPLICAOF", "127.0.0.1", port.clone()]),
        json!(["SLAVEOF", "127.0.0.1", port.clone()]),
        json!(["FAILOVER"]),
        json!(["CLUSTER", "MEET", "127.0.0.1", port.clone()]),
        json!(["CLUSTER", "RESET"]),
        json!(["SAVE"]),
        json!(["BGSAVE"]),
        json!(["BGREWRITEAOF"]),
        json!(["SYNC"]),
        json!(["PSYNC", "?", "-1"]),
        json!(["MIGRATE", "127.0.0.1", port.clone(), "k", "0", "1000"]),
        json!(["SWAPDB", "0", "1"]),
        json!(["CLIENT", "KILL", "TYPE", "normal"]),
    ];
    for command in &admin_only {
        for token in ["plain-token", "acme-reader-token"] {
            let (status, body) = run(&gw, token, command.clone()).await;
            assert_eq!(status, 403, "{token} {command}: {body}");
            assert!(
                body["error"].as_str().unwrap_or("").starts_with("NOPERM"),
                "{command}: {body}"
            );
        }
    }
    // What clients need stays open; admin tokens (and the static token) may administer.
    assert_eq!(
        run(&gw, "plain-token", json!(["ACL", "WHOAMI"])).await.0,
        200
    );
    assert_eq!(run(&gw, "plain-token", json!(["FLUSHDB"])).await.0, 200);
    let (status, body) = run(&gw, "ops-token", json!(["CONFIG", "GET", "maxmemory"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        run(&gw, TOKEN, json!(["CONFIG", "GET", "maxmemory"]))
            .await
            .0,
        200
    );
    // MONITOR: admin tokens only.
    let (status, _) = gw
        .send(gw.http.get(gw.at("/monitor")).bearer_auth("plain-token"))
        .await;
    assert_eq!(status, 403);
    // Redis is still up: nothing dangerous ran.
    assert_eq!(redis.cli(&["PING"]), "PONG");
}

/// Tokens whose key prefixes do not overlap share no cache namespace: only a final
/// `:` is dropped to name one (`acme:` owns `acme`, `acme-` does not).
#[tokio::test]
async fn cache_namespaces_of_disjoint_prefixes_do_not_overlap() {
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let file = scratch.write(
        "tokens.json",
        &json!({"tokens": [
            {"name": "colon", "token": "colon-token", "prefixes": ["acme:"]},
            {"name": "dash", "token": "dash-token", "prefixes": ["acme-"]},
            {"name": "dot", "token": "dot-token", "prefixes": ["shop."]}
        ]})
        .to_string(),
    );
    let gw = gateway_with(&redis.url(), |c| c.tokens_file = Some(file)).await;
    let cache = |method: reqwest::Method, token: &'static str, path: &str, body: &'static str| {
        gw.send(
            gw.http
                .request(method, gw.at(path))
                .bearer_auth(token)
                .body(body),
        )
    };
    use reqwest::Method;
    let (status, body) = cache(Method::PUT, "colon-token", "/cache/acme/k?ttl=60", "secret").await;
    assert_eq!(status, 200, "{body}");
    for (method, path, body) in [
        (Method::GET, "/cache/acme/k", ""),
        (Method::PUT, "/cache/acme/k?ttl=60", "overwritten"),
        (Method::DELETE, "/cache/acme/k", ""),
        (Method::POST, "/cache/acme/invalidate", r#"{"prefix":""}"#),
        (Method::GET, "/cache/acme", ""),
    ] {
        let (status, answer) = cache(method.clone(), "dash-token", path, body).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert_eq!(
            answer["error"], "NOPERM cache namespace 'acme' is outside this token's prefixes",
            "{method} {path}"
        );
    }
    let entry = gw
        .http
        .get(gw.at("/cache/acme/k"))
        .bearer_auth("colon-token")
        .send()
        .await
        .expect("cache GET");
    assert_eq!(entry.status(), 200);
    assert_eq!(entry.text().await.expect("entry"), "secret");
    // Each still owns the namespaces that start with its prefix.
    for (token, path) in [
        ("dash-token", "/cache/acme-eu/k?ttl=60"),
        ("dot-token", "/cache/shop.reports/k?ttl=60"),
    ] {
        let (status, body) = cache(Method::PUT, token, path, "v").await;
        assert_eq!(status, 200, "{token} {path}: {body}");
    }
    let (status, _) = cache(Method::GET, "dot-token", "/cache/shop/k", "").await;
    assert_eq!(status, 403, "'shop.' does not own 'shop'");
}

#[tokio::test]
async fn command_lists_allow_and_deny() {
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let file = scratch.write(
        "tokens.json",
        &json!({"tokens": [
            {"name": "narrow", "token": "narrow-token", "commands": {"allow": ["@read", "set"], "deny": ["keys"]}},
            {"name": "guarded", "token": "guarded-token", "mode": "admin", "commands": {"deny": ["@dangerous"]}},
            {"name": "quiet", "token": "quiet-token", "commands": {"deny": ["@pubsub"]}},
            {"name": "listener", "token": "listener-token", "commands": {"allow": ["@pubsub"]}},
            {"name": "no-writes", "token": "no-writes-token", "commands": {"deny": ["@write"]}}
        ]})
        .to_string(),
    );
    let gw = gateway_with(&redis.url(), |c| c.tokens_file = Some(file)).await;
    assert_eq!(
        run(&gw, "narrow-token", json!(["SET", "k", "v"])).await.0,
        200
    );
    assert_eq!(run(&gw, "narrow-token", json!(["GET", "k"])).await.0, 200);
    for command in [
        json!(["DEL", "k"]),
        json!(["KEYS", "*"]),
        json!(["INCR", "n"]),
    ] {
        let (status, body) = run(&gw, "narrow-token", command.clone()).await;
        assert_eq!(status, 403, "{command}: {body}");
        assert!(body["error"].as_str().unwrap_or("").contains("may not run"));
    }
    assert_eq!(redis.cli(&["GET", "k"]), "v");
    // The rules hold for Server-Sent Events too, categories included. (Only the
    // head is awaited: an admitted stream never ends.)
    let open = |token: &'static str, path: &'static str| {
        let request = gw.http.get(gw.at(path)).bearer_auth(token);
        async move { request.send().await.expect("stream request") }
    };
    for (token, path) in [
        ("guarded-token", "/monitor"),
        ("quiet-token", "/subscribe/c"),
        ("quiet-token", "/psubscribe/c*"),
        ("narrow-token", "/subscribe/c"),
    ] {
        let response = open(token, path).await;
        assert_eq!(response.status().as_u16(), 403, "{token} {path}");
        let body: Value = response.json().await.expect("a JSON error");
        let text = body["error"].as_str().unwrap_or_default();
        assert!(text.contains("may not run"), "{token} {path}: {body}");
    }
    assert_eq!(open("listener-token", "/subscribe/c").await.status(), 200);
    assert_eq!(open("guarded-token", "/subscribe/c").await.status(), 200);

    // The cache API: reading is `get`, storing and taking a lease `set`, removing
    // and invalidating `del`.
    use reqwest::Method;
    let cache = |token: &'static str, method: Method, path: &'static str| {
        gw.http
            .request(method, gw.at(path))
            .bearer_auth(token)
            .body(if path.ends_with("invalidate") {
                r#"{"prefix":""}"#
            } else {
                "v"
            })
            .send()
    };
    // (token, method, path, status, the command a 403 names)
    for (token, method, path, status, refused) in [
        ("narrow-token", Method::PUT, "/cache/ns/k?ttl=60", 200, ""),
        ("narrow-token", Method::GET, "/cache/ns/k", 200, ""),
        ("narrow-token", Method::HEAD, "/cache/ns/k", 200, ""),
        ("narrow-token", Method::GET, "/cache/ns", 200, ""),
        // A miss that grants a lease (checked below).
        (
            "narrow-token",
            Method::GET,
            "/cache/ns/gone?lease=5",
            404,
            "",
        ),
        ("narrow-token", Method::DELETE, "/cache/ns/k", 403, "del"),
        (
            "narrow-token",
            Method::POST,
            "/cache/ns/invalidate",
            403,
            "del",
        ),
        ("no-writes-token", Method::GET, "/cache/ns/k", 200, ""),
        ("no-writes-token", Method::GET, "/cache/ns", 200, ""),
        (
            "no-writes-token",
            Method::GET,
            "/cache/ns/other?lease=5",
            403,
            "set",
        ),
        (
            "no-writes-token",
            Method::PUT,
            "/cache/ns/k?ttl=60",
            403,
            "set",
        ),
        ("no-writes-token", Method::DELETE, "/cache/ns/k", 403, "del"),
        (
            "no-writes-token",
            Method::POST,
            "/cache/ns/invalidate",
            403,
            "del",
        ),
        ("listener-token", Method::GET, "/cache/ns/k", 403, "get"),
        ("listener-token", Method::HEAD, "/cache/ns/k", 403, ""),
        ("listener-token", Method::GET, "/cache/ns", 403, "get"),
        (
            "listener-token",
            Method::PUT,
            "/cache/ns/k?ttl=60",
            403,
            "set",
        ),
        (TOKEN, Method::DELETE, "/cache/ns/k", 200, ""),
    ] {
        let response = cache(token, method.clone(), path)
            .await
            .expect("cache request");
        let what = format!("{token} {method} {path}");
        assert_eq!(response.status().as_u16(), status, "{what}");
        if path.contains("lease=") && status == 404 {
            assert!(
                response.headers().contains_key("x-cache-lease"),
                "{what}: no lease"
            );
        }
        if !refused.is_empty() {
            let body: Value = response.json().await.expect("a JSON error");
            assert_eq!(
                body["error"],
                format!("NOPERM this token may not run the '{refused}' command"),
                "{what}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// JWTs

struct Keys {
    scratch: Scratch,
}

impl Keys {
    /// RSA, P-256 and Ed25519 key pairs made with `openssl`, plus a second RSA key.
    fn generate() -> Keys {
        let scratch = Scratch::new();
        let openssl = |args: &[&str]| {
            let status = Process::new("openssl")
                .args(args)
                .current_dir(&scratch.0)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl");
            assert!(status.success(), "openssl {args:?}");
        };
        for (name, args) in [
            (
                "rsa",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
            ),
            (
                "rsa2",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
            ),
            (
                "ec",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
            ),
            ("ed", &["-algorithm", "ed25519"][..]),
        ] {
            let key = format!("{name}.pem");
            let mut all = vec!["genpkey"];
            all.extend_from_slice(args);
            all.extend_from_slice(&["-out", &key]);
            openssl(&all);
            openssl(&[
                "pkey",
                "-in",
                &key,
                "-pubout",
                "-out",
                &format!("{name}.pub"),
            ]);
            openssl(&[
                "pkey",
                "-in",
                &key,
                "-pubout",
                "-outform",
                "DER",
                "-out",
                &format!("{name}.der"),
            ]);
        }
        Keys { scratch }
    }

    fn private(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.scratch.path(&format!("{name}.pem"))).expect("key")
    }

    fn public(&self, name: &str) -> String {
        std::fs::read_to_string(self.scratch.path(&format!("{name}.pub"))).expect("key")
    }

    /// A JWKS with the RSA key (kid "r1") and the Ed25519 key (kid "e1").
    fn jwks(&self) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let output = Process::new("openssl")
            .args(["pkey", "-pubin", "-in", "rsa.pub", "-noout", "-text"])
            .current_dir(&self.scratch.0)
            .output_within(CLI_LIMIT);
        let text = String::from_utf8_lossy(&output.stdout);
        let modulus: String = text
            .split("Modulus:")
            .nth(1)
            .and_then(|rest| rest.split("Exponent").next())
            .expect("modulus")
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .collect();
        let mut n = hex::decode(modulus).expect("hex");
        while n.first() == Some(&0) {
            n.remove(0);
        }
        let ed = std::fs::read(self.scratch.path("ed.der")).expect("der");
        let x = &ed[ed.len() - 32..];
        json!({"keys": [
            {"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig", "n": b64(&n), "e": "AQAB"},
            {"kty": "RSA", "kid": "r-enc", "use": "enc", "n": b64(&n), "e": "AQAB"},
            {"kty": "OKP", "kid": "e1", "crv": "Ed25519", "x": b64(x)}
        ]})
        .to_string()
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn good_claims() -> Value {
    json!({"sub": "app", "exp": now() + 300, "iss": "restash-ops", "aud": "restash", "jti": "jti-good"})
}

#[tokio::test]
async fn jwts_are_verified_and_refused_with_401() {
    let redis = RedisServer::start();
    let keys = Keys::generate();
    let scratch = Scratch::new();
    let pem = scratch.write(
        "keys.pem",
        &format!(
            "{}{}{}",
            keys.public("rsa"),
            keys.public("ec"),
            keys.public("ed")
        ),
    );
    let revoked = scratch.write("revoked.txt", "# revoked JWT ids\njti-revoked\n");
    let gw = gateway_with(&redis.url(), |c| {
        c.jwt_secret = Some("hs-secret-at-least-32-bytes-long!!".into());
        c.jwt_keys = Some(pem);
        c.jwt_issuer = Some("restash-ops".into());
        c.jwt_audience = Some("restash".into());
        c.jwt_revoked_file = Some(revoked.clone());
    })
    .await;
    let hs = EncodingKey::from_secret(b"hs-secret-at-least-32-bytes-long!!");
    let rsa = EncodingKey::from_rsa_pem(&keys.private("rsa")).expect("rsa");
    let rsa2 = EncodingKey::from_rsa_pem(&keys.private("rsa2")).expect("rsa2");
    let ec = EncodingKey::from_ec_pem(&keys.private("ec")).expect("ec");
    let ed = EncodingKey::from_ed_pem(&keys.private("ed")).expect("ed");
    let ping = |token: String| {
        let gw = &gw;
        async move { run(gw, &token, json!(["PING"])).await }
    };
    // Every supported algorithm works.
    for (alg, key) in [
        (Algorithm::HS256, &hs),
        (Algorithm::RS256, &rsa),
        (Algorithm::ES256, &ec),
        (Algorithm::EdDSA, &ed),
    ] {
        let (status, body) = ping(sign(alg, key, &good_claims(), None)).await;
        assert_eq!(status, 200, "{alg:?}: {body}");
    }
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = good_claims();
        change(&mut claims);
        claims
    };
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            sign(
                Algorithm::HS256,
                &hs,
                &with(&|c| c["exp"] = (now() - 120).into()),
                None,
            ),
            "WRONGPASS token expired",
        ),
        (
            "expired RS256",
            sign(
                Algorithm::RS256,
                &rsa,
                &with(&|c| c["exp"] = (now() - 120).into()),
                None,
            ),
            "WRONGPASS token expired",
        ),
        (
            "not yet valid",
            sign(
                Algorithm::ES256,
                &ec,
                &with(&|c| c["nbf"] = (now() + 600).into()),
                None,
            ),
            "WRONGPASS token not yet valid",
        ),
        (
            "wrong signature (HS256, other secret)",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"guess"),
                &good_claims(),
                None,
            ),
            "WRONGPASS invalid or missing auth token",
        ),
        (
            "wrong signature (RS256, unknown key)",
            sign(Algorithm::RS256, &rsa2, &good_claims(), None),
            "WRONGPASS invalid or missing auth token",
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&good_claims())
            ),
            "WRONGPASS invalid or missing auth token",
        ),
        (
            "alg none with a signature",
            format!(
                "{}.{}.c2ln",
                b64(&json!({"alg": "none"})),
                b64(&good_claims())
            ),
            "WRONGPASS invalid or missing auth token",
        ),
        (
            "HS/RS confusion: HS256 keyed with the RSA public key",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(keys.public("rsa").as_bytes()),
                &good_claims(),
                None,
            ),
            "WRONGPASS invalid or missing auth token",
        ),
        (
            "RS256 header on an HS256 signature",
            {
                let token = sign(Algorithm::HS256, &hs, &good_claims(), None);
                let rest = token.split_once('.').expect("jwt").1;
                format!("{}.{rest}", b64(&json!({"alg": "RS256", "typ": "JWT"})))
            },
            "WRONGPASS invalid or missing auth token",
        ),
        (
            "unsupported algorithm (HS512)",
            sign(Algorithm::HS512, &hs, &good_claims(), None),
            "WRONGPASS invalid or missing auth token",
        ),
        (
            "wrong issuer",
            sign(
                Algorithm::HS256,
                &hs,
                &with(&|c| c["iss"] = "someone-else".into()),
                None,
            ),
            "WRONGPASS invalid or missing auth token",
        ),
        (
            "no issuer",
            sign(
                Algorithm::HS256,
                &hs,
                &with(&|c| {
                    c.as_object_mut().map(|o| o.remove("iss"));
                }),
                None,
            ),
            "WRONGPASS invalid or missing auth token",
        ),
        (
            "wrong audience",
            sign(
                Algorithm::EdDSA,
                &ed,
                &with(&|c| c["aud"] = "another-api".into()),
                None,
            ),
            "WRONGPASS invalid or missing auth token",
        ),
        (
            "no audience",
            sign(
                Algorithm::HS256,
                &hs,
                &with(&|c| {
                    c.as_object_mut().map(|o| o.remove("aud"));
                }),
                None,
            ),
            "WRONGPASS invalid or missing auth token",
        ),
        (
            "no exp",
            sign(
                Algorithm::HS256,
                &hs,
                &with(&|c| {
                    c.as_object_mut().map(|o| o.remove("exp"));
                }),
                None,
            ),
            "WRONGPASS invalid or missing auth token",
        ),
        (
            "tampered claims",
            {
                let token = sign(Algorithm::RS256, &rsa, &good_claims(), None);
                let parts: Vec<&str> = token.split('.').collect();
                let admin = with(&|c| c["mode"] = "admin".into());
                format!("{}.{}.{}", parts[0], b64(&admin), parts[2])
            },
            "WRONGPASS invalid or missing auth token",
        ),
        (
            "revoked",
            sign(
                Algorithm::HS256,
                &hs,
                &with(&|c| c["jti"] = "jti-revoked".into()),
                None,
            ),
            "WRONGPASS token revoked",
        ),
        (
            "unknown backend",
            sign(
                Algorithm::HS256,
                &hs,
                &with(&|c| c["backend"] = "nowhere".into()),
                None,
            ),
            "WRONGPASS token names an unknown backend",
        ),
        (
            "bad mode claim",
            sign(
                Algorithm::HS256,
                &hs,
                &with(&|c| c["mode"] = "root".into()),
                None,
            ),
            "WRONGPASS invalid or missing auth token",
        ),
        (
            // A prefix over restash's own keys would open every tenant's cache.
            "prefix over restash's keys",
            sign(
                Algorithm::HS256,
                &hs,
                &with(&|c| c["prefixes"] = json!(["restash:cache:"])),
                None,
            ),
            "WRONGPASS invalid or missing auth token",
        ),
    ];
    for (what, token, text) in &cases {
        let (status, body) = ping(token.clone()).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"], *text, "{what}");
    }
    // Claims carry the scope: prefixes and mode.
    let tenant = sign(
        Algorithm::RS256,
        &rsa,
        &with(&|c| {
            c["prefixes"] = json!(["jwt:"]);
            c["commands"] = json!({"deny": ["del"]});
        }),
        None,
    );
    assert_eq!(run(&gw, &tenant, json!(["SET", "jwt:a", "1"])).await.0, 200);
    assert_eq!(run(&gw, &tenant, json!(["GET", "other"])).await.0, 403);
    assert_eq!(run(&gw, &tenant, json!(["DEL", "jwt:a"])).await.0, 403);
    let reader = sign(
        Algorithm::HS256,
        &hs,
        &with(&|c| c["mode"] = "read-only".into()),
        None,
    );
    assert_eq!(run(&gw, &reader, json!(["SET", "k", "1"])).await.0, 403);
    assert_eq!(run(&gw, &reader, json!(["GET", "k"])).await.0, 200);
    // Revoking a token that works: the list is reloaded within about a second.
    let live = sign(
        Algorithm::HS256,
        &hs,
        &with(&|c| c["jti"] = "jti-live".into()),
        None,
    );
    assert_eq!(ping(live.clone()).await.0, 200);
    std::fs::write(&revoked, "jti-revoked\njti-live\n").expect("write");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = ping(live.clone()).await;
        if status == 401 {
            assert_eq!(body["error"], "WRONGPASS token revoked");
            break;
        }
        assert!(Instant::now() < deadline, "revocation not applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With `RESTASH_JWT_MAX_LIFETIME_SECONDS`, a JWT must carry `iat` and live no longer
/// than the maximum; `restash token` refuses to mint a longer one.
#[tokio::test]
async fn jwts_living_longer_than_the_maximum_are_refused() {
    const SECRET: &str = "max-lifetime-secret-32-bytes-long!";
    let redis = RedisServer::start();
    let gw = gateway_with(&redis.url(), |c| {
        c.jwt_secret = Some(SECRET.into());
        c.jwt_max_lifetime = Some(600);
    })
    .await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let ping = |claims: Value| {
        let token = sign(Algorithm::HS256, &key, &claims, None);
        let gw = &gw;
        async move { run(gw, &token, json!(["PING"])).await }
    };
    let now = now();
    let (status, body) = ping(json!({"sub": "short", "iat": now, "exp": now + 600})).await;
    assert_eq!((status, &body["result"]), (200, &json!("PONG")), "{body}");
    let refused = [
        (
            "an hour",
            json!({"sub": "long", "iat": now, "exp": now + 3600}),
        ),
        ("no iat", json!({"sub": "no-iat", "exp": now + 60})),
        (
            "iat in the future",
            json!({"sub": "future", "iat": now + 3000, "exp": now + 3300}),
        ),
        (
            "iat not a number",
            json!({"sub": "text", "iat": "now", "exp": now + 60}),
        ),
    ];
    for (case, claims) in refused {
        let (status, body) = ping(claims).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert_eq!(
            body["error"],
            "WRONGPASS token lifetime not accepted: iat is required, may not be in the future, \
             and exp - iat may not exceed the gateway's maximum",
            "{case}"
        );
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("restash_refused_requests_total{reason=\"too_long_lived\"} 4"),
        "{metrics}"
    );

    // `restash token` mints within the maximum (with `iat`), and refuses beyond it.
    let mint = |ttl: &str| {
        Process::new(env!("CARGO_BIN_EXE_restash"))
            .args(["token", "--sub", "cli", "--ttl", ttl])
            .env("RESTASH_JWT_SECRET", SECRET)
            .env("RESTASH_JWT_MAX_LIFETIME_SECONDS", "600")
            .env_remove("RESTASH_JWT_ISSUER")
            .env_remove("RESTASH_JWT_AUDIENCE")
            .output_within(CLI_LIMIT)
    };
    let minted = mint("10m");
    assert!(minted.status.success(), "{minted:?}");
    let token = String::from_utf8_lossy(&minted.stdout).trim().to_string();
    assert_eq!(run(&gw, &token, json!(["PING"])).await.0, 200);
    let refused = mint("11m");
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("exceeds RESTASH_JWT_MAX_LIFETIME_SECONDS=600"),
        "{stderr}"
    );
    assert!(refused.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_their_token_no_longer_opens_them() {
    use crate::pubsub::Events;
    let redis = RedisServer::start();
    let gw = gateway_with(&redis.url(), |c| {
        c.jwt_secret = Some("stream-secret-at-least-32-bytes-long".into());
        c.sse_keepalive = Duration::from_millis(200);
    })
    .await;
    let key = EncodingKey::from_secret(b"stream-secret-at-least-32-bytes-long");
    let token = |exp: u64| {
        sign(
            Algorithm::HS256,
            &key,
            &json!({"sub": "listener", "exp": exp}),
            None,
        )
    };
    // Expires in a second (restash allows 5 s of clock skew); the other in five minutes.
    let (short, long) = (token(now() + 1), token(now() + 300));
    let open = |token: &str| Events::open(gw.http.get(gw.at("/subscribe/news")).bearer_auth(token));
    let (mut ending, mut lasting) = (open(&short).await, open(&long).await);
    assert_eq!(ending.data().await, "subscribe,news,1");
    assert_eq!(lasting.data().await, "subscribe,news,1");
    let started = Instant::now();
    let last = closing_event(&mut ending, "the expired token's").await;
    assert!(last.contains("expired"), "{last:?}");
    assert!(started.elapsed() < Duration::from_secs(12));
    // The valid token's stream is still live.
    assert_eq!(
        gw.command(json!(["PUBLISH", "news", "still here"])).await,
        (200, json!({"result": 1}))
    );
    assert_eq!(lasting.data().await, "message,news,still here");
}

/// The event that ends a stream whose token no longer opens it (heartbeats skipped);
/// fails when none comes within 15 s or when the stream goes on after it.
async fn closing_event(stream: &mut crate::pubsub::Events, whose: &str) -> String {
    let started = Instant::now();
    let last = loop {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{whose} stream is still open"
        );
        let block = stream
            .block(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{whose} stream ended without a last event"));
        if !block.starts_with(':') {
            break block;
        }
    };
    assert!(
        last.starts_with(
            "event: error\ndata: ERR stream closed: the token no longer opens this stream: "
        ),
        "{whose}: {last:?}"
    );
    assert_eq!(
        stream.block(Duration::from_secs(5)).await,
        None,
        "{whose} stream goes on"
    );
    last
}

/// The re-check at every keepalive also ends streams whose JWT was revoked, whose
/// token left the token file, or whose token's rules no longer admit them; the
/// same reloads leave an unchanged token's stream open.
#[tokio::test]
async fn streams_end_when_their_token_is_revoked_removed_or_narrowed() {
    use crate::pubsub::Events;
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let entry = |name: &str, rules: &str| {
        format!("[[tokens]]\nname = \"{name}\"\ntoken = \"{name}-token\"\n{rules}\n")
    };
    let tokens = |with_leaver: bool, narrowed: bool| {
        let mut file = entry("keeper", "");
        if with_leaver {
            file += &entry("leaver", "");
        }
        let rules = if narrowed {
            "commands = { deny = [\"@pubsub\"] }"
        } else {
            "commands = { deny = [\"flushall\"] }"
        };
        file + &entry("narrowed", rules)
    };
    let file = scratch.write("tokens.toml", &tokens(true, false));
    let revoked = scratch.write("revoked.txt", "jti-other\n");
    let gw = gateway_with(&redis.url(), |c| {
        c.tokens_file = Some(file);
        c.jwt_secret = Some("stream-secret-at-least-32-bytes-long".into());
        c.jwt_revoked_file = Some(revoked.clone());
        c.sse_keepalive = Duration::from_millis(200);
    })
    .await;
    let jwt = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"stream-secret-at-least-32-bytes-long"),
        &json!({"sub": "listener", "jti": "jti-stream", "exp": now() + 300}),
        None,
    );
    let open = |token: &str| Events::open(gw.http.get(gw.at("/subscribe/news")).bearer_auth(token));
    let mut keeper = open("keeper-token").await;
    let mut leaver = open("leaver-token").await;
    let mut narrowed = open("narrowed-token").await;
    let mut revoked_jwt = open(&jwt).await;
    for stream in [&mut keeper, &mut leaver, &mut narrowed, &mut revoked_jwt] {
        assert_eq!(stream.data().await, "subscribe,news,1");
    }

    scratch.write("tokens.toml", &tokens(false, true));
    scratch.write("revoked.txt", "jti-other\njti-stream\n");
    let last = closing_event(&mut leaver, "the removed token's").await;
    assert!(last.contains("WRONGPASS"), "{last:?}");
    let last = closing_event(&mut narrowed, "the narrowed token's").await;
    assert!(last.contains("NOPERM"), "{last:?}");
    assert!(last.contains("subscribe"), "{last:?}");
    let last = closing_event(&mut revoked_jwt, "the revoked JWT's").await;
    assert!(last.contains("revoked"), "{last:?}");
    // The token nobody changed still streams.
    assert_eq!(
        gw.command(json!(["PUBLISH", "news", "still here"])).await,
        (200, json!({"result": 1}))
    );
    assert_eq!(keeper.data().await, "message,news,still here");
}

#[tokio::test]
async fn jwks_keys_and_the_token_subcommand() {
    let redis = RedisServer::start();
    let keys = Keys::generate();
    let scratch = Scratch::new();
    let jwks = scratch.write("jwks.json", &keys.jwks());
    let gw = gateway_with(&redis.url(), |c| {
        c.jwt_secret = Some("cli-secret-at-least-32-bytes-long!!".into());
        c.jwt_keys = Some(jwks);
    })
    .await;
    let claims = json!({"sub": "svc", "exp": now() + 60});
    let rsa = EncodingKey::from_rsa_pem(&keys.private("rsa")).expect("rsa");
    let ed = EncodingKey::from_ed_pem(&keys.private("ed")).expect("ed");
    for (alg, key, kid) in [
        (Algorithm::RS256, &rsa, Some("r1")),
        (Algorithm::RS256, &rsa, None),
        (Algorithm::EdDSA, &ed, Some("e1")),
    ] {
        let (status, body) = run(&gw, &sign(alg, key, &claims, kid), json!(["PING"])).await;
        assert_eq!(status, 200, "{alg:?} {kid:?}: {body}");
    }
    // A key published for encryption does not verify signatures.
    let (status, _) = run(
        &gw,
        &sign(Algorithm::RS256, &rsa, &claims, Some("r-enc")),
        json!(["PING"]),
    )
    .await;
    assert_eq!(status, 401);
    // A kid naming another key, and an algorithm without a key (ES256), are refused.
    let (status, _) = run(
        &gw,
        &sign(Algorithm::RS256, &rsa, &claims, Some("e1")),
        json!(["PING"]),
    )
    .await;
    assert_eq!(status, 401);
    let ec = EncodingKey::from_ec_pem(&keys.private("ec")).expect("ec");
    assert_eq!(
        run(
            &gw,
            &sign(Algorithm::ES256, &ec, &claims, None),
            json!(["PING"])
        )
        .await
        .0,
        401
    );

    // `restash token` mints tokens the gateway accepts, with their scope.
    let mint = |args: &[&str]| {
        let output = Process::new(env!("CARGO_BIN_EXE_restash"))
            .arg("token")
            .args(args)
            .env("RESTASH_JWT_SECRET", "cli-secret-at-least-32-bytes-long!!")
            .env_remove("RESTASH_JWT_ISSUER")
            .env_remove("RESTASH_JWT_AUDIENCE")
            .current_dir(&scratch.0)
            .output_within(CLI_LIMIT);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    let minted = mint(&["--sub", "cli", "--prefix", "cli:", "--ttl", "5m"]);
    assert_eq!(run(&gw, &minted, json!(["SET", "cli:a", "1"])).await.0, 200);
    assert_eq!(run(&gw, &minted, json!(["SET", "b", "1"])).await.0, 403);
    let rsa_path = keys.scratch.path("rsa.pem");
    let minted = mint(&[
        "--sub",
        "cli",
        "--alg",
        "RS256",
        "--key",
        rsa_path.to_str().expect("path"),
        "--mode",
        "read-only",
    ]);
    assert_eq!(
        run(&gw, &minted, json!(["GET", "cli:a"])).await.1["result"],
        "1"
    );
    assert_eq!(run(&gw, &minted, json!(["SET", "cli:a", "2"])).await.0, 403);
    let status = Process::new(env!("CARGO_BIN_EXE_restash"))
        .args(["token", "--mode", "root"])
        .env("RESTASH_JWT_SECRET", "cli-secret-at-least-32-bytes-long!!")
        .output_within(CLI_LIMIT)
        .status;
    assert_eq!(status.code(), Some(2));
}

// ---------------------------------------------------------------------------------
// Reloads

#[tokio::test]
async fn reload_changes_a_mode_under_load_and_loses_no_request() {
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let entry = |mode: &str| {
        format!("[[tokens]]\nname = \"flip\"\ntoken = \"flip-token\"\nmode = \"{mode}\"\n")
    };
    let file = scratch.write("tokens.toml", &entry("standard"));
    let gw = Arc::new(gateway_with(&redis.url(), |c| c.tokens_file = Some(file)).await);
    assert_eq!(
        run(&gw, "flip-token", json!(["SET", "k", "0"])).await.0,
        200
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (gw, stop, sent) = (gw.clone(), stop.clone(), sent.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let command = if (i + worker).is_multiple_of(2) {
                    json!(["SET", "k", i.to_string()])
                } else {
                    json!(["GET", "k"])
                };
                sent.fetch_add(1, Ordering::Relaxed);
                let response = gw
                    .http
                    .post(gw.at("/"))
                    .bearer_auth("flip-token")
                    .body(command.to_string())
                    .send()
                    .await;
                let status = response.map(|r| r.status().as_u16()).unwrap_or(0);
                seen.push((command[0] == "SET", status, Instant::now()));
                i += 1;
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    scratch.write("tokens.toml", &entry("read-only"));
    let switched = Instant::now();
    // SIGHUP reloads at once (the file is also polled every second).
    unsafe {
        libc::kill(libc::getpid(), libc::SIGHUP);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while run(&gw, "flip-token", json!(["SET", "k", "x"])).await.0 != 403 {
        assert!(Instant::now() < deadline, "the new mode was not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let applied = Instant::now();
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for worker in workers {
        answers.extend(worker.await.expect("worker"));
    }
    assert_eq!(answers.len(), sent.load(Ordering::Relaxed));
    let mut before = 0;
    let mut after = 0;
    for (is_set, status, at) in &answers {
        match (is_set, status) {
            (false, 200) => {}
            (true, 200) => {
                // A write admitted just before the switch may finish just after it.
                assert!(
                    *at <= applied + Duration::from_millis(200),
                    "a write succeeded after the switch"
                );
                before += 1;
            }
            (true, 403) => {
                assert!(*at >= switched, "a write was refused before the switch");
                after += 1;
            }
            other => panic!("lost or failed request: {other:?}"),
        }
    }
    assert!(before > 0 && after > 0, "before {before}, after {after}");
    println!(
        "reload under load: {} requests, {before} writes before and {after} refused after the switch, none lost; applied {} ms after SIGHUP",
        answers.len(),
        applied.duration_since(switched).as_millis()
    );
}

#[tokio::test]
async fn a_changed_file_is_picked_up_and_a_broken_one_is_ignored() {
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let file = scratch.write(
        "tokens.toml",
        "[[tokens]]\nname = \"one\"\ntoken = \"one-token\"\n",
    );
    let gw = gateway_with(&redis.url(), |c| c.tokens_file = Some(file)).await;
    assert_eq!(run(&gw, "one-token", json!(["PING"])).await.0, 200);
    assert_eq!(run(&gw, "two-token", json!(["PING"])).await.0, 401);
    // Polled: no signal needed.
    scratch.write(
        "tokens.toml",
        "[[tokens]]\nname = \"one\"\ntoken = \"one-token\"\n[[tokens]]\nname = \"two\"\ntoken = \"two-token\"\n",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while run(&gw, "two-token", json!(["PING"])).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the changed file was not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A broken file keeps the previous configuration.
    scratch.write("tokens.toml", "[[tokens]\nname = ");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(run(&gw, "two-token", json!(["PING"])).await.0, 200);
    assert_eq!(run(&gw, "one-token", json!(["PING"])).await.0, 200);
    // So does a consistent-looking one with an error in it.
    scratch.write(
        "tokens.toml",
        "[[tokens]]\nname = \"one\"\ntoken = \"x\"\nmode = \"root\"\n",
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(run(&gw, "two-token", json!(["PING"])).await.0, 200);
    // A broken file at start-up is an error, not an open gateway.
    let broken = scratch.write("broken.toml", "tokens = 3");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut config = test_config(&redis.url());
    config.tokens_file = Some(broken);
    let outcome = restash::serve(listener, config, TOKEN.into(), std::future::pending()).await;
    assert!(outcome.is_err());
}

// ---------------------------------------------------------------------------------
// Rate limits

/// Sends `per_second` requests a second for `seconds` through `gateways` in turn;
/// returns the answers' statuses with their times, checking every 429's shape.
async fn paced(
    gateways: &[&Gateway],
    token: &str,
    per_second: f64,
    seconds: f64,
) -> Vec<(Instant, u16)> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let total = (per_second * seconds) as usize;
    let mut out = Vec::with_capacity(total);
    // The first tick is immediate: skip it so that requests start one interval from now.
    ticker.tick().await;
    for i in 0..total {
        ticker.tick().await;
        let gw = gateways[i % gateways.len()];
        let response = gw
            .http
            .post(gw.at("/"))
            .bearer_auth(token)
            .body(r#"["PING"]"#)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        if status == 429 {
            let retry: u64 = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .expect("Retry-After");
            assert!(retry >= 1);
            let body: Value = response.json().await.expect("json");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("ERR rate limit exceeded"),
                "{body}"
            );
        }
        out.push((Instant::now(), status));
    }
    out
}

/// Accepted requests per second from the first 429 to the end.
fn accepted_rate(answers: &[(Instant, u16)]) -> f64 {
    let first = answers
        .iter()
        .position(|(_, s)| *s == 429)
        .expect("no 429 at all");
    let window = answers[first..].to_vec();
    let span = window
        .last()
        .expect("answers")
        .0
        .duration_since(window[0].0);
    let accepted = window.iter().filter(|(_, s)| *s == 200).count();
    accepted as f64 / span.as_secs_f64()
}

const RATE_FILE: &str = "[[tokens]]\nname = \"metered\"\ntoken = \"metered-token\"\nrate = { per_second = 20, burst = 5 }\n";

#[tokio::test]
async fn rate_limits_start_at_the_rate_and_stop_below_it() {
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let file = scratch.write("tokens.toml", RATE_FILE);
    let gw = gateway_with(&redis.url(), |c| c.tokens_file = Some(file)).await;
    let answers = paced(&[&gw], "metered-token", 60.0, 3.0).await;
    let burst = answers.iter().take_while(|(_, s)| *s == 200).count();
    assert!((5..=7).contains(&burst), "burst of {burst}");
    let rate = accepted_rate(&answers);
    assert!(
        (18.0..=22.0).contains(&rate),
        "accepted {rate:.1}/s at a limit of 20/s"
    );
    // Below the rate, nothing is refused.
    let slower = paced(&[&gw], "metered-token", 10.0, 2.0).await;
    let refused = slower.iter().filter(|(_, s)| *s == 429).count();
    assert_eq!(refused, 0, "{refused} refusals at half the rate");
    // Other tokens are not limited.
    let free = paced(&[&gw], TOKEN, 60.0, 0.5).await;
    assert!(free.iter().all(|(_, s)| *s == 200));
    println!("local limit: burst {burst}, then {rate:.1} accepted/s at 60 sent/s (limit 20/s)");
}

#[tokio::test]
async fn shared_rate_limits_hold_across_instances() {
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let file = scratch.write("tokens.toml", RATE_FILE);
    let shared = |c: &mut restash::config::Config| {
        c.tokens_file = Some(scratch.path("tokens.toml"));
        c.rate_limit_shared = true;
    };
    let _ = file;
    let a = gateway_with(&redis.url(), shared).await;
    let b = gateway_with(&redis.url(), shared).await;
    let answers = paced(&[&a, &b], "metered-token", 60.0, 3.0).await;
    let rate = accepted_rate(&answers);
    assert!(
        (18.0..=22.0).contains(&rate),
        "two instances accepted {rate:.1}/s at a shared limit of 20/s"
    );
    let refused_on_b = answers
        .iter()
        .skip(1)
        .step_by(2)
        .filter(|(_, s)| *s == 429)
        .count();
    assert!(refused_on_b > 0, "instance b never refused");
    let slower = paced(&[&a, &b], "metered-token", 10.0, 2.0).await;
    assert!(
        slower.iter().all(|(_, s)| *s == 200),
        "refusals below the rate"
    );
    println!("shared limit: two instances together accepted {rate:.1}/s (limit 20/s)");
}

/// XREADGROUP's keys are the ones after its real `STREAMS` keyword, as Redis reads
/// them: a group or consumer named "streams" does not hide a stream outside the
/// token's prefixes. Before, a token with prefix `s` read `orders:…` through
/// `XREADGROUP COUNT 1 GROUP workers streams streams orders:… >`.
#[tokio::test]
async fn xreadgroup_with_a_group_named_streams_stays_inside_the_prefix() {
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let file = scratch.write(
        "tokens.toml",
        "[[tokens]]\nname = \"s-only\"\ntoken = \"s-token\"\nprefixes = [\"s\"]\n",
    );
    let gw = gateway_with(&redis.url(), |c| c.tokens_file = Some(file)).await;
    let stream = format!("orders:{}", crate::harness::prefix());
    redis.cli(&["XADD", &stream, "*", "item", "secret"]);
    redis.cli(&["XGROUP", "CREATE", &stream, "workers", "0"]);
    // The consumer is named "streams" and the keyword is written in lower case too.
    let sneaky = json!([
        "XREADGROUP",
        "COUNT",
        "1",
        "GROUP",
        "workers",
        "streams",
        "streams",
        stream,
        ">"
    ]);
    let (status, body) = run(&gw, "s-token", sneaky).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("outside this token's prefixes"),
        "{body}"
    );
    // Its own streams still work, with the same group and consumer names.
    let own = format!("s:{}", crate::harness::prefix());
    redis.cli(&["XADD", &own, "*", "item", "mine"]);
    redis.cli(&["XGROUP", "CREATE", &own, "streams", "0"]);
    let (status, body) = run(
        &gw,
        "s-token",
        json!([
            "XREADGROUP",
            "GROUP",
            "streams",
            "streams",
            "STREAMS",
            own,
            ">"
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("mine"), "{body}");
}

/// A rate-limited token cannot reset its own shared bucket: standard tokens without
/// prefixes may not touch keys under `restash:`. Before, a pipeline that deleted
/// `restash:rate:{metered}` with every request was never limited.
#[tokio::test]
async fn a_limited_token_cannot_reset_its_shared_bucket() {
    let redis = RedisServer::start();
    let scratch = Scratch::new();
    let file = scratch.write("tokens.toml", RATE_FILE);
    let gw = gateway_with(&redis.url(), |c| {
        c.tokens_file = Some(file);
        c.rate_limit_shared = true;
    })
    .await;
    let reset = json!([["DEL", "restash:rate:{metered}"], ["PING"]]).to_string();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let (status, body) = gw
            .send(
                gw.http
                    .post(gw.at("/pipeline"))
                    .bearer_auth("metered-token")
                    .body(reset.clone()),
            )
            .await;
        if status == 200 {
            let error = body[0]["error"].as_str().unwrap_or_default();
            assert!(
                error.starts_with("NOPERM key 'restash:rate:{metered}' is under 'restash:'"),
                "{body}"
            );
            assert_eq!(body[1], json!({"result": "PONG"}));
        }
        statuses.push(status);
    }
    assert!(statuses.contains(&429), "never limited: {statuses:?}");

    // A script can still reach the bucket (it names keys at run time), but one that
    // leaves it of the wrong type no longer opens the limit for good: the limiter
    // answered WRONGTYPE with every request after it, and failed open.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let corrupt = json!([
        "EVAL",
        "redis.call('DEL', 'restash:rate:{metered}') \
         redis.call('HSET', 'restash:rate:{metered}', 'a', 'b') return 1",
        "0"
    ]);
    let (status, body) = gw
        .send(
            gw.http
                .post(gw.at("/"))
                .bearer_auth("metered-token")
                .body(corrupt.to_string()),
        )
        .await;
    assert_eq!((status, body), (200, json!({"result": 1})));
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let (status, _) = gw
            .send(
                gw.http
                    .post(gw.at("/"))
                    .bearer_auth("metered-token")
                    .body(r#"["PING"]"#),
            )
            .await;
        statuses.push(status);
    }
    assert!(
        statuses.contains(&429),
        "never limited after the script: {statuses:?}"
    );
}

// ---------------------------------------------------------------------------------
// Named backends, CORS

#[tokio::test]
async fn named_backends_route_each_token_to_its_redis() {
    let first = RedisServer::start();
    let second = RedisServer::start();
    let scratch = Scratch::new();
    let file = scratch.write(
        "tokens.toml",
        &format!(
            "[backends.second]\nurl = \"{}\"\nconnections = 1\n\n[[tokens]]\nname = \"b2\"\ntoken = \"b2-token\"\nbackend = \"second\"\n",
            second.url()
        ),
    );
    let gw = gateway_with(&first.url(), |c| {
        c.tokens_file = Some(file);
        c.jwt_secret = Some("s-secret-at-least-32-bytes-long!!".into());
    })
    .await;
    // The command table of the second backend loads in the background.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = run(&gw, "b2-token", json!(["SET", "where", "second"])).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(second.cli(&["GET", "where"]), "second");
    assert_eq!(first.cli(&["EXISTS", "where"]), "0");
    let (_, body) = post(
        &gw,
        "b2-token",
        "/pipeline",
        json!([["INCR", "n"], ["GET", "where"]]),
    )
    .await;
    assert_eq!(body[1]["result"], "second");
    let (status, _) = post(&gw, "b2-token", "/multi-exec", json!([["INCR", "n"]])).await;
    assert_eq!(status, 200);
    assert_eq!(second.cli(&["GET", "n"]), "2");
    // The cache API uses the token's backend too.
    let (status, _) = gw
        .send(
            gw.http
                .put(gw.at("/cache/ns/k?ttl=60"))
                .bearer_auth("b2-token")
                .body("v"),
        )
        .await;
    assert_eq!(status, 200);
    assert_ne!(second.cli(&["KEYS", "restash:cache:v:*"]), "");
    assert_eq!(first.cli(&["KEYS", "restash:cache:v:*"]), "");
    // A JWT may name the backend.
    let jwt = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"s-secret-at-least-32-bytes-long!!"),
        &json!({"sub": "j", "exp": now() + 60, "backend": "second"}),
        None,
    );
    assert_eq!(
        run(&gw, &jwt, json!(["GET", "where"])).await.1["result"],
        "second"
    );
    // Streams stay on the default backend: refused for other backends.
    assert_eq!(
        gw.send(gw.http.get(gw.at("/subscribe/c")).bearer_auth("b2-token"))
            .await
            .0,
        403
    );
    // The static token still uses REDIS_URL.
    assert_eq!(gw.command(json!(["EXISTS", "where"])).await.1["result"], 0);
}

#[tokio::test]
async fn cors_preflights_are_answered_and_the_sync_token_exposed() {
    let redis = RedisServer::start();
    let gw = gateway_with(&redis.url(), |c| {
        c.cors_origins = vec!["https://app.example".into()];
    })
    .await;
    let preflight = gw
        .http
        .request(reqwest::Method::OPTIONS, gw.at("/get/k"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        // What @upstash/redis sends from a browser, telemetry included.
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type, upstash-telemetry-sdk, upstash-telemetry-platform, upstash-telemetry-runtime, upstash-sync-token",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let header = |r: &reqwest::Response, n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    assert_eq!(
        header(&preflight, "access-control-allow-origin"),
        "https://app.example"
    );
    let allowed = header(&preflight, "access-control-allow-headers");
    for name in [
        "authorization",
        "content-type",
        "upstash-telemetry-sdk",
        "upstash-telemetry-platform",
        "upstash-telemetry-runtime",
        "upstash-sync-token",
    ] {
        assert!(allowed.contains(name), "{name} not in {allowed}");
    }
    assert!(header(&preflight, "access-control-allow-methods").contains("post"));
    let answer = gw
        .http
        .get(gw.at("/get/k"))
        .header("Origin", "https://app.example")
        .bearer_auth(crate::harness::READONLY_TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(answer.status(), 200);
    assert_eq!(
        header(&answer, "access-control-allow-origin"),
        "https://app.example"
    );
    assert!(header(&answer, "access-control-expose-headers").contains("upstash-sync-token"));
    // Other origins get no CORS headers.
    let other = gw
        .http
        .get(gw.at("/get/k"))
        .header("Origin", "https://evil.example")
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(header(&other, "access-control-allow-origin"), "");
}
