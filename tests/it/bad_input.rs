//! The bad-input table: every case answers its documented status and JSON error.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{Gateway, RedisServer, READONLY_TOKEN, TOKEN};

/// How an expected error text is matched.
enum Text {
    Exact(&'static str),
    Prefix(&'static str),
}

struct Case {
    name: &'static str,
    path: &'static str,
    body: Vec<u8>,
    token: Option<&'static str>,
    status: u16,
    error: Text,
}

fn case(name: &'static str, body: &str, status: u16, error: Text) -> Case {
    Case {
        name,
        path: "/",
        body: body.as_bytes().to_vec(),
        token: Some(TOKEN),
        status,
        error,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_table() {
    use Text::*;
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis).await;
    let mut cases = vec![
        case("malformed JSON", "[\"SET\",", 400, Prefix("ERR failed to parse the request body as JSON")),
        case("empty body", "", 400, Prefix("ERR failed to parse the request body as JSON: the body is empty")),
        case(
            "body is not an array",
            r#"{"cmd":"GET"}"#,
            400,
            Exact("ERR the request body must be a JSON array of command arguments, e.g. [\"SET\",\"key\",\"value\"]"),
        ),
        case("empty array", "[]", 400, Exact("ERR empty command: the array must start with a command name")),
        case(
            "nested array argument",
            r#"["SET","k",["v"]]"#,
            400,
            Exact("ERR argument 3 is an array; arguments must be strings, numbers or booleans"),
        ),
        case(
            "object argument",
            r#"["SET","k",{"v":1}]"#,
            400,
            Exact("ERR argument 3 is an object; arguments must be strings, numbers or booleans"),
        ),
        case(
            "null argument",
            r#"["SET","k",null]"#,
            400,
            Exact("ERR argument 3 is null; arguments must be strings, numbers or booleans"),
        ),
        case(
            "command name is a number",
            r#"[42]"#,
            400,
            Exact("ERR the command name must be a non-empty string without spaces"),
        ),
        case(
            "command name with a space",
            r#"["FLUSHALL x"]"#,
            400,
            Exact("ERR the command name must be a non-empty string without spaces"),
        ),
        case("unknown command", r#"["NOSUCHCOMMAND","x"]"#, 400, Prefix("ERR unknown command 'NOSUCHCOMMAND'")),
        case("wrong arity", r#"["GET"]"#, 400, Exact("ERR wrong number of arguments for 'get' command")),
        case("not an integer", r#"["INCRBY","bi:n","ten"]"#, 400, Exact("ERR value is not an integer or out of range")),
        case("SELECT", r#"["SELECT",1]"#, 400, Prefix("ERR Command is not available: 'select'.")),
        case("AUTH", r#"["AUTH","pw"]"#, 400, Prefix("ERR Command is not available: 'auth'.")),
        case("MULTI", r#"["MULTI"]"#, 400, Prefix("ERR Command is not available: 'multi'. Send the whole transaction to /multi-exec")),
        case("EXEC", r#"["EXEC"]"#, 400, Prefix("ERR Command is not available: 'exec'.")),
        case("WATCH", r#"["WATCH","k"]"#, 400, Prefix("ERR Command is not available: 'watch'.")),
        case("SUBSCRIBE", r#"["SUBSCRIBE","ch"]"#, 400, Prefix("ERR Command is not available: 'subscribe'. Use the /subscribe/<channel>")),
        case("SSUBSCRIBE", r#"["SSUBSCRIBE","ch"]"#, 400, Prefix("ERR Command is not available: 'ssubscribe'. Use the /ssubscribe/<channel>")),
        case("MONITOR", r#"["MONITOR"]"#, 400, Prefix("ERR Command is not available: 'monitor'.")),
        case("HELLO", r#"["HELLO","3"]"#, 400, Prefix("ERR Command is not available: 'hello'.")),
        case("CLIENT SETNAME", r#"["CLIENT","SETNAME","x"]"#, 400, Prefix("ERR Command is not available: 'client|setname'.")),
        case("WAIT (blocking, no non-blocking form)", r#"["WAIT",1,0]"#, 400, Prefix("ERR Command is not available: 'wait'.")),
        Case {
            name: "11 MB body",
            path: "/",
            body: {
                let mut body = b"[\"SET\",\"big\",\"".to_vec();
                body.extend(std::iter::repeat_n(b'x', 11 * 1024 * 1024));
                body.extend_from_slice(b"\"]");
                body
            },
            token: Some(TOKEN),
            status: 413,
            error: Exact("ERR max request size exceeded"),
        },
        Case {
            name: "missing token",
            path: "/",
            body: br#"["PING"]"#.to_vec(),
            token: None,
            status: 401,
            error: Exact("WRONGPASS invalid or missing auth token"),
        },
        Case {
            name: "wrong token",
            path: "/",
            body: br#"["PING"]"#.to_vec(),
            token: Some("not-the-token"),
            status: 401,
            error: Exact("WRONGPASS invalid or missing auth token"),
        },
        Case {
            name: "read-only token writing",
            path: "/",
            body: br#"["SET","k","v"]"#.to_vec(),
            token: Some(READONLY_TOKEN),
            status: 403,
            error: Exact("NOPERM this user has no permissions to run the 'set' command"),
        },
        Case {
            name: "read-only token running a @dangerous read",
            path: "/",
            body: br#"["KEYS","*"]"#.to_vec(),
            token: Some(READONLY_TOKEN),
            status: 403,
            error: Exact("NOPERM this user has no permissions to run the 'keys' command"),
        },
        Case {
            name: "empty pipeline",
            path: "/pipeline",
            body: b"[]".to_vec(),
            token: Some(TOKEN),
            status: 400,
            error: Exact("ERR empty pipeline: send at least one command"),
        },
        Case {
            name: "pipeline of non-arrays",
            path: "/pipeline",
            body: br#"["GET","k"]"#.to_vec(),
            token: Some(TOKEN),
            status: 400,
            error: Prefix("ERR the request body must be a JSON array of commands"),
        },
        Case {
            // (In /pipeline it is that item's error: protocol::upstash_extensions.)
            name: "transaction with a null argument",
            path: "/multi-exec",
            body: br#"[["GET","k"],["SET","k",null]]"#.to_vec(),
            token: Some(TOKEN),
            status: 400,
            error: Exact("ERR argument 3 is null; arguments must be strings, numbers or booleans"),
        },
        Case {
            name: "empty transaction",
            path: "/multi-exec",
            body: b"[]".to_vec(),
            token: Some(TOKEN),
            status: 400,
            error: Exact("ERR empty pipeline: send at least one command"),
        },
        Case {
            name: "transaction with a queue-time error",
            path: "/multi-exec",
            body: br#"[["SET","k","v"],["GET"]]"#.to_vec(),
            token: Some(TOKEN),
            status: 400,
            error: Prefix("EXECABORT Transaction discarded because of previous errors."),
        },
        Case {
            // restash answers this error itself (an unknown command with non-ASCII
            // arguments); in a transaction that discards the whole of it, as Redis does.
            name: "transaction with an error restash answers itself",
            path: "/multi-exec",
            body: r#"[["SET","k","v"],["NOSUCHCMD","é"]]"#.as_bytes().to_vec(),
            token: Some(TOKEN),
            status: 400,
            error: Prefix("EXECABORT Transaction discarded because of previous errors. First error: ERR unknown command 'NOSUCHCMD'"),
        },
        Case {
            name: "transaction with a refused command",
            path: "/multi-exec",
            body: br#"[["SET","k","v"],["SELECT","2"]]"#.to_vec(),
            token: Some(TOKEN),
            status: 400,
            error: Prefix("ERR Command is not available: 'select'."),
        },
        Case {
            name: "read-only transaction writing",
            path: "/multi-exec",
            body: br#"[["GET","k"],["SET","k","v"]]"#.to_vec(),
            token: Some(READONLY_TOKEN),
            status: 403,
            error: Exact("NOPERM this user has no permissions to run the 'set' command"),
        },
        Case {
            name: "invalid UTF-8 body",
            path: "/",
            body: b"[\"GET\",\"\xff\"]".to_vec(),
            token: Some(TOKEN),
            status: 400,
            error: Prefix("ERR failed to parse the request body as JSON"),
        },
    ];
    cases.push(case(
        "NOSCRIPT",
        r#"["EVALSHA","0000000000000000000000000000000000000000",0]"#,
        400,
        Prefix("NOSCRIPT"),
    ));

    let mut failures = Vec::new();
    for case in &cases {
        let (status, body) = send_case(&gateway, case).await;
        let text = body["error"]
            .as_str()
            .unwrap_or("<no error key>")
            .to_string();
        let text_ok = match case.error {
            Text::Exact(expected) => text == expected,
            Text::Prefix(expected) => text.starts_with(expected),
        };
        let only_error_key = body.as_object().is_some_and(|o| o.len() == 1);
        if status != case.status || !text_ok || !only_error_key {
            failures.push(format!("{}: got {status} {body}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
    // Nothing panicked: the gateway still answers.
    assert_eq!(
        gateway.command(json!(["PING"])).await,
        (200, json!({"result": "PONG"}))
    );
}

/// Sends one case. The server answers 413 before reading an oversized body and
/// closes the connection, so a client still writing may see a reset instead of
/// the answer (as with any HTTP server without lingering close): retry then.
async fn send_case(gateway: &Gateway, case: &Case) -> (u16, Value) {
    for _ in 0..5 {
        let mut request = gateway
            .http
            .post(gateway.at(case.path))
            .body(case.body.clone());
        if let Some(token) = case.token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let is_json = response
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
                assert!(is_json, "{}: not JSON", case.name);
                let body: Value = response.json().await.expect("JSON body");
                return (status, body);
            }
            // None of these requests changes data, so a retry is harmless.
            Err(error) => eprintln!("{}: {error}; retrying", case.name),
        }
    }
    panic!("{}: no answer after 5 attempts", case.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_level_errors_are_json() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis).await;

    // 405: GET on the JSON endpoint, DELETE on a command path.
    let (status, body) = gateway
        .send(gateway.http.get(gateway.at("/")).bearer_auth(TOKEN))
        .await;
    assert_eq!(
        (status, body),
        (405, json!({"error": "ERR method not allowed"}))
    );
    let (status, body) = gateway
        .send(gateway.http.delete(gateway.at("/get/k")).bearer_auth(TOKEN))
        .await;
    assert_eq!(
        (status, body),
        (405, json!({"error": "ERR method not allowed"}))
    );
    let (status, _) = gateway
        .send(gateway.http.get(gateway.at("/pipeline")).bearer_auth(TOKEN))
        .await;
    assert_eq!(status, 405);

    // 404: endpoints that are reserved but not commands.
    let (status, body) = gateway
        .send(gateway.http.get(gateway.at("/cache")).bearer_auth(TOKEN))
        .await;
    assert_eq!(status, 404);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .starts_with("ERR no such endpoint"));

    // Bad response-format headers.
    let (status, body) = gateway
        .send(
            gateway
                .http
                .post(gateway.at("/"))
                .bearer_auth(TOKEN)
                .header("Upstash-Response-Format", "xml")
                .body(r#"["PING"]"#),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "ERR invalid Upstash-Response-Format 'xml': expected json or resp2"
    );
    let (status, body) = gateway
        .send(
            gateway
                .http
                .post(gateway.at("/"))
                .bearer_auth(TOKEN)
                .header("Upstash-Response-Format", "resp2")
                .header("Upstash-Encoding", "base64")
                .body(r#"["PING"]"#),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("cannot be combined"));
    let (status, body) = gateway
        .send(
            gateway
                .http
                .post(gateway.at("/multi-exec"))
                .bearer_auth(TOKEN)
                .header("Upstash-Response-Format", "resp2")
                .body(r#"[["PING"]]"#),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "ERR Upstash-Response-Format: resp2 is not supported for /multi-exec"
    );

    // A non-bearer Authorization header is not a token.
    let (status, _) = gateway
        .send(
            gateway
                .http
                .post(gateway.at("/"))
                .header("Authorization", "Basic dGVzdA==")
                .body(r#"["PING"]"#),
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_commands_answer_at_once() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis).await;
    // Consumer groups whose names read like XREADGROUP's keywords.
    for group in ["streams", "block"] {
        let create = json!(["XGROUP", "CREATE", "bi:grouped", group, "$", "MKSTREAM"]);
        assert_eq!(
            gateway.command(create).await,
            (200, json!({"result": "OK"}))
        );
    }
    let started = Instant::now();
    for command in [
        json!(["BLPOP", "bi:empty1", "bi:empty2", 0]),
        json!(["BRPOP", "bi:empty", 0]),
        json!(["BLMOVE", "bi:empty", "bi:dst", "LEFT", "RIGHT", 0]),
        json!(["BRPOPLPUSH", "bi:empty", "bi:dst", 0]),
        json!(["BZPOPMIN", "bi:emptyz", 0]),
        json!(["BLMPOP", 0, 1, "bi:empty", "LEFT"]),
        json!(["BZMPOP", 0, 1, "bi:emptyz", "MIN"]),
        json!(["XREAD", "BLOCK", 0, "STREAMS", "bi:stream", "$"]),
        json!([
            "XREADGROUP",
            "GROUP",
            "streams",
            "c",
            "BLOCK",
            0,
            "STREAMS",
            "bi:grouped",
            ">"
        ]),
        json!([
            "XREADGROUP",
            "COUNT",
            1,
            "GROUP",
            "block",
            "c",
            "BLOCK",
            0,
            "STREAMS",
            "bi:grouped",
            ">"
        ]),
        json!([
            "XREADGROUP",
            "GROUP",
            "block",
            "c",
            "BLOCK",
            5,
            "BLOCK",
            0,
            "STREAMS",
            "bi:grouped",
            ">"
        ]),
    ] {
        assert_eq!(
            gateway.command(command.clone()).await,
            (200, json!({"result": null})),
            "{command}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "blocking commands waited"
    );
    // With data they answer like their blocking forms would.
    gateway.command(json!(["RPUSH", "bi:list", "a", "b"])).await;
    assert_eq!(
        gateway
            .command(json!(["BLPOP", "bi:none", "bi:list", 1]))
            .await,
        (200, json!({"result": ["bi:list", "a"]}))
    );
    gateway.command(json!(["ZADD", "bi:z", 1.5, "m"])).await;
    assert_eq!(
        gateway.command(json!(["BZPOPMIN", "bi:z", 1])).await,
        (200, json!({"result": ["bi:z", "m", "1.5"]}))
    );
    assert_eq!(
        gateway
            .command(json!(["BLMOVE", "bi:list", "bi:dst", "LEFT", "RIGHT", 1]))
            .await,
        (200, json!({"result": "b"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_command_pipeline() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis).await;
    let commands: Vec<Value> = (0..10_000)
        .map(|i| {
            if i % 2 == 0 {
                json!(["SET", format!("p10k:{i}"), i])
            } else {
                json!(["GET", format!("p10k:{}", i - 1)])
            }
        })
        .collect();
    let (status, body) = gateway
        .post("/pipeline", Value::Array(commands).to_string())
        .await;
    assert_eq!(status, 200, "{body}");
    let items = body.as_array().expect("array");
    assert_eq!(items.len(), 10_000);
    for (i, item) in items.iter().enumerate() {
        let expected = if i % 2 == 0 {
            json!({"result": "OK"})
        } else {
            json!({"result": (i - 1).to_string()})
        };
        assert_eq!(item, &expected, "item {i}");
    }
}

/// A transaction longer than fred's command buffer (65,536) runs whole, and one
/// whose request times out half-way is finished all the same: neither leaves its
/// connection inside `MULTI`. Before, commands past the buffer were refused, `EXEC`
/// was never sent, and the connection's next transaction (here, with one
/// connection, the very next) ran the left-over queue and got its replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_transactions_run_whole_and_leave_their_connection_clean() {
    let redis = RedisServer::start();
    let mut config = crate::harness::test_config(&redis.url());
    config.transaction_connections = 1;
    let gateway = Gateway::start_with(config.clone()).await;
    let count = 70_000;
    let incr = |key: &str| Value::Array(vec![json!(["INCR", key]); count]).to_string();
    let (status, body) = gateway.post("/multi-exec", incr("tx:whole")).await;
    assert_eq!(status, 200, "{body}");
    let items = body.as_array().expect("array");
    assert_eq!(items.len(), count);
    assert_eq!(items[count - 1], json!({"result": count}));

    // A request timeout while the commands are still being handed over (2.5 s of
    // them in a debug build), or after: the transaction runs whole either way.
    config.request_timeout = std::time::Duration::from_millis(700);
    let hurried = Gateway::start_with(config).await;
    let (status, body) = hurried.post("/multi-exec", incr("tx:hurried")).await;
    assert!(matches!(status, 200 | 408), "{status} {body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while redis.cli(&["GET", "tx:hurried"]) != count.to_string() {
        assert!(
            std::time::Instant::now() < deadline,
            "the transaction did not finish"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for gateway in [&gateway, &hurried] {
        assert_eq!(
            gateway
                .post(
                    "/multi-exec",
                    json!([["SET", "tx:next", "v"], ["GET", "tx:next"]]).to_string()
                )
                .await,
            (200, json!([{"result": "OK"}, {"result": "v"}]))
        );
    }
    assert_no_connection_inside_multi(&redis);
}

/// A transaction longer than a chunk whose commands get no reply in time (Redis
/// paused) runs nothing: `EXEC` is sent only once every command before it is
/// queued, `DISCARD` in its place otherwise, and nothing after the chunk that
/// failed; one of a single chunk runs whole or not at all. A command buffer
/// smaller than a transaction or a pipeline does not stop it (they go in chunks of
/// less than half the buffer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_fails_half_way_runs_nothing() {
    let redis = RedisServer::start();
    let mut config = crate::harness::test_config(&redis.url());
    config.transaction_connections = 1;
    config.command_timeout = Duration::from_millis(500);
    config.command_buffer = 100;
    let gateway = Gateway::start_with(config).await;
    let incr = |key: &str| Value::Array(vec![json!(["INCR", key]); 500]).to_string();
    let (status, body) = gateway.post("/multi-exec", incr("tx:chunked")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[499], json!({"result": 500}));
    // A pipeline too.
    let (status, body) = gateway.post("/pipeline", incr("tx:pipelined")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[499], json!({"result": 500}));

    // Many chunks: the first times out, and Redis, once the pause is over, gets
    // `MULTI`, that chunk and `DISCARD`. One chunk goes whole, `EXEC` included: it
    // runs whole once the pause is over, or not at all if fred has replaced the
    // unresponsive connection by then (a 504 may have committed).
    for (key, count, after) in [
        ("tx:paused", 500, &[""][..]),
        ("tx:paused-short", 10, &["", "10"]),
    ] {
        assert_eq!(redis.cli(&["CLIENT", "PAUSE", "1500", "ALL"]), "OK");
        let batch = Value::Array(vec![json!(["INCR", key]); count]).to_string();
        let (status, body) = gateway.post("/multi-exec", batch).await;
        assert_eq!(status, 504, "{body}");
        // Answered once the pause is over.
        let value = redis.cli(&["GET", key]);
        assert!(after.contains(&value.as_str()), "{key}: {value:?}");
    }
    assert_eq!(
        gateway
            .post(
                "/multi-exec",
                json!([["SET", "tx:after", "v"], ["GET", "tx:after"]]).to_string()
            )
            .await,
        (200, json!([{"result": "OK"}, {"result": "v"}]))
    );
    assert_eq!(redis.cli(&["EXISTS", "tx:paused"]), "0");
}

/// Redis busy (a slow script) while a large transaction is written: commands time
/// out in fred's queue and fred skips writing them, `EXEC` or `DISCARD` included.
/// The connection is then replaced, so the next caller's transaction is its own.
/// Before, the connection stayed inside `MULTI`, the next caller's commands joined
/// the old transaction, and it got the first caller's data (found by a
/// fault-probing helper, 3 runs out of 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_transaction_never_answers_the_next_caller() {
    let redis = RedisServer::start();
    let mut config = crate::harness::test_config(&redis.url());
    config.transaction_connections = 1;
    config.command_timeout = Duration::from_millis(300);
    let gateway = Gateway::start_with(config).await;
    redis.cli(&["SET", "stall:secret", "alice-private-data"]);
    let port = redis.port.to_string();
    let busy = std::thread::spawn(move || {
        let script = "local s=redis.call('TIME') local e=s[1]*1000000+s[2]+1500000 \
            while true do local n=redis.call('TIME') if n[1]*1000000+n[2] > e then break end end \
            return 1";
        std::process::Command::new("redis-cli")
            .args(["-p", &port, "EVAL", script, "0"])
            .output()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let value = "x".repeat(8192);
    let mut alice = vec![json!(["GET", "stall:secret"])];
    alice.extend((0..1100).map(|i| json!(["SET", format!("stall:a{i}"), value])));
    let (status, body) = gateway
        .post("/multi-exec", Value::Array(alice).to_string())
        .await;
    assert!(matches!(status, 503 | 504), "{status} {body}");
    busy.join().expect("busy script").expect("redis-cli");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bob = json!([["INCR", "stall:bob"], ["INCR", "stall:bob"]]).to_string();
    let mut answer = gateway.post("/multi-exec", bob.clone()).await;
    if answer.0 != 200 {
        // The replaced connection may still be coming back.
        tokio::time::sleep(Duration::from_millis(500)).await;
        answer = gateway.post("/multi-exec", bob).await;
    }
    assert_eq!(answer, (200, json!([{"result": 1}, {"result": 2}])));
    assert_no_connection_inside_multi(&redis);
}

/// The transaction's connection killed while its commands are on their way: the
/// transaction runs whole or not at all. fred retried the commands still queued
/// for the dropped connection on the next one, outside `MULTI`: 14 of 20 such
/// transactions ran in part (a fault-probing helper's script; vendor/README.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_whose_connection_is_killed_runs_whole_or_not_at_all() {
    let redis = RedisServer::start();
    let mut config = crate::harness::test_config(&redis.url());
    config.transaction_connections = 1;
    let gateway = Gateway::start_with(config).await;
    let count = 1000;
    for round in 0..10u64 {
        let key = format!("killed:{round}");
        let batch = Value::Array(vec![json!(["INCR", key]); count]).to_string();
        let port = redis.port.to_string();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5 * round));
            std::process::Command::new("redis-cli")
                .args([
                    "-p", &port, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes",
                ])
                .output()
        });
        let (status, body) = gateway.post("/multi-exec", batch).await;
        killer.join().expect("killer").expect("redis-cli");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ran = redis.cli(&["GET", &key]);
        assert!(
            ran.is_empty() || ran == count.to_string(),
            "round {round}: {ran} of {count} ran; answered {status} {body}"
        );
        if status == 200 {
            assert_eq!(ran, count.to_string(), "round {round}");
        }
    }
}

/// Redis echoes the arguments of unknown commands in its error text; bytes that are
/// not UTF-8 there used to wedge the shared connection (found by schemathesis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_arguments_in_error_texts_do_not_wedge_the_connection() {
    let redis = RedisServer::start();
    let mut config = crate::harness::test_config(&redis.url());
    config.redis_connections = 1;
    let gateway = Gateway::start_with(config).await;
    let get = |path: &str| gateway.send(gateway.http.get(gateway.at(path)).bearer_auth(TOKEN));
    assert_eq!(
        get("/nosuchcmd/a%FFb").await,
        (
            400,
            json!({"error": "ERR unknown command 'nosuchcmd', with args beginning with: 'a\u{fffd}b' "})
        )
    );
    assert_eq!(
        get("/object/%FF/k").await,
        (
            400,
            json!({"error": "ERR unknown subcommand '\u{fffd}'. Try OBJECT HELP."})
        )
    );
    let (status, body) = gateway
        .send(
            gateway
                .http
                .post(gateway.at("/eval/0"))
                .bearer_auth(TOKEN)
                .body(vec![0xffu8, b'x']),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // Plain UTF-8 still gets Redis' verbatim text, and the connection still answers.
    assert_eq!(
        get("/nosuchcmd/ok").await,
        (
            400,
            json!({"error": "ERR unknown command 'nosuchcmd', with args beginning with: 'ok' "})
        )
    );
    for _ in 0..3 {
        assert_eq!(
            gateway.command(json!(["PING"])).await,
            (200, json!({"result": "PONG"}))
        );
    }
}

/// Sends `body` with `Transfer-Encoding: chunked`, in `pieces` chunks (each written
/// on its own), and returns the status and JSON body of the answer. A body over the
/// limit is answered 413 and the connection closed while the client is still
/// writing: the answer is read after the failed write, and a connection reset
/// before it could be read is retried, as `send_case` does (every request here may
/// run twice).
async fn send_chunked(gateway: &Gateway, path: &str, body: &[u8], pieces: usize) -> (u16, Value) {
    for _ in 0..5 {
        match try_send_chunked(gateway, path, body, pieces).await {
            Ok(answer) => return answer,
            Err(error) => eprintln!("{path}: {error}; retrying"),
        }
    }
    panic!("{path}: no answer after 5 attempts");
}

async fn try_send_chunked(
    gateway: &Gateway,
    path: &str,
    body: &[u8],
    pieces: usize,
) -> Result<(u16, Value), std::io::Error> {
    use tokio::io::AsyncWriteExt;
    let address = gateway.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    // The server may answer (413) and close before the body is all sent: a write
    // that fails ends the writing, and the answer is read all the same.
    let written = async {
        stream.write_all(head.as_bytes()).await?;
        for piece in body.chunks(body.len().div_ceil(pieces).max(1)) {
            let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
            chunk.extend_from_slice(piece);
            chunk.extend_from_slice(b"\r\n");
            stream.write_all(&chunk).await?;
            stream.flush().await?;
        }
        stream.write_all(b"0\r\n\r\n").await
    }
    .await;
    if let Err(error) = written {
        eprintln!("{path}: writing stopped: {error}");
    }
    read_answer(stream).await
}

/// A `Content-Length` over the body limit is refused before the body is read: a
/// client that sent `Expect: 100-continue` (curl does, past 1 MB) gets the 413
/// instead of `100 Continue`, and sends nothing. Before, it got `100 Continue` and
/// the 413 only after sending the limit's worth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_over_the_limit_is_refused_up_front() {
    use tokio::io::AsyncWriteExt;
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis).await;
    let address = gateway.url.trim_start_matches("http://").to_string();
    for path in [
        "/",
        "/pipeline",
        "/multi-exec",
        "/set/declared",
        "/cache/ns/k",
    ] {
        let method = if path.starts_with("/cache") {
            "PUT"
        } else {
            "POST"
        };
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: 99999999\r\nExpect: 100-continue\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        let (status, body) = read_answer(stream).await.expect("an answer");
        assert_eq!(
            (status, body),
            (413, json!({"error": "ERR max request size exceeded"})),
            "{method} {path}"
        );
    }
}

/// Requests hyper refuses before restash sees them (a URL over 64 KiB, too many
/// headers, a malformed header or request line) are answered in the JSON error shape
/// too. hyper as published sends these with an empty body, which the SDKs fail to
/// parse as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_cannot_parse_get_json_errors() {
    use tokio::io::AsyncWriteExt;
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis).await;
    let address = gateway.url.trim_start_matches("http://").to_string();
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let long_value = "a".repeat(70_000);
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases = [
        (
            format!("GET /set/k/{long_value} HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            414,
            "ERR request URL too long: send the command as a JSON body to POST / instead",
        ),
        (
            format!("GET /get/k HTTP/1.1\r\nHost: x\r\n{auth}{many_headers}\r\n"),
            431,
            "ERR request headers too large",
        ),
        (
            format!("GET /get/k HTTP/1.1\r\nHost: x\r\n{auth}Bad Header\r\n\r\n"),
            400,
            "ERR bad request: a header could not be parsed",
        ),
        (
            "GARBAGE\r\n\r\n".to_string(),
            400,
            "ERR bad request: the HTTP method could not be parsed",
        ),
    ];
    for (request, status, error) in cases {
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let answer = read_answer(stream).await.expect("an answer");
        assert_eq!(answer, (status, json!({ "error": error })));
    }
}

/// Reads a whole `Connection: close` answer: status and JSON body.
async fn read_answer(mut stream: tokio::net::TcpStream) -> Result<(u16, Value), std::io::Error> {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // One chunk is all an answer of this size takes.
        body.split("\r\n").nth(1).unwrap_or_default().to_string()
    } else {
        body.to_string()
    };
    let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {text}"));
    Ok((status, json))
}

/// A body that arrives in several pieces is joined whole, on the routes served
/// outside the router (`/`, `/pipeline`, path commands) and inside it
/// (`/multi-exec`); past the size limit it is a 413 even without a
/// `Content-Length`, and a broken chunked encoding is a JSON 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_pieces_are_read_whole_and_limited() {
    let redis = RedisServer::start();
    let mut config = crate::harness::test_config(&redis.url());
    config.max_body_bytes = 64 * 1024;
    let gateway = Gateway::start_with(config).await;
    let value = "v".repeat(3000);

    let set = json!(["SET", "pieces:a", value]).to_string();
    let (status, body) = send_chunked(&gateway, "/", set.as_bytes(), 7).await;
    assert_eq!((status, &body), (200, &json!({"result": "OK"})));
    let (_, body) = gateway.command(json!(["GET", "pieces:a"])).await;
    assert_eq!(
        body,
        json!({"result": value}),
        "the value was joined in order"
    );

    let pipeline = json!([["SET", "pieces:b", "1"], ["GET", "pieces:b"]]).to_string();
    let (status, body) = send_chunked(&gateway, "/pipeline", pipeline.as_bytes(), 3).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!([{"result": "OK"}, {"result": "1"}]));

    let (status, body) = send_chunked(&gateway, "/set/pieces:c", value.as_bytes(), 5).await;
    assert_eq!((status, &body), (200, &json!({"result": "OK"})));
    let (_, body) = gateway.command(json!(["STRLEN", "pieces:c"])).await;
    assert_eq!(body, json!({"result": 3000}));

    let (status, body) = send_chunked(&gateway, "/multi-exec", pipeline.as_bytes(), 4).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!([{"result": "OK"}, {"result": "1"}]));

    // 4 MB: the gateway answers and closes long before the client has written it all.
    let too_big = json!(["SET", "pieces:d", "x".repeat(4 * 1024 * 1024)]).to_string();
    for path in ["/", "/multi-exec", "/set/pieces:d"] {
        let (status, body) = send_chunked(&gateway, path, too_big.as_bytes(), 8).await;
        assert_eq!(status, 413, "{path}: {body}");
        assert_eq!(
            body,
            json!({"error": "ERR max request size exceeded"}),
            "{path}"
        );
    }

    // A chunk size that is not hexadecimal.
    use tokio::io::AsyncWriteExt;
    let address = gateway.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let broken = format!(
        "POST / HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n[\"GET\r\nzz\r\n"
    );
    stream.write_all(broken.as_bytes()).await.expect("write");
    let (status, body) = read_answer(stream).await.expect("an answer");
    assert_eq!(status, 400, "{body}");
    let text = body["error"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("ERR could not read the request body"),
        "{body}"
    );
}

/// Fails when a connection to `redis` is inside `MULTI` (`CLIENT LIST`).
fn assert_no_connection_inside_multi(redis: &RedisServer) {
    let in_multi: Vec<String> = redis
        .cli(&["CLIENT", "LIST"])
        .lines()
        .filter(|line| !line.contains(" multi=-1 "))
        .map(String::from)
        .collect();
    assert!(
        in_multi.is_empty(),
        "connections inside MULTI: {in_multi:?}"
    );
}
