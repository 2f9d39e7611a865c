//! The Upstash protocol end to end: request forms, value mapping, encodings,
//! pipelines, transactions, scripts, tokens and probes.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::harness::{free_port, prefix, test_config, Gateway, RedisServer, READONLY_TOKEN, TOKEN};

fn b64(text: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_values_map_like_upstash() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let p = prefix();
    let k = |s: &str| format!("{p}{s}");

    assert_eq!(
        gw.command(json!(["PING"])).await,
        (200, json!({"result": "PONG"}))
    );
    assert_eq!(
        gw.command(json!(["set", k("s"), "bar"])).await,
        (200, json!({"result": "OK"}))
    );
    assert_eq!(
        gw.command(json!(["GET", k("s")])).await,
        (200, json!({"result": "bar"}))
    );
    // The result key is present even when the value is null.
    let (status, body) = gw.command(json!(["GET", k("missing")])).await;
    assert_eq!(
        (status, body.to_string()),
        (200, r#"{"result":null}"#.to_string())
    );

    // Literal JSON numbers reach Redis unchanged.
    for literal in ["18446744073709551615", "1e+21", "0.1", "-0", "1E-05"] {
        let body = format!(r#"["SET","{}",{literal}]"#, k("n"));
        assert_eq!(gw.post("/", body).await.0, 200);
        assert_eq!(redis.cli(&["GET", &k("n")]), literal);
    }
    // Booleans become "true"/"false".
    gw.command(json!(["SET", k("b"), true])).await;
    assert_eq!(redis.cli(&["GET", &k("b")]), "true");

    // Integers stay numbers, beyond 2^53 too; doubles are strings.
    gw.command(json!(["SET", k("i"), 9007199254740992i64]))
        .await;
    assert_eq!(
        gw.command(json!(["INCR", k("i")])).await.1.to_string(),
        r#"{"result":9007199254740993}"#
    );
    gw.command(json!(["ZADD", k("z"), 1.5, "m"])).await;
    assert_eq!(
        gw.command(json!(["ZSCORE", k("z"), "m"])).await.1,
        json!({"result": "1.5"})
    );
    assert_eq!(
        gw.command(json!(["INCRBYFLOAT", k("f"), "0.5"])).await.1,
        json!({"result": "0.5"})
    );

    // Hashes come back as flat arrays (RESP2), strings that look like numbers stay strings.
    gw.command(json!(["HSET", k("h"), "f", "123"])).await;
    assert_eq!(
        gw.command(json!(["HGETALL", k("h")])).await.1,
        json!({"result": ["f", "123"]})
    );
    assert_eq!(
        gw.command(json!(["TYPE", k("h")])).await.1,
        json!({"result": "hash"})
    );

    // Unicode round trips; invalid UTF-8 becomes U+FFFD in JSON mode.
    let unicode = "héllo wörld 😀 中文 e\u{301}";
    gw.command(json!(["SET", k("u"), unicode])).await;
    assert_eq!(
        gw.command(json!(["GET", k("u")])).await.1,
        json!({"result": unicode})
    );
    let (status, _) = gw
        .send(
            gw.http
                .post(gw.at(&format!("/set/{}", k("bin"))))
                .bearer_auth(TOKEN)
                .body(vec![0x61, 0xff, 0x62]),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        gw.command(json!(["GET", k("bin")])).await.1,
        json!({"result": "a\u{fffd}b"})
    );

    // Errors nested in arrays become strings (Lua table with an error reply).
    let (status, body) = gw
        .command(json!([
            "EVAL",
            "return {1, redis.error_reply('boom'), 'x'}",
            0
        ]))
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"result": [1, "ERR boom", "x"]}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base64_encoding_rules() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let p = prefix();
    let send = |body: Value| {
        gw.send(
            gw.http
                .post(gw.at("/"))
                .bearer_auth(TOKEN)
                .header("Upstash-Encoding", "base64")
                .body(body.to_string()),
        )
    };
    assert_eq!(
        send(json!(["SET", format!("{p}k"), "OK"])).await.1,
        json!({"result": "OK"})
    );
    assert_eq!(
        send(json!(["PING"])).await.1,
        json!({"result": b64(b"PONG")})
    );
    assert_eq!(
        send(json!(["GET", format!("{p}missing")])).await.1,
        json!({"result": null})
    );
    assert_eq!(
        send(json!(["INCR", format!("{p}n")])).await.1,
        json!({"result": 1})
    );
    send(json!(["RPUSH", format!("{p}l"), "OK", "test", "😀"])).await;
    assert_eq!(
        send(json!(["LRANGE", format!("{p}l"), 0, -1])).await.1,
        json!({"result": [b64(b"OK"), b64(b"test"), b64("😀".as_bytes())]})
    );
    // Exact bytes, including invalid UTF-8.
    gw.send(
        gw.http
            .post(gw.at(&format!("/set/{p}bin")))
            .bearer_auth(TOKEN)
            .body(vec![0u8, 0xff, 0x10]),
    )
    .await;
    assert_eq!(
        send(json!(["GET", format!("{p}bin")])).await.1,
        json!({"result": b64(&[0, 0xff, 0x10])})
    );
    // Errors are never encoded.
    assert_eq!(
        send(json!(["GET"])).await.1,
        json!({"error": "ERR wrong number of arguments for 'get' command"})
    );
    // Pipelines: per-item OK exception, per-item errors.
    let (status, body) = gw
        .send(
            gw.http
                .post(gw.at("/pipeline"))
                .bearer_auth(TOKEN)
                .header("Upstash-Encoding", "base64")
                .body(
                    json!([
                        ["SET", format!("{p}a"), "v"],
                        ["GET", format!("{p}a")],
                        ["LPOP"]
                    ])
                    .to_string(),
                ),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!([{"result": "OK"}, {"result": b64(b"v")}, {"error": "ERR wrong number of arguments for 'lpop' command"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp2_response_format() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let p = prefix();
    gw.command(json!(["SET", format!("{p}k"), "bar"])).await;
    let response = gw
        .http
        .post(gw.at("/"))
        .bearer_auth(TOKEN)
        .header("Upstash-Response-Format", "resp2")
        .body(json!(["GET", format!("{p}k")]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"$3\r\nbar\r\n");
    let response = gw
        .http
        .post(gw.at("/pipeline"))
        .bearer_auth(TOKEN)
        .header("Upstash-Response-Format", "resp2")
        .body(json!([["SET", format!("{p}k"), "x"], ["INCR", format!("{p}k")]]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        b"+OK\r\n-ERR value is not an integer or out of range\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_style_commands() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let p = prefix();
    // Segments are split on the raw path, then decoded one by one.
    let (status, body) = gw
        .send(
            gw.http
                .get(gw.at(&format!("/set/{p}a%2Fb/x%20y+z")))
                .bearer_auth(TOKEN),
        )
        .await;
    assert_eq!((status, body), (200, json!({"result": "OK"})));
    assert_eq!(redis.cli(&["GET", &format!("{p}a/b")]), "x y+z");
    // Body as the final argument, then query parameters; _token is never an argument.
    let (status, _) = gw
        .send(
            gw.http
                .post(gw.at(&format!("/set/{p}k?EX=100&_token={TOKEN}")))
                .body("a body/with?odd&chars"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        redis.cli(&["GET", &format!("{p}k")]),
        "a body/with?odd&chars"
    );
    let ttl: i64 = redis.cli(&["TTL", &format!("{p}k")]).parse().unwrap();
    assert!((1..=100).contains(&ttl), "ttl {ttl}");
    // A bare query flag.
    let (_, body) = gw
        .send(
            gw.http
                .put(gw.at(&format!("/set/{p}k/other?NX")))
                .bearer_auth(TOKEN),
        )
        .await;
    assert_eq!(body, json!({"result": null}));
    let (_, body) = gw
        .send(gw.http.get(gw.at(&format!("/get/{p}k?_token={TOKEN}"))))
        .await;
    assert_eq!(body, json!({"result": "a body/with?odd&chars"}));
    // HEAD answers like GET without a body.
    let response = gw
        .http
        .head(gw.at(&format!("/get/{p}k")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("upstash-sync-token"));
    // Path errors are Redis' verbatim texts.
    let (status, body) = gw.send(gw.http.get(gw.at("/get")).bearer_auth(TOKEN)).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "ERR wrong number of arguments for 'get' command"})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_and_transactions() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let p = prefix();
    let (status, body) = gw
        .post(
            "/pipeline",
            json!([
                ["SET", format!("{p}a"), 1],
                ["INCR", format!("{p}a")],
                ["HGET", format!("{p}a"), "f"],
                ["GET", format!("{p}a")]
            ])
            .to_string(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!([{"result": "OK"}, {"result": 2}, {"error": "WRONGTYPE Operation against a key holding the wrong kind of value"}, {"result": "2"}])
    );

    let (status, body) = gw
        .post(
            "/multi-exec",
            json!([
                ["SET", format!("{p}t"), "x"],
                ["INCR", format!("{p}t")],
                ["APPEND", format!("{p}t"), "y"],
                ["GET", format!("{p}t")]
            ])
            .to_string(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!([{"result": "OK"}, {"error": "ERR value is not an integer or out of range"}, {"result": 2}, {"result": "xy"}])
    );
    // Transactions are atomic: 50 concurrent INCR transactions of 2 commands each.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let http = gw.http.clone();
        let url = gw.at("/multi-exec");
        let key = format!("{p}counter");
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(TOKEN)
                .body(json!([["INCR", key], ["INCR", key]]).to_string())
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            let a = v[0]["result"].as_i64().unwrap();
            let b = v[1]["result"].as_i64().unwrap();
            assert_eq!(b, a + 1, "interleaved transaction");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(redis.cli(&["GET", &format!("{p}counter")]), "100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_allow_key_locking_and_sha_mapping() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let script = "#!lua flags=allow-key-locking\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])";
    let client_sha = sha1_hex(script);
    let key = format!("{}lua", prefix());

    // Plain Redis rejects the flag; through restash it runs.
    assert!(redis
        .cli(&["EVAL", script, "1", &key, "1"])
        .contains("Unexpected flag"));
    assert_eq!(
        gw.command(json!(["EVAL", script, 1, key, 5])).await.1,
        json!({"result": 5})
    );
    assert_eq!(
        gw.command(json!(["EVALSHA", client_sha, 1, key, 5]))
            .await
            .1,
        json!({"result": 10})
    );
    assert_eq!(
        gw.command(json!(["SCRIPT", "LOAD", script])).await.1,
        json!({"result": client_sha})
    );
    assert_eq!(
        gw.command(json!(["SCRIPT", "EXISTS", client_sha, "ffff"]))
            .await
            .1,
        json!({"result": [1, 0]})
    );
    assert_eq!(
        gw.command(json!(["EVALSHA_RO", sha1_hex("return 1"), 0]))
            .await
            .0,
        400
    );

    // A fresh instance (another replica of restash) learns the mapping through
    // the SDKs' EVALSHA -> NOSCRIPT -> EVAL fallback.
    redis.cli(&["SCRIPT", "FLUSH"]);
    let other = Gateway::start(&redis).await;
    let (status, body) = other
        .command(json!(["EVALSHA", client_sha, 1, key, 1]))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().starts_with("NOSCRIPT"),
        "{body}"
    );
    assert_eq!(
        other.command(json!(["EVAL", script, 1, key, 1])).await.1,
        json!({"result": 11})
    );
    assert_eq!(
        other
            .command(json!(["EVALSHA", client_sha, 1, key, 1]))
            .await
            .1,
        json!({"result": 12})
    );
}

fn sha1_hex(text: &str) -> String {
    restash::policy::scripts::sha1_hex(text.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_token_follows_acl_categories() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let p = prefix();
    gw.command(json!(["SET", format!("{p}k"), "v"])).await;
    let ro = |body: &str, path: &str| {
        gw.send(
            gw.http
                .post(gw.at(path))
                .bearer_auth(READONLY_TOKEN)
                .body(body.to_string()),
        )
    };
    assert_eq!(
        ro(&json!(["GET", format!("{p}k")]).to_string(), "/").await,
        (200, json!({"result": "v"}))
    );
    assert_eq!(
        ro(r#"["PING"]"#, "/").await,
        (200, json!({"result": "PONG"}))
    );
    assert_eq!(
        ro(r#"["ECHO","hi"]"#, "/").await,
        (200, json!({"result": "hi"}))
    );
    assert_eq!(
        ro(r#"["EVAL_RO","return 7",0]"#, "/").await,
        (200, json!({"result": 7}))
    );
    assert_eq!(
        ro(r#"["OBJECT","ENCODING","nokey"]"#, "/").await,
        (200, json!({"result": null}))
    );
    let (status, body) = ro(r#"["CONFIG","SET","maxmemory","1"]"#, "/").await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"error": "NOPERM this user has no permissions to run the 'config|set' command"})
        )
    );
    let (status, body) = ro(r#"["FLUSHALL"]"#, "/").await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"error": "NOPERM this user has no permissions to run the 'flushall' command"})
        )
    );
    // Inside a pipeline: per-item NOPERM, 200 for the rest.
    let (status, body) = ro(
        &json!([["GET", format!("{p}k")], ["DEL", format!("{p}k")]]).to_string(),
        "/pipeline",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!([{"result": "v"}, {"error": "NOPERM this user has no permissions to run the 'del' command"}])
    );
    assert_eq!(redis.cli(&["GET", &format!("{p}k")]), "v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_probes_and_sync_token() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    // Probes need no token.
    assert_eq!(
        gw.send(gw.http.get(gw.at("/healthz"))).await,
        (200, json!({"status": "ok"}))
    );
    assert_eq!(
        gw.send(gw.http.get(gw.at("/readyz"))).await,
        (200, json!({"status": "ready"}))
    );
    // Every answer carries upstash-sync-token; any echoed value is accepted.
    for token in ["", "unknown-value", "123"] {
        let response = gw
            .http
            .post(gw.at("/"))
            .bearer_auth(TOKEN)
            .header("upstash-sync-token", token)
            .header("Upstash-Telemetry-Sdk", "test")
            .body(r#"["PING"]"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(!response.headers()["upstash-sync-token"].is_empty());
        assert!(response.headers().contains_key("x-request-id"));
    }
    let response = gw
        .http
        .post(gw.at("/"))
        .body(r#"["PING"]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("upstash-sync-token"));
    // Form content type (curl -d) is fine.
    let (status, _) = gw
        .send(
            gw.http
                .post(gw.at("/"))
                .bearer_auth(TOKEN)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(r#"["PING"]"#),
        )
        .await;
    assert_eq!(status, 200);
}

/// `/readyz` needs no token, so it must not cost a Redis PING per request: a PING
/// that Redis answered keeps it ready for a second (a failed one is not kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_probes_share_one_ping_a_second() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]), "OK");
    let started = Instant::now();
    for _ in 0..50 {
        assert_eq!(
            gw.send(gw.http.get(gw.at("/readyz"))).await,
            (200, json!({"status": "ready"}))
        );
    }
    let seconds = started.elapsed().as_secs();
    let pings = redis.command_calls("ping");
    assert!(
        pings <= seconds + 1,
        "{pings} PINGs for 50 probes in {seconds} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_answers_json_503_promptly() {
    let mut config = test_config(&format!("redis://127.0.0.1:{}", free_port()));
    config.connect_timeout = Duration::from_millis(200);
    let gw = Gateway::start_with(config).await;
    let started = Instant::now();
    let (status, body) = gw.command(json!(["GET", "k"])).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("ERR Redis is unavailable"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    let (status, _) = gw.post("/pipeline", r#"[["GET","k"]]"#).await;
    assert_eq!(status, 503);
    let (status, _) = gw.send(gw.http.get(gw.at("/readyz"))).await;
    assert_eq!(status, 503);
    assert_eq!(gw.send(gw.http.get(gw.at("/healthz"))).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stall_answers_json_504_at_the_timeout() {
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.command_timeout = Duration::from_millis(300);
    let gw = Gateway::start_with(config).await;
    redis.cli(&["CLIENT", "PAUSE", "1500", "ALL"]);
    let started = Instant::now();
    let (status, body) = gw.command(json!(["GET", "k"])).await;
    let waited = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert_eq!(
        body,
        json!({"error": "ERR Redis did not answer within 300 ms"})
    );
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1400),
        "{waited:?}"
    );
    // Once Redis answers again, so does restash.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        gw.command(json!(["PING"])).await,
        (200, json!({"result": "PONG"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstash_extensions() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let p = prefix();
    gw.command(json!(["SET", format!("{p}s"), "v"])).await;
    gw.command(json!(["RPUSH", format!("{p}l"), "a"])).await;
    // SCAN … WITHTYPE answers [cursor, [key, type, …]].
    let mut found = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let (status, body) = gw
            .command(json!([
                "SCAN",
                cursor,
                "MATCH",
                format!("{p}*"),
                "COUNT",
                100,
                "WITHTYPE"
            ]))
            .await;
        assert_eq!(status, 200, "{body}");
        cursor = body["result"][0].as_str().unwrap().to_string();
        for pair in body["result"][1].as_array().unwrap().chunks(2) {
            found.push((
                pair[0].as_str().unwrap().to_string(),
                pair[1].as_str().unwrap().to_string(),
            ));
        }
        if cursor == "0" {
            break;
        }
    }
    found.sort();
    assert_eq!(
        found,
        [
            (format!("{p}l"), "list".to_string()),
            (format!("{p}s"), "string".to_string())
        ]
    );
    // In a pipeline and with the read-only token too.
    let (status, body) = gw
        .send(
            gw.http
                .post(gw.at("/pipeline"))
                .bearer_auth(READONLY_TOKEN)
                .body(
                    json!([[
                        "SCAN",
                        "0",
                        "MATCH",
                        format!("{p}s"),
                        "COUNT",
                        1000,
                        "WITHTYPE"
                    ]])
                    .to_string(),
                ),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!([{"result": ["0", [format!("{p}s"), "string"]]}]))
    );
    // UNLINK with no keys answers 0.
    assert_eq!(
        gw.command(json!(["UNLINK"])).await,
        (200, json!({"result": 0}))
    );
    assert_eq!(
        gw.post("/multi-exec", r#"[["UNLINK"]]"#).await,
        (200, json!([{"result": 0}]))
    );
    // A lone surrogate (text cut inside an emoji, as JSON.stringify writes it) is U+FFFD.
    let cut = format!(r#"["SET","{p}cut","a\ud83d"]"#);
    assert_eq!(gw.post("/", cut).await, (200, json!({"result": "OK"})));
    assert_eq!(
        gw.command(json!(["GET", format!("{p}cut")])).await,
        (200, json!({"result": "a\u{FFFD}"}))
    );
    // In a pipeline, an item that is not a command is that item's error and the others
    // run: the JS SDK pipelines unrelated calls, and a 400 would fail all of them.
    let mixed = json!([
        ["SET", format!("{p}pn"), "v"],
        ["SET", format!("{p}pn2"), null],
        [["nested"]],
        ["GET", format!("{p}pn")]
    ])
    .to_string();
    let (status, body) = gw.post("/pipeline", mixed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0], json!({"result": "OK"}));
    assert_eq!(
        body[1],
        json!({"error": "ERR argument 3 is null; arguments must be strings, numbers or booleans"})
    );
    assert!(
        body[2]["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("ERR "),
        "{body}"
    );
    assert_eq!(body[3], json!({"result": "v"}));
    // A body that is no array of items still fails as a whole.
    assert_eq!(gw.post("/pipeline", "[1, [\"GET\"").await.0, 400);
    // An error restash answers itself discards the transaction: the SET before it never runs.
    let aborted = json!([["SET", format!("{p}tx"), "v"], ["NOSUCHCMD", "é"]]).to_string();
    let (status, body) = gw.post("/multi-exec", aborted).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("EXECABORT"),
        "{body}"
    );
    assert_eq!(
        gw.command(json!(["GET", format!("{p}tx")])).await,
        (200, json!({"result": null}))
    );
    // ZRANGE … LIMIT by rank.
    gw.command(json!([
        "ZADD",
        format!("{p}z"),
        1,
        "a",
        2,
        "b",
        3,
        "c",
        4,
        "d"
    ]))
    .await;
    assert_eq!(
        gw.command(json!(["ZRANGE", format!("{p}z"), 0, -1, "LIMIT", 1, 2]))
            .await,
        (200, json!({"result": ["b", "c"]}))
    );
    assert_eq!(
        gw.command(json!([
            "ZRANGE",
            format!("{p}z"),
            0,
            -1,
            "LIMIT",
            3,
            5,
            "WITHSCORES"
        ]))
        .await,
        (200, json!({"result": ["d", "4"]}))
    );
}
