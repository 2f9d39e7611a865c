//! Failover: a primary dies under steady load; restash answers JSON 503s
//! promptly during the gap and recovers once a replica is promoted.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{test_config, Gateway, RedisCluster, SentinelSet, TOKEN};

/// What a steady load saw around a failover.
struct Observation {
    /// Longest single request.
    slowest: Duration,
    /// Non-200 answers, by status.
    errors: Vec<(u16, Value)>,
    /// When the first failure after the kill was seen, and the first success after it.
    recovered_after_kill: Option<Duration>,
}

/// Sends `SET` + `GET` on `key` in a loop for at most `limit`, from `killed_at` on
/// watching for the first failure and the next success.
async fn steady_load(gw: &Gateway, key: &str, killed_at: Instant, limit: Duration) -> Observation {
    let mut observation = Observation {
        slowest: Duration::ZERO,
        errors: Vec::new(),
        recovered_after_kill: None,
    };
    let mut failed_since_kill = false;
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < limit {
        i += 1;
        let t = Instant::now();
        let response = gw
            .http
            .post(gw.at("/pipeline"))
            .bearer_auth(TOKEN)
            .body(json!([["SET", key, i], ["GET", key]]).to_string())
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("every answer is JSON");
        observation.slowest = observation.slowest.max(t.elapsed());
        let ok = status == 200 && body[1]["result"] == json!(i.to_string());
        if !ok {
            failed_since_kill = true;
            observation.errors.push((status, body));
        } else if failed_since_kill && observation.recovered_after_kill.is_none() {
            observation.recovered_after_kill = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    observation
}

/// Every failure during the gap is a JSON 503 or 504 with an error message.
fn check_errors(errors: &[(u16, Value)]) {
    for (status, body) in errors {
        assert!(
            matches!(status, 503 | 504),
            "unexpected status {status}: {body}"
        );
        assert!(body["error"].is_string(), "not an Upstash error: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_primary_failover() {
    let mut cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 1));
    let mut config = test_config(&cluster.url());
    config.command_timeout = Duration::from_secs(1);
    let gw = Gateway::start_with(config).await;
    // A key owned by the first primary (redis-cli makes the first three nodes
    // primaries); other nodes answer MOVED for it.
    let key = (0..)
        .map(|i| format!("failover:{i}"))
        .find(|k| cluster.nodes[0].cli(&["EXISTS", k]) == "0")
        .expect("a key on the first primary");
    assert_eq!(gw.command(json!(["SET", key, "before"])).await.0, 200);

    let killed_at = Instant::now();
    cluster.nodes[0].kill();
    let observed = steady_load(&gw, &key, killed_at, Duration::from_secs(30)).await;
    let primaries = cluster.nodes[1..]
        .iter()
        .filter(|n| n.cli(&["ROLE"]).starts_with("master"))
        .count();
    assert_eq!(primaries, 3, "no replica was promoted");
    let recovered = observed
        .recovered_after_kill
        .expect("restash never recovered after the failover");
    eprintln!(
        "cluster failover: recovered {recovered:?} after the kill ({} failed requests, slowest {:?})",
        observed.errors.len(),
        observed.slowest
    );
    check_errors(&observed.errors);
    assert!(
        observed.slowest < Duration::from_millis(2500),
        "a request hung for {:?}",
        observed.slowest
    );
    // cluster-node-timeout is 1 s: the election takes 1-3 s; restash must follow within 10 s of it.
    assert!(
        recovered < Duration::from_secs(13),
        "recovery took {recovered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_promotes_a_replica() {
    let mut set = tokio::task::block_in_place(SentinelSet::start);
    let mut config = test_config(&set.url());
    config.command_timeout = Duration::from_secs(1);
    let gw = Gateway::start_with(config).await;
    assert_eq!(
        gw.command(json!(["SET", "sentinel:k", "v"])).await,
        (200, json!({"result": "OK"}))
    );
    assert_eq!(
        gw.command(json!(["GET", "sentinel:k"])).await,
        (200, json!({"result": "v"}))
    );

    let killed_at = Instant::now();
    set.servers[0].kill();
    let observed = steady_load(&gw, "sentinel:k", killed_at, Duration::from_secs(30)).await;
    let recovered = observed
        .recovered_after_kill
        .expect("restash never recovered after the failover");
    eprintln!(
        "sentinel failover: recovered {recovered:?} after the kill ({} failed requests, slowest {:?})",
        observed.errors.len(),
        observed.slowest
    );
    assert!(
        set.servers[1].cli(&["ROLE"]).starts_with("master"),
        "the replica was not promoted"
    );
    check_errors(&observed.errors);
    assert!(
        observed.slowest < Duration::from_millis(2500),
        "a request hung for {:?}",
        observed.slowest
    );
    assert!(
        recovered < Duration::from_secs(15),
        "recovery took {recovered:?}"
    );
}
