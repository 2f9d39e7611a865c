//! restash in front of a Redis Cluster: slot routing, fan-out, splits, scans,
//! transactions, and no redirects in steady state.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::harness::{prefix, Gateway, RedisCluster, RedisServer};

async fn fill(gw: &Gateway, p: &str, count: usize) {
    for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
        let commands: Vec<Value> = chunk
            .iter()
            .map(|i| json!(["SET", format!("{p}k{i}"), i]))
            .collect();
        let (status, body) = gw
            .post("/pipeline", Value::Array(commands).to_string())
            .await;
        assert_eq!(status, 200);
        assert!(body
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r == &json!({"result": "OK"})));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_database_commands_span_every_primary() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let gw = Gateway::start_cluster(&cluster).await;
    let p = prefix();
    fill(&gw, &p, 10_000).await;
    // The keys really are spread over the three primaries.
    for node in &cluster.nodes {
        let count: i64 = node.cli(&["DBSIZE"]).parse().unwrap();
        assert!(count > 2_500, "node holds only {count} keys");
    }
    assert_eq!(
        gw.command(json!(["DBSIZE"])).await,
        (200, json!({"result": 10_000}))
    );
    let (_, keys) = gw.command(json!(["KEYS", format!("{p}*")])).await;
    let keys: HashSet<String> = keys["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 10_000);

    // A full SCAN returns every key exactly once.
    let mut seen = Vec::new();
    let mut cursor = "0".to_string();
    let mut calls = 0;
    loop {
        let (status, body) = gw
            .command(json!([
                "SCAN",
                cursor,
                "MATCH",
                format!("{p}*"),
                "COUNT",
                1000
            ]))
            .await;
        assert_eq!(status, 200, "{body}");
        cursor = body["result"][0].as_str().unwrap().to_string();
        seen.extend(
            body["result"][1]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string()),
        );
        calls += 1;
        assert!(calls < 1_000, "scan does not end");
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), 10_000, "duplicates or missing keys");
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), keys);

    // SCAN … TYPE and WITHTYPE (Upstash's extension) across nodes.
    gw.command(json!(["RPUSH", format!("{p}list"), "x"])).await;
    let mut typed = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let (_, body) = gw
            .command(json!([
                "SCAN",
                cursor,
                "MATCH",
                format!("{p}l*"),
                "COUNT",
                5000,
                "WITHTYPE"
            ]))
            .await;
        cursor = body["result"][0].as_str().unwrap().to_string();
        typed.extend(body["result"][1].as_array().unwrap().iter().cloned());
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(typed, vec![json!(format!("{p}list")), json!("list")]);
    let (_, body) = gw
        .command(json!(["SCAN", "0", "COUNT", 100000, "TYPE", "list"]))
        .await;
    let _ = body; // first node only; the full walk is covered above
    let (status, body) = gw.command(json!(["SCAN", "99999999", "COUNT", 10])).await;
    assert_eq!(
        (status, body),
        (400, json!({"error": "ERR invalid cursor"}))
    );

    // RANDOMKEY draws from every primary, not always from the same one.
    let mut holders = HashSet::new();
    for _ in 0..20 {
        let (status, body) = gw.command(json!(["RANDOMKEY"])).await;
        assert_eq!(status, 200);
        let key = body["result"].as_str().expect("a key").to_string();
        let holder = cluster
            .nodes
            .iter()
            .position(|node| node.cli(&["EXISTS", &key]) == "1");
        holders.insert(holder.expect("some primary holds it"));
    }
    assert!(holders.len() >= 2, "RANDOMKEY only drew from {holders:?}");
    // CLUSTER COUNTKEYSINSLOT / GETKEYSINSLOT ask the slot's owner.
    for i in 0..10 {
        let key = format!("{p}k{i}");
        let slot = restash::routing::key_slot(key.as_bytes()).to_string();
        let (_, count) = gw
            .command(json!(["CLUSTER", "COUNTKEYSINSLOT", slot]))
            .await;
        assert!(count["result"].as_i64().unwrap_or(0) >= 1, "{key}: {count}");
        let (_, listed) = gw
            .command(json!(["CLUSTER", "GETKEYSINSLOT", slot, 100]))
            .await;
        assert!(
            listed["result"]
                .as_array()
                .is_some_and(|keys| keys.contains(&json!(key))),
            "{key}: {listed}"
        );
    }

    // FLUSHDB empties every primary.
    assert_eq!(
        gw.command(json!(["FLUSHDB"])).await,
        (200, json!({"result": "OK"}))
    );
    assert_eq!(
        gw.command(json!(["DBSIZE"])).await,
        (200, json!({"result": 0}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_key_commands_split_or_refuse() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let gw = Gateway::start_cluster(&cluster).await;
    let p = prefix();
    let k = |s: &str| format!("{p}{s}");

    // Our slot function agrees with the server's.
    for key in ["foo", "123", "{user}:1", "a{b}c", "", "{}x", &k("x")] {
        let server: u16 = cluster.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .unwrap();
        assert_eq!(
            restash::routing::key_slot(key.as_bytes()),
            server,
            "{key:?}"
        );
    }

    assert_eq!(
        gw.command(json!([
            "MSET",
            k("a"),
            "1",
            k("b"),
            "2",
            k("c"),
            "3",
            k("d"),
            4
        ]))
        .await,
        (200, json!({"result": "OK"}))
    );
    // A key without its value is refused whole (Redis says CROSSSLOT, as it would to
    // any client of the cluster): nothing is written.
    let (status, body) = gw
        .command(json!(["MSET", k("odd1"), "1", k("odd2"), "2", k("odd3")]))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("CROSSSLOT"),
        "{body}"
    );
    assert_eq!(
        gw.command(json!(["MGET", k("odd1"), k("odd2")])).await,
        (200, json!({"result": [null, null]}))
    );
    assert_eq!(
        gw.command(json!([
            "MGET",
            k("d"),
            k("missing"),
            k("a"),
            k("c"),
            k("b"),
            k("a")
        ]))
        .await,
        (200, json!({"result": ["4", null, "1", "3", "2", "1"]}))
    );
    assert_eq!(
        gw.command(json!(["EXISTS", k("a"), k("b"), k("a"), k("nope")]))
            .await,
        (200, json!({"result": 3}))
    );
    assert_eq!(
        gw.command(json!(["TOUCH", k("a"), k("b"), k("nope")]))
            .await,
        (200, json!({"result": 2}))
    );
    assert_eq!(
        gw.command(json!(["DEL", k("a"), k("b"), k("nope")])).await,
        (200, json!({"result": 2}))
    );
    assert_eq!(
        gw.command(json!(["UNLINK", k("c"), k("d")])).await,
        (200, json!({"result": 2}))
    );

    // Cross-slot commands that cannot be split answer Redis' own CROSSSLOT text.
    let (status, body) = gw
        .command(json!(["SUNIONSTORE", k("dst"), k("s1"), k("s2")]))
        .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "CROSSSLOT Keys in request don't hash to the same slot"})
        )
    );
    let (status, _) = gw.command(json!(["RENAME", k("s1"), k("s2")])).await;
    assert_eq!(status, 400);
    // With a hash tag they run.
    gw.command(json!(["SADD", format!("{{{p}}}s1"), "x"])).await;
    assert_eq!(
        gw.command(json!([
            "SUNIONSTORE",
            format!("{{{p}}}dst"),
            format!("{{{p}}}s1"),
            format!("{{{p}}}s2")
        ]))
        .await,
        (200, json!({"result": 1}))
    );

    // Commands whose keys are not in the first argument are routed by key specs.
    gw.command(json!(["SET", k("obj"), "12345"])).await;
    assert_eq!(
        gw.command(json!(["OBJECT", "ENCODING", k("obj")])).await,
        (200, json!({"result": "int"}))
    );
    assert_eq!(
        gw.command(json!([
            "EVAL",
            "return redis.call('GET', KEYS[1])",
            1,
            k("obj")
        ]))
        .await,
        (200, json!({"result": "12345"}))
    );
    gw.command(json!(["RPUSH", k("sortme"), 3, 1, 2])).await;
    // SORT's key specs are incomplete: restash asks the server (COMMAND GETKEYS).
    assert_eq!(
        gw.command(json!(["SORT", k("sortme")])).await,
        (200, json!({"result": ["1", "2", "3"]}))
    );

    // SCRIPT LOAD reaches every primary, so EVALSHA works wherever a key lives.
    let (_, body) = gw
        .command(json!([
            "SCRIPT",
            "LOAD",
            "return redis.call('INCR', KEYS[1])"
        ]))
        .await;
    let sha = body["result"].as_str().unwrap().to_string();
    for i in 0..20 {
        assert_eq!(
            gw.command(json!(["EVALSHA", sha, 1, k(&format!("n{i}"))]))
                .await,
            (200, json!({"result": 1}))
        );
    }
    assert_eq!(
        gw.command(json!(["SCRIPT", "EXISTS", sha, "abc"])).await,
        (200, json!({"result": [1, 0]}))
    );

    // A pipeline across slots, with a fan-out and a split in the middle, keeps its order.
    let (status, body) = gw
        .post(
            "/pipeline",
            json!([
                ["SET", k("p1"), "a"],
                ["DBSIZE"],
                ["MGET", k("p1"), k("n1")],
                ["GET", k("p1")],
                ["SUNION", k("x"), k("y")]
            ])
            .to_string(),
        )
        .await;
    assert_eq!(status, 200);
    let items = body.as_array().unwrap();
    assert_eq!(items[0], json!({"result": "OK"}));
    assert!(items[1]["result"].as_i64().unwrap() > 20);
    assert_eq!(items[2], json!({"result": ["a", "1"]}));
    assert_eq!(items[3], json!({"result": "a"}));
    assert_eq!(
        items[4],
        json!({"error": "CROSSSLOT Keys in request don't hash to the same slot"})
    );

    // Transactions run on the node that owns their slot; cross-slot ones are refused whole.
    let t = |s: &str| format!("{{{p}tx}}{s}");
    let (status, body) = gw
        .post(
            "/multi-exec",
            json!([["SET", t("a"), 1], ["INCR", t("a")], ["GET", t("a")]]).to_string(),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!([{"result": "OK"}, {"result": 2}, {"result": "2"}])
        )
    );
    let (status, body) = gw
        .post(
            "/multi-exec",
            json!([["SET", k("tx1"), 1], ["SET", k("tx2"), 2]]).to_string(),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "CROSSSLOT Keys in request don't hash to the same slot"})
        )
    );
    assert_eq!(
        gw.command(json!(["EXISTS", k("tx1"), k("tx2")])).await.1,
        json!({"result": 0})
    );
}

fn stat(node: &crate::harness::RedisServer, section: &str, field: &str) -> i64 {
    node.cli(&["INFO", section])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| {
            v.split(',')
                .next()
                .unwrap_or("0")
                .trim_start_matches("count=")
                .trim()
                .parse()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_causes_no_redirects() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let gw = Gateway::start_cluster(&cluster).await;
    let p = prefix();
    // Warm up: connections to every primary exist.
    fill(&gw, &p, 300).await;
    gw.command(json!(["DBSIZE"])).await;
    let before: Vec<i64> = cluster
        .nodes
        .iter()
        .map(|n| stat(n, "stats", "total_connections_received"))
        .collect();

    let mut requests = 0;
    for round in 0..530 {
        let key = format!("{p}k{}", round % 300);
        // Keys in the first argument, in later arguments, in subcommands and in scripts.
        for command in [
            json!(["GET", key]),
            json!(["OBJECT", "ENCODING", key]),
            json!(["EVAL", "return redis.call('EXISTS', KEYS[1])", 1, key]),
            json!(["EXISTS", key]),
        ] {
            let (status, body) = gw.command(command).await;
            assert_eq!(status, 200, "{body}");
            requests += 1;
        }
        let batch: Vec<Value> = (0..15)
            .map(|i| json!(["INCR", format!("{p}c{}", (round * 15 + i) % 97)]))
            .collect();
        let (status, _) = gw.post("/pipeline", Value::Array(batch).to_string()).await;
        assert_eq!(status, 200);
        requests += 15;
    }
    assert!(requests >= 10_000);
    // Each `redis-cli INFO` opens one connection: exactly one more per node, nothing else.
    let after: Vec<i64> = cluster
        .nodes
        .iter()
        .map(|n| stat(n, "stats", "total_connections_received"))
        .collect();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            a - b,
            1,
            "restash opened new connections: {before:?} -> {after:?}"
        );
    }
    for node in &cluster.nodes {
        assert_eq!(
            stat(node, "errorstats", "errorstat_MOVED"),
            0,
            "a MOVED redirect happened"
        );
        assert_eq!(
            stat(node, "errorstats", "errorstat_ASK"),
            0,
            "an ASK redirect happened"
        );
    }
}

fn get_calls_on_replicas(cluster: &RedisCluster) -> i64 {
    cluster
        .nodes
        .iter()
        .filter(|n| n.cli(&["ROLE"]).starts_with("slave"))
        .map(|n| {
            n.cli(&["INFO", "commandstats"])
                .lines()
                .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reads_keep_read_your_writes() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 1));
    let mut config = crate::harness::test_config(&cluster.url());
    config.read_from_replicas = true;
    let gw = Gateway::start_with(config).await;
    let p = prefix();
    fill(&gw, &p, 100).await;

    // Without a token, reads go to replicas.
    let before = get_calls_on_replicas(&cluster);
    for i in 0..100 {
        assert_eq!(gw.command(json!(["GET", format!("{p}k{i}")])).await.0, 200);
    }
    let served_by_replicas = get_calls_on_replicas(&cluster) - before;
    assert!(
        served_by_replicas >= 90,
        "replicas served only {served_by_replicas} of 100 reads"
    );

    // A client that echoes the token of its last write always reads that write:
    // its reads on that shard go to the primary (no replica serves one of them).
    let replica_gets_before = get_calls_on_replicas(&cluster);
    for i in 0..300 {
        let key = format!("{p}ryw{}", i % 7);
        let response = gw
            .http
            .post(gw.at("/"))
            .bearer_auth(crate::harness::TOKEN)
            .body(json!(["SET", key, i]).to_string())
            .send()
            .await
            .unwrap();
        let token = response.headers()["upstash-sync-token"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(token.starts_with("restash-w"), "{token}");
        let read = gw
            .http
            .post(gw.at("/pipeline"))
            .bearer_auth(crate::harness::TOKEN)
            .header("upstash-sync-token", &token)
            .body(json!([["GET", key]]).to_string())
            .send()
            .await
            .unwrap();
        // A read echoes the token back, so the client keeps it.
        assert_eq!(
            read.headers()["upstash-sync-token"].to_str().unwrap(),
            token
        );
        let body: Value = read.json().await.unwrap();
        assert_eq!(
            body,
            json!([{"result": i.to_string()}]),
            "stale read at write {i}"
        );
    }
    assert_eq!(get_calls_on_replicas(&cluster), replica_gets_before);

    // Writes on two shards (in one request, or one after the other with the token
    // echoed) make the caller's reads go to primaries everywhere: `restash-w*`.
    let (a, b) = (format!("{p}two{{a}}"), format!("{p}two{{b}}"));
    assert_ne!(
        cluster.owner_of(restash::routing::key_slot(a.as_bytes())),
        cluster.owner_of(restash::routing::key_slot(b.as_bytes())),
        "pick keys on two shards"
    );
    let post = |path: &'static str, token: Option<String>, body: Value| {
        let mut request = gw
            .http
            .post(gw.at(path))
            .bearer_auth(crate::harness::TOKEN)
            .body(body.to_string());
        if let Some(token) = token {
            request = request.header("upstash-sync-token", token);
        }
        request.send()
    };
    let token = |response: &reqwest::Response| {
        response.headers()["upstash-sync-token"]
            .to_str()
            .unwrap()
            .to_string()
    };
    let both = post("/pipeline", None, json!([["SET", a, "1"], ["SET", b, "2"]]))
        .await
        .unwrap();
    assert_eq!(token(&both), "restash-w*");
    let first = post("/", None, json!(["SET", a, "3"])).await.unwrap();
    let then = post("/", Some(token(&first)), json!(["SET", b, "4"]))
        .await
        .unwrap();
    assert_eq!(token(&then), "restash-w*");
    let replica_gets_before = get_calls_on_replicas(&cluster);
    for key in [&a, &b] {
        let read = post("/", Some(token(&then)), json!(["GET", key]))
            .await
            .unwrap();
        assert_eq!(token(&read), "restash-w*");
    }
    assert_eq!(get_calls_on_replicas(&cluster), replica_gets_before);

    // A write answered in raw RESP2 hands out a write token too.
    let raw = gw
        .http
        .post(gw.at("/"))
        .bearer_auth(crate::harness::TOKEN)
        .header("upstash-response-format", "resp2")
        .body(json!(["SET", format!("{p}raw"), "v"]).to_string())
        .send()
        .await
        .unwrap();
    let token = raw.headers()["upstash-sync-token"].to_str().unwrap();
    assert!(token.starts_with("restash-w"), "{token}");
}

/// Resharding: a hash slot moves to another primary while restash runs. The first
/// request for it afterwards (single command or pipeline, read or write) is answered
/// like any other: Redis ran nothing on the old owner, so restash sends it again to
/// the new one. Before, it failed with 503 "Too many failed write attempts".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_follow_a_moved_slot() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let gw = Gateway::start_cluster(&cluster).await;
    let p = prefix();
    for round in 0..3 {
        let key = format!("{p}moved{round}");
        let slot = restash::routing::key_slot(key.as_bytes());
        // restash has used the slot on its old owner.
        assert_eq!(
            gw.command(json!(["GET", key])).await,
            (200, json!({"result": null}))
        );
        let to = (cluster.owner_of(slot) + 1) % 3;
        cluster.move_slot(slot, to).await;
        let value = format!("v{round}");
        match round {
            0 => assert_eq!(
                gw.command(json!(["SET", key, value])).await,
                (200, json!({"result": "OK"}))
            ),
            1 => assert_eq!(
                gw.post(
                    "/pipeline",
                    json!([["SET", key, value], ["GET", key]]).to_string()
                )
                .await,
                (200, json!([{"result": "OK"}, {"result": value}]))
            ),
            _ => {
                assert_eq!(
                    gw.command(json!(["GET", key])).await,
                    (200, json!({"result": null})),
                    "a read after the move"
                );
                assert_eq!(
                    gw.command(json!(["SET", key, value])).await,
                    (200, json!({"result": "OK"}))
                );
            }
        }
        // Written once, on the new owner (asked directly, without following redirects).
        assert_eq!(
            cluster.nodes[to].cli(&["GET", &key]),
            value,
            "round {round}"
        );
        assert_eq!(
            gw.command(json!(["GET", key])).await,
            (200, json!({"result": value}))
        );
    }
    // A transaction on a moved slot: Redis discards it on the old owner (EXECABORT,
    // nothing ran), so restash sends it again whole to the new owner.
    let key = format!("{p}moved-tx");
    let slot = restash::routing::key_slot(key.as_bytes());
    // It leaves the slot empty (Redis moves only empty slots with SETSLOT NODE).
    let transaction = json!([["SET", key, "t"], ["GET", key], ["DEL", key]]).to_string();
    assert_eq!(gw.post("/multi-exec", transaction.clone()).await.0, 200);
    let to = (cluster.owner_of(slot) + 1) % 3;
    cluster.move_slot(slot, to).await;
    assert_eq!(
        gw.post("/multi-exec", transaction.clone()).await,
        (
            200,
            json!([{"result": "OK"}, {"result": "t"}, {"result": 1}])
        )
    );
    assert_eq!(
        gw.post("/multi-exec", transaction).await,
        (
            200,
            json!([{"result": "OK"}, {"result": "t"}, {"result": 1}])
        )
    );

    // A migration only half set up (the owner MIGRATING, the other node not IMPORTING):
    // the owner answers ASK, the other node MOVED back. restash gives up after a few
    // tries with a clear 503, never a hang. (A whole migration: the next test.)
    let key = format!("{p}migrating");
    let slot = restash::routing::key_slot(key.as_bytes());
    let from = cluster.owner_of(slot);
    let to = (from + 1) % 3;
    let to_id = cluster.nodes[to].cli(&["CLUSTER", "MYID"]);
    let slot_text = slot.to_string();
    assert_eq!(
        cluster.nodes[from].cli(&["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to_id]),
        "OK"
    );
    let gave_up = json!({"error": "ERR Redis is unavailable: the cluster redirected the \
                                   command 4 times (is its hash slot being migrated?); try again"});
    assert_eq!(
        gw.command(json!(["GET", key])).await,
        (503, gave_up.clone())
    );
    let transaction = json!([["SET", key, "t"], ["GET", key]]).to_string();
    assert_eq!(gw.post("/multi-exec", transaction).await, (503, gave_up));
}

/// While a slot is being migrated, its owner answers `ASK` for the keys it no longer
/// holds (moved, or new); restash follows it (`ASKING` and the command on a connection
/// of its own to the importing node), for single commands, pipeline items and
/// transactions, and a key that has not moved yet is still served by the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_follow_ask_while_a_slot_is_migrated() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let gw = Gateway::start_cluster(&cluster).await;
    let tag = format!("{{{}ask}}", prefix());
    let key = |name: &str| format!("{tag}{name}");
    let slot = restash::routing::key_slot(key("moved").as_bytes());
    for name in ["moved", "stays"] {
        assert_eq!(
            gw.command(json!(["SET", key(name), format!("{name}-v")]))
                .await,
            (200, json!({"result": "OK"}))
        );
    }
    let from = cluster.owner_of(slot);
    let (source, target) = (&cluster.nodes[from], &cluster.nodes[(from + 1) % 3]);
    let slot_text = slot.to_string();
    let source_id = source.cli(&["CLUSTER", "MYID"]);
    let target_id = target.cli(&["CLUSTER", "MYID"]);
    let importing = ["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &source_id];
    assert_eq!(target.cli(&importing), "OK");
    let migrating = ["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &target_id];
    assert_eq!(source.cli(&migrating), "OK");
    let target_port = target.port.to_string();
    let moved = key("moved");
    let migrate = [
        "MIGRATE",
        "127.0.0.1",
        &target_port,
        "",
        "0",
        "5000",
        "KEYS",
        &moved,
    ];
    assert_eq!(source.cli(&migrate), "OK");

    assert_eq!(
        gw.command(json!(["GET", key("moved")])).await,
        (200, json!({"result": "moved-v"})),
        "a key the owner has handed over"
    );
    assert_eq!(
        gw.command(json!(["GET", key("stays")])).await,
        (200, json!({"result": "stays-v"})),
        "a key still on the owner"
    );
    assert_eq!(
        gw.command(json!(["SET", key("new"), "n"])).await,
        (200, json!({"result": "OK"})),
        "a new key"
    );
    assert_eq!(
        gw.post(
            "/pipeline",
            json!([
                ["INCR", key("counter")],
                ["GET", key("moved")],
                ["APPEND", key("stays"), "!"],
                ["INCR", key("counter")]
            ])
            .to_string()
        )
        .await,
        (
            200,
            json!([{"result": 1}, {"result": "moved-v"}, {"result": 8}, {"result": 2}])
        )
    );
    // A transaction is sent whole, after ASKING (whose flag lasts until EXEC).
    assert_eq!(
        gw.post(
            "/multi-exec",
            json!([["APPEND", key("moved"), "+"], ["GET", key("moved")]]).to_string()
        )
        .await,
        (200, json!([{"result": 8}, {"result": "moved-v+"}]))
    );
    assert_eq!(
        gw.post(
            "/multi-exec",
            json!([["SET", key("tx"), "t"], ["GET", key("tx")]]).to_string()
        )
        .await,
        (200, json!([{"result": "OK"}, {"result": "t"}]))
    );
    // Each key was written once, where Redis wants it during the migration.
    let keys_on = |node: &crate::harness::RedisServer| {
        let mut keys: Vec<String> = node
            .cli(&["CLUSTER", "GETKEYSINSLOT", &slot_text, "10"])
            .lines()
            .map(String::from)
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys_on(target),
        vec![key("counter"), key("moved"), key("new"), key("tx")]
    );
    assert_eq!(keys_on(source), vec![key("stays")]);
    // Seven commands followed an ASK (two single ones, three pipeline items, two
    // transactions), each after two tries that were redirected. (The recorder is the
    // test process's: other cluster tests add to it.)
    let metrics = gw.metrics().await;
    let count = |kind: &str| {
        let name = format!("restash_redis_redirects_total{{kind=\"{kind}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name.as_str()))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(count("ask") >= 7, "{metrics}");
    assert!(count("retried") >= 14, "{metrics}");
    // Keys split between the two nodes: Redis' own TRYAGAIN, passed through.
    let (status, body) = gw
        .command(json!(["MGET", key("moved"), key("stays")]))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("TRYAGAIN")),
        "{body}"
    );
}

/// A slot being migrated to a node restash cannot reach (here: a node added to the
/// cluster for the migration, then frozen before restash connects to it; frozen
/// nodes accept connections and answer nothing): the first command for a moved key waits
/// out the connect timeout; those after it, for a second, fail at once with that
/// error instead of each waiting (and queueing) again; then it is tried again. The
/// same when the node stops answering on an open connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_importing_node_is_not_dialled_for_every_command() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let dir = std::env::temp_dir().join(format!("restash-extra-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).expect("node dir");
    let extra = RedisServer::start_cluster_node(&dir);
    let mut config = crate::harness::test_config(&cluster.url());
    config.connect_timeout = std::time::Duration::from_millis(500);
    config.command_timeout = std::time::Duration::from_secs(1);
    config.blocking = true;
    let gw = Gateway::start_with(config).await;
    let key = format!("{{{}unreachable}}moved", prefix());
    assert_eq!(
        gw.command(json!(["SET", key, "v"])).await,
        (200, json!({"result": "OK"}))
    );
    let slot = restash::routing::key_slot(key.as_bytes());
    let source = &cluster.nodes[cluster.owner_of(slot)];
    let (source_id, extra_id) = (
        source.cli(&["CLUSTER", "MYID"]),
        extra.cli(&["CLUSTER", "MYID"]),
    );
    let extra_port = extra.port.to_string();
    assert_eq!(
        source.cli(&["CLUSTER", "MEET", "127.0.0.1", &extra_port]),
        "OK"
    );
    // Each must see the other as connected, and the new node the whole slot map,
    // before a slot can move between them.
    let knows = |node: &RedisServer, id: &str| {
        node.cli(&["CLUSTER", "NODES"])
            .lines()
            .any(|line| line.starts_with(id) && line.contains(" connected"))
    };
    let since = std::time::Instant::now();
    let state_ok = |node: &RedisServer| node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok");
    while !(knows(source, &extra_id) && knows(&extra, &source_id) && state_ok(&extra)) {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(10),
            "the new node never joined"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let slot_text = slot.to_string();
    let importing = ["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &source_id];
    assert_eq!(extra.cli(&importing), "OK");
    let migrating = ["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &extra_id];
    assert_eq!(source.cli(&migrating), "OK");
    let migrate = [
        "MIGRATE",
        "127.0.0.1",
        &extra_port,
        "",
        "0",
        "5000",
        "KEYS",
        &key,
    ];
    assert_eq!(source.cli(&migrate), "OK");
    extra.signal("STOP");
    let unavailable = |body: &Value, text: &str| {
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("ERR Redis is unavailable") && e.contains(text))
    };
    // The next command, at once, gets the remembered failure; a second after the
    // node is resumed, it is tried again.
    let remembered_then_resumed = async |reason: &str| {
        let (status, body) = gw.command(json!(["GET", key])).await;
        assert_eq!(status, 503, "{body}");
        assert!(unavailable(&body, reason), "{body}");
        assert!(
            unavailable(&body, "ms ago; tried again after 1000 ms"),
            "{body}"
        );
        extra.signal("CONT");
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert_eq!(
            gw.command(json!(["GET", key])).await,
            (200, json!({"result": "v"})),
            "a second later the node is tried again"
        );
    };
    let no_connection = format!("no connection to 127.0.0.1:{extra_port}");
    // Blocking commands (`RESTASH_BLOCKING=true`, a pool of their own, here on a
    // missing list of the slot) remember it the same way, apart.
    let queue = key.replace("moved", "queue");
    for remembered in [false, true] {
        let (status, body) = gw.command(json!(["BLPOP", queue, 5])).await;
        assert_eq!(status, 503, "{body}");
        assert!(unavailable(&body, &no_connection), "{body}");
        let said = unavailable(&body, "ms ago; tried again after 1000 ms");
        assert_eq!(said, remembered, "{body}");
    }
    let (status, body) = gw.command(json!(["GET", key])).await;
    assert_eq!(status, 503, "{body}");
    assert!(unavailable(&body, &no_connection), "{body}");
    remembered_then_resumed(&no_connection).await;

    // Frozen while connected: the command waits out the command timeout, and the
    // connection is given up, as a failed one is.
    extra.signal("STOP");
    assert_eq!(
        gw.command(json!(["GET", key])).await,
        (
            504,
            json!({"error": "ERR Redis did not answer within 1000 ms"})
        )
    );
    remembered_then_resumed("stopped answering").await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Blocking commands (`RESTASH_BLOCKING=true`) run on the pool's own connections,
/// which follow a resharded slot too: the first BLPOP after its slot moved is
/// answered from the new owner. Before, it failed with 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_commands_follow_a_moved_slot() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let mut config = crate::harness::test_config(&cluster.url());
    config.blocking = true;
    let gw = Gateway::start_with(config).await;
    let key = format!("{}blocking-moved", prefix());
    let slot = restash::routing::key_slot(key.as_bytes());
    for round in 0..2 {
        let value = format!("v{round}");
        assert_eq!(
            gw.command(json!(["RPUSH", key, value])).await,
            (200, json!({"result": 1}))
        );
        // The pool's connection has served the slot on its current owner; the pop
        // leaves the slot empty, so that it can move.
        assert_eq!(
            gw.command(json!(["BLPOP", key, 1])).await,
            (200, json!({"result": [key, value]})),
            "round {round}"
        );
        let to = (cluster.owner_of(slot) + 1) % 3;
        cluster.move_slot(slot, to).await;
    }
    assert_eq!(
        gw.command(json!(["RPUSH", key, "last"])).await,
        (200, json!({"result": 1}))
    );
    assert_eq!(
        gw.command(json!(["BLPOP", key, 1])).await,
        (200, json!({"result": [key, "last"]})),
        "the first blocking command after the move"
    );
}

/// A blocking command whose caller goes away is released (`CLIENT UNBLOCK`) on the
/// node it blocks on, also after its slot moved: the unblock used the control
/// connection's old slot map, went to the old owner, and the forgotten BLPOP then
/// popped the next item pushed, for nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_blocking_command_is_released_after_a_reshard() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let mut config = crate::harness::test_config(&cluster.url());
    config.blocking = true;
    let gw = Gateway::start_with(config).await;
    let key = format!("{}abandoned", prefix());
    let slot = restash::routing::key_slot(key.as_bytes());
    let abandon = |wait_ms: u64| {
        gw.http
            .post(gw.at("/"))
            .bearer_auth(crate::harness::TOKEN)
            .timeout(std::time::Duration::from_millis(wait_ms))
            .body(json!(["BLPOP", key, 5]).to_string())
            .send()
    };
    let blocked_on = |node: usize| -> u64 {
        cluster.nodes[node]
            .cli(&["INFO", "clients"])
            .lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("blocked_clients")
    };
    // Abandoned once before the move: the control connection learns the slot map.
    assert!(abandon(300).await.is_err(), "the caller gave up");
    let to = (cluster.owner_of(slot) + 1) % 3;
    cluster.move_slot(slot, to).await;
    assert!(abandon(500).await.is_err(), "the caller gave up");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while blocked_on(to) != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned BLPOP still blocks on the new owner"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        gw.command(json!(["RPUSH", key, "kept"])).await,
        (200, json!({"result": 1}))
    );
    assert_eq!(
        gw.command(json!(["LLEN", key])).await,
        (200, json!({"result": 1}))
    );
}

/// Blocking commands (`RESTASH_BLOCKING=true`) follow `ASK` while their slot is
/// migrated: a `BLPOP` on an empty list (which the owner no longer holds) blocks on
/// the importing node, after `ASKING`, and gets what is pushed there; one whose
/// caller goes away is released there. Before, both got 503 until the slot moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_commands_follow_ask_while_a_slot_is_migrated() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let mut config = crate::harness::test_config(&cluster.url());
    config.blocking = true;
    config.blocking_max = std::time::Duration::from_secs(30);
    let gw = Gateway::start_with(config).await;
    let key = format!("{{{}blocking-ask}}queue", prefix());
    let slot = restash::routing::key_slot(key.as_bytes());
    let from = cluster.owner_of(slot);
    let to = (from + 1) % 3;
    let (source, target) = (&cluster.nodes[from], &cluster.nodes[to]);
    let slot_text = slot.to_string();
    let (source_id, target_id) = (
        source.cli(&["CLUSTER", "MYID"]),
        target.cli(&["CLUSTER", "MYID"]),
    );
    let importing = ["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &source_id];
    assert_eq!(target.cli(&importing), "OK");
    let migrating = ["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &target_id];
    assert_eq!(source.cli(&migrating), "OK");
    let blocked_on_target = || -> u64 {
        target
            .cli(&["INFO", "clients"])
            .lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("blocked_clients")
    };
    let wait_for_blocked = |count: u64| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while blocked_on_target() != count {
            assert!(
                std::time::Instant::now() < deadline,
                "{count} command(s) never blocked on the importing node"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };

    let pop = gw.command(json!(["BLPOP", key, 5]));
    let push = async {
        wait_for_blocked(1).await;
        gw.command(json!(["RPUSH", key, "job"])).await
    };
    let (popped, pushed) = tokio::join!(pop, push);
    assert_eq!(pushed, (200, json!({"result": 1})));
    assert_eq!(popped, (200, json!({"result": [key, "job"]})));

    // A caller that gives up: its BLPOP (of 30 s) is released on the importing node
    // at once.
    let abandoned = gw
        .http
        .post(gw.at("/"))
        .bearer_auth(crate::harness::TOKEN)
        .timeout(std::time::Duration::from_millis(700))
        .body(json!(["BLPOP", key, 30]).to_string())
        .send();
    let (abandoned, ()) = tokio::join!(abandoned, wait_for_blocked(1));
    assert!(abandoned.is_err(), "the caller gave up");
    wait_for_blocked(0).await;
    assert_eq!(
        gw.command(json!(["RPUSH", key, "kept"])).await,
        (200, json!({"result": 1}))
    );
    assert_eq!(
        gw.command(json!(["LRANGE", key, 0, -1])).await,
        (200, json!({"result": ["kept"]})),
        "nobody popped it"
    );
}
