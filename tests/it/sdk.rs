//! The official SDKs against restash: `@upstash/redis` + `@upstash/ratelimit`
//! (Node) and `upstash-redis` sync and async (Python). `scripts/test` installs them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{
    prefix, Gateway, OutputWithin, RedisCluster, RedisServer, READONLY_TOKEN, TOKEN,
};

fn run_suite(gateway: &Gateway, key_prefix: &str, program: &str, args: &[&str]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new(program)
        .args(args)
        .current_dir(root)
        .env("UPSTASH_REDIS_REST_URL", &gateway.url)
        .env("UPSTASH_REDIS_REST_TOKEN", TOKEN)
        .env("RESTASH_READONLY_TOKEN", READONLY_TOKEN)
        .env("RESTASH_TEST_PREFIX", key_prefix)
        .output_within(Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{program} {args:?} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // Show the suite's own summary in the cargo test output.
    let tail: Vec<&str> = stdout.lines().rev().take(12).collect();
    eprintln!(
        "{program} {args:?}:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

fn require(path: &str) {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    assert!(
        full.exists(),
        "{} is missing: run `scripts/test`, which installs the SDKs",
        full.display()
    );
}

const NODE: (&str, &[&str]) = ("npm", &["--prefix", "tests/sdk/node", "test"]);
const PYTHON: (&str, &[&str]) = (
    "tests/sdk/python/.venv/bin/python",
    &["-m", "pytest", "-q", "tests/sdk/python"],
);

fn require_node() {
    require("tests/sdk/node/node_modules/@upstash/redis");
    require("tests/sdk/node/node_modules/@upstash/ratelimit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_suite() {
    require_node();
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis).await;
    let g = &gateway;
    tokio::task::block_in_place(|| run_suite(g, &prefix(), NODE.0, NODE.1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_suite() {
    require("tests/sdk/python/.venv/bin/python");
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis).await;
    let g = &gateway;
    tokio::task::block_in_place(|| run_suite(g, &prefix(), PYTHON.0, PYTHON.1));
}

/// Both SDK suites against a 3-primary cluster. Multi-key commands need their
/// keys in one slot on a cluster, so the suites' key prefix is a hash tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_suites_on_a_cluster() {
    require_node();
    require("tests/sdk/python/.venv/bin/python");
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let gateway = Gateway::start_cluster(&cluster).await;
    let g = &gateway;
    let tag = format!("{{sdk{:08x}}}:", rand::random::<u32>());
    tokio::task::block_in_place(|| {
        run_suite(g, &tag, NODE.0, NODE.1);
        run_suite(g, &tag, PYTHON.0, PYTHON.1);
    });
}
