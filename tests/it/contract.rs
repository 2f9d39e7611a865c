//! The API contract: `openapi/openapi.yaml` is served, every documented status of every
//! endpoint validates against it (tests/contract/validate.py, schemathesis' checks),
//! schemathesis fuzzes a live restash without finding a 5xx or a spec violation, a
//! TypeScript client generated from the spec works, and `/metrics` reports what it says.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::harness::{
    free_port, prefix, test_config, Gateway, OutputWithin, RedisServer, READONLY_TOKEN, TOKEN,
};

const PYTHON: &str = "tests/sdk/python/.venv/bin/python";
const SCHEMATHESIS: &str = "tests/sdk/python/.venv/bin/schemathesis";
const MAX_BODY_BYTES: usize = 100_000;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn require(path: &str) {
    assert!(
        root().join(path).exists(),
        "{path} is missing: run `scripts/test`, which installs the contract tools"
    );
}

/// Runs `program` from the repository root; panics with its output if it fails.
fn run(program: &str, args: &[&str], env: &[(&str, String)]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(root())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output_within(Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{program} {args:?} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_served_and_names_real_routes() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let response = gw.http.get(gw.at("/openapi.yaml")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/yaml"),
        "{content_type}"
    );
    let served = response.text().await.unwrap();
    let file = std::fs::read_to_string(root().join("openapi/openapi.yaml")).unwrap();
    assert_eq!(served, file);

    let spec: serde_json::Value = serde_norway::from_str(&file).expect("valid YAML");
    assert_eq!(spec["openapi"], "3.1.0");
    let paths = spec["paths"].as_object().expect("paths");
    for required in [
        "/",
        "/pipeline",
        "/multi-exec",
        "/{command}",
        "/{command}/{arguments}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.yaml",
        "/cache/{namespace}/{key}",
        "/subscribe/{channel}",
        "/psubscribe/{pattern}",
        "/ssubscribe/{channel}",
        "/monitor",
    ] {
        assert!(paths.contains_key(required), "{required} is not documented");
    }
    // Every concrete documented path is a route (never the "no such endpoint" fallback).
    for (path, operations) in paths {
        if path.contains('{') || path.contains("monitor") {
            continue;
        }
        for method in operations.as_object().unwrap().keys() {
            let request = gw
                .http
                .request(method.to_uppercase().parse().unwrap(), gw.at(path))
                .bearer_auth(TOKEN);
            let answer = request.send().await.unwrap();
            let status = answer.status();
            let text = answer.text().await.unwrap();
            assert!(
                status != 404 && status != 405,
                "{method} {path}: {status} {text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_routes_commands_and_failures_never_keys() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let secret = format!("{}secret-key-name", prefix());
    assert_eq!(gw.command(json!(["SET", secret, "v"])).await.0, 200);
    assert_eq!(
        gw.post(
            "/pipeline",
            json!([["GET", secret], ["XYZZYCMD", secret]]).to_string()
        )
        .await
        .0,
        200
    );
    assert_eq!(gw.post("/multi-exec", r#"[["PING"]]"#).await.0, 200);
    let (status, _) = gw
        .send(
            gw.http
                .get(gw.at(&format!("/get/{secret}")))
                .bearer_auth(TOKEN),
        )
        .await;
    assert_eq!(status, 200);
    // A gateway whose Redis is down: 503s counted as Redis errors.
    let down =
        Gateway::start_with(test_config(&format!("redis://127.0.0.1:{}", free_port()))).await;
    assert_eq!(down.command(json!(["PING"])).await.0, 503);

    let response = gw.http.get(gw.at("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert!(value(r#"restash_http_requests_total{route="/",method="POST",status="200"}"#) >= 1.0);
    assert!(
        value(r#"restash_http_requests_total{route="/{*path}",method="GET",status="200"}"#) >= 1.0
    );
    assert!(value(r#"restash_redis_commands_total{command="set"}"#) >= 1.0);
    assert!(value(r#"restash_redis_commands_total{command="get"}"#) >= 2.0);
    assert!(value(r#"restash_redis_commands_total{command="other"}"#) >= 1.0);
    assert!(value(r#"restash_redis_errors_total{kind="unavailable"}"#) >= 1.0);
    // Pools: sizes, and transactions' dedicated connections in use.
    assert!(value(r#"restash_redis_pool_connections{pool="transactions"}"#) >= 1.0);
    assert_eq!(
        value(r#"restash_redis_pool_in_use{pool="transactions"}"#),
        0.0
    );
    assert!(text.contains("restash_redis_pool_connections{pool=\"shared\"}"));
    assert!(value("restash_http_requests_in_flight") >= 1.0);
    assert!(
        value(r#"restash_http_request_duration_seconds_bucket{route="/",method="POST",le="+Inf"}"#)
            >= 1.0
    );
    assert!(text.contains("# TYPE restash_http_request_duration_seconds histogram"));
    assert!(
        !text.contains("secret-key-name"),
        "a key leaked into /metrics"
    );
    assert!(!text.contains("XYZZYCMD") && !text.contains("xyzzycmd"));

    // Cache counters recorded by the cache module show up here too.
    let cache = gw
        .http
        .get(gw.at(&format!(
            "/cache/metrics/{}",
            prefix().trim_end_matches(':')
        )))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    if cache.headers().contains_key("x-cache") {
        let text = gw.metrics().await;
        assert!(
            text.contains(r#"restash_cache_events_total{namespace="metrics",event="miss"}"#),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_answer_validates_against_the_spec() {
    require(PYTHON);
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.command_timeout = Duration::from_millis(500);
    config.request_timeout = Duration::from_millis(1000);
    config.max_body_bytes = MAX_BODY_BYTES;
    config.jwt_secret = Some("contract-secret-at-least-32-bytes!!".into());
    let gw = Gateway::start_with(config).await;
    let down =
        Gateway::start_with(test_config(&format!("redis://127.0.0.1:{}", free_port()))).await;
    // One request per 100 s: its second request gets 429.
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 600;
    let limited = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "limited", "exp": exp, "rate": {"per_second": 0.01, "burst": 1}}),
        &jsonwebtoken::EncodingKey::from_secret(b"contract-secret-at-least-32-bytes!!"),
    )
    .expect("sign");
    let env = [
        ("RESTASH_URL", gw.url.clone()),
        ("RESTASH_DOWN_URL", down.url.clone()),
        ("RESTASH_TOKEN", TOKEN.to_string()),
        ("RESTASH_READONLY_TOKEN", READONLY_TOKEN.to_string()),
        ("RESTASH_LIMITED_TOKEN", limited),
        ("REDIS_PORT", redis.port.to_string()),
        ("RESTASH_MAX_BODY_BYTES", MAX_BODY_BYTES.to_string()),
    ];
    let output = tokio::task::block_in_place(|| run(PYTHON, &["tests/contract/validate.py"], &env));
    eprintln!("{}", tail(&output, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_spec_violation() {
    require(SCHEMATHESIS);
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let cache_served = gw
        .http
        .get(gw.at("/cache/probe/probe"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .headers()
        .contains_key("x-cache");
    // Streams never end, so they are checked by validate.py instead.
    let exclude = if cache_served {
        "^/(subscribe|psubscribe|ssubscribe|monitor)"
    } else {
        "^/(subscribe|psubscribe|ssubscribe|monitor|cache)"
    };
    let auth = format!("Authorization: Bearer {TOKEN}");
    let report = std::env::temp_dir().join(format!("restash-schemathesis-{}", free_port()));
    let report = report.to_string_lossy().to_string();
    let args = [
        "run",
        "openapi/openapi.yaml",
        "--url",
        &gw.url,
        "-H",
        &auth,
        "--mode",
        "positive",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,\
         response_schema_conformance,response_headers_conformance",
        "--exclude-path-regex",
        exclude,
        "--max-examples",
        "12",
        "--max-time",
        "50",
        "--request-timeout",
        "10",
        "--seed",
        "20261122",
        "--warnings",
        "off",
        "--report-dir",
        &report,
    ];
    let output =
        tokio::task::block_in_place(|| run(SCHEMATHESIS, &args, &[("NO_COLOR", "1".to_string())]));
    let _ = std::fs::remove_dir_all(&report);
    eprintln!("schemathesis:\n{}", tail(&output, 14));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_typescript_client_works() {
    require("tests/contract/ts/node_modules/openapi-typescript");
    require("tests/contract/ts/node_modules/openapi-fetch");
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let env = [
        ("RESTASH_URL", gw.url.clone()),
        ("RESTASH_TOKEN", TOKEN.to_string()),
    ];
    let output = tokio::task::block_in_place(|| {
        run(
            "npm",
            &[
                "--prefix",
                "tests/contract/ts",
                "run",
                "--silent",
                "contract",
            ],
            &env,
        )
    });
    eprintln!("{}", tail(&output, 9));
}
