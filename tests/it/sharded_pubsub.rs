//! Sharded Pub/Sub over Server-Sent Events (`/ssubscribe/{channel}`, restash's
//! extension): on one node, and on a cluster where each channel is subscribed on the
//! primary that owns its hash slot, one shared link per primary.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{
    prefix, test_config, Gateway, OutputWithin, RedisCluster, RedisServer, CLI_LIMIT, TOKEN,
};
use crate::pubsub::{
    connections, eventually, named, publish_batch, read_rest, send_to_redis, stalled_reader,
    stream, Events,
};

const TENANT_TOKEN: &str = "acme-sharded-token";

/// A tokens file with a token confined to `acme:`; the directory is removed on drop.
struct TokensFile(PathBuf);

impl TokensFile {
    fn write() -> TokensFile {
        let dir =
            std::env::temp_dir().join(format!("restash-sharded-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).expect("tokens dir");
        std::fs::write(
            dir.join("tokens.toml"),
            format!(
                "[[tokens]]\nname = \"acme\"\ntoken = \"{TENANT_TOKEN}\"\nprefixes = [\"acme:\"]\n"
            ),
        )
        .expect("tokens file");
        TokensFile(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.join("tokens.toml")
    }
}

impl Drop for TokensFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `SPUBLISH` through restash's `POST /`; the number of Redis subscribers it reached.
async fn spublish(gw: &Gateway, channel: &str, message: &str) -> Value {
    let (status, body) = gw.command(json!(["SPUBLISH", channel, message])).await;
    assert_eq!(status, 200, "SPUBLISH {channel}: {body}");
    body["result"].clone()
}

fn shard_numsub(redis: &RedisServer, channel: &str) -> i64 {
    redis
        .cli(&["PUBSUB", "SHARDNUMSUB", channel])
        .lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(-1)
}

/// The refusals every topic endpoint shares: an empty name (400), a channel outside a
/// key-prefix token's prefixes (403), JSON errors both.
async fn refusals(gw: &Gateway) {
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let (status, body) = gw
            .send(
                gw.http
                    .request(method.clone(), gw.at("/ssubscribe/"))
                    .bearer_auth(TOKEN),
            )
            .await;
        assert_eq!(
            (status, body),
            (
                400,
                json!({"error": "ERR empty channel name: use /ssubscribe/<channel>"})
            ),
            "{method} /ssubscribe/"
        );
    }
    let (status, body) = gw
        .send(
            gw.http
                .get(gw.at("/ssubscribe/other:chan"))
                .bearer_auth(TENANT_TOKEN),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body,
        json!({"error": "NOPERM channel 'other:chan' is outside this token's prefixes"})
    );
    let (status, body) = gw.send(gw.http.get(gw.at("/ssubscribe/chan"))).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssubscribe_on_one_node() {
    let redis = RedisServer::start();
    let tokens = TokensFile::write();
    let mut config = test_config(&redis.url());
    config.tokens_file = Some(tokens.path());
    let gw = Gateway::start_with(config).await;
    let p = prefix();
    let channels: Vec<String> = (0..3).map(|i| format!("{p}orders{i}")).collect();
    assert_eq!(spublish(&gw, &channels[0], "nobody").await, json!(0));
    let before = connections(&redis).len();

    let mut streams = Vec::new();
    for channel in &channels {
        let mut events = Events::open(stream(&gw, &format!("/ssubscribe/{channel}"))).await;
        assert_eq!(events.data().await, format!("ssubscribe,{channel},1"));
        streams.push((channel.clone(), events));
    }
    // POST like the SDK, token in the query string: a second stream on one channel.
    let mut second = Events::open(
        gw.http
            .post(gw.at(&format!("/ssubscribe/{}?_token={TOKEN}", channels[0])))
            .header("Accept", "text/event-stream")
            .body("[]"),
    )
    .await;
    assert_eq!(second.data().await, format!("ssubscribe,{},1", channels[0]));
    // A plain subscriber of the same name, on the same shared connections.
    let mut plain = Events::open(stream(&gw, &format!("/subscribe/{}", channels[0]))).await;
    assert_eq!(plain.data().await, format!("subscribe,{},1", channels[0]));
    // One Redis subscription per channel, whatever the number of streams.
    assert_eq!(shard_numsub(&redis, &channels[0]), 1);
    assert!(named(&redis, "restash:pubsub") <= 2);

    for round in 0..5 {
        for channel in &channels {
            let message = format!("m{round} ; {channel}");
            assert_eq!(spublish(&gw, channel, &message).await, json!(1));
        }
    }
    redis.cli(&["SPUBLISH", &channels[1], "from redis-cli"]);
    for (channel, events) in &mut streams {
        for round in 0..5 {
            assert_eq!(
                events.data().await,
                format!("smessage,{channel},m{round} ; {channel}")
            );
        }
    }
    for round in 0..5 {
        assert_eq!(
            second.data().await,
            format!("smessage,{0},m{round} ; {0}", channels[0])
        );
    }
    assert_eq!(
        streams[1].1.data().await,
        format!("smessage,{},from redis-cli", channels[1])
    );

    // PUBLISH reaches the plain subscriber only; SPUBLISH the sharded ones only.
    let (_, body) = gw.command(json!(["PUBLISH", channels[0], "plain"])).await;
    assert_eq!(body, json!({"result": 1}));
    assert_eq!(spublish(&gw, &channels[0], "sharded").await, json!(1));
    assert_eq!(plain.data().await, format!("message,{},plain", channels[0]));
    for events in [&mut streams[0].1, &mut second] {
        assert_eq!(
            events.data().await,
            format!("smessage,{},sharded", channels[0])
        );
    }

    refusals(&gw).await;
    let allowed = "acme:orders";
    let mut tenant = Events::open(
        gw.http
            .get(gw.at(&format!("/ssubscribe/{allowed}")))
            .bearer_auth(TENANT_TOKEN),
    )
    .await;
    assert_eq!(tenant.data().await, format!("ssubscribe,{allowed},1"));

    drop((streams, second, plain, tenant));
    eventually(
        "restash to release its subscriber connections",
        Duration::from_secs(3),
        || shard_numsub(&redis, &channels[0]) == 0 && connections(&redis).len() == before,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sharded_reader_is_cut_off() {
    const MESSAGES: usize = 500;
    const SIZE: usize = 32 * 1024;
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.sse_buffer = 16;
    let gw = Gateway::start_with(config).await;
    let channel = format!("{}slow", prefix());
    // A raw client that reads the first event, then stops reading.
    let mut socket = stalled_reader(
        &gw,
        &format!("/ssubscribe/{channel}"),
        &format!("ssubscribe,{channel},1"),
    )
    .await;

    // 16 MB of SPUBLISH straight into Redis, pipelined.
    let batch = publish_batch("SPUBLISH", &channel, MESSAGES, SIZE);
    send_to_redis(redis.port, &batch, MESSAGES).await;

    eventually(
        "the slow reader to be cut off",
        Duration::from_secs(5),
        || shard_numsub(&redis, &channel) == 0,
    )
    .await;
    let text = read_rest(&mut socket).await;
    let received = text.matches(&format!("data: smessage,{channel},")).count();
    eprintln!(
        "slow sharded reader: received {received} of {MESSAGES} messages before the error event"
    );
    assert!(received < MESSAGES / 2, "received {received} of {MESSAGES}");
    assert!(
        text.contains(
            "event: error\ndata: ERR stream closed: the client read too slowly and fell too many \
             events behind\n\n\r\n0\r\n\r\n"
        ),
        "no error event at the end: {:?}",
        &text[text.len().saturating_sub(300)..]
    );
}

/// `redis-cli -c` (follows redirects) against `node`.
fn cli_following_redirects(node: &RedisServer, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-c", "-p", &node.port.to_string()])
        .args(args)
        .output_within(CLI_LIMIT);
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssubscribe_on_a_cluster_follows_hash_slots() {
    let mut cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let tokens = TokensFile::write();
    let mut config = test_config(&cluster.url());
    config.tokens_file = Some(tokens.path());
    let gw = Gateway::start_with(config).await;
    let p = prefix();
    let owners = cluster.slot_owners(0);
    assert_eq!(owners.len(), 16384);
    let index_of = |port: u16| cluster.nodes.iter().position(|n| n.port == port).unwrap();
    // Two channels owned by each primary.
    let mut channels: Vec<(String, usize)> = Vec::new();
    let mut per_node = [0; 3];
    for i in 0.. {
        let channel = format!("{p}c{i}");
        let node = index_of(owners[&restash::routing::key_slot(channel.as_bytes())]);
        if per_node[node] < 2 {
            per_node[node] += 1;
            channels.push((channel, node));
        }
        if per_node.iter().all(|n| *n == 2) {
            break;
        }
    }
    for (channel, _) in &channels {
        assert_eq!(spublish(&gw, channel, "nobody").await, json!(0));
    }
    let before: Vec<usize> = cluster.nodes.iter().map(|n| connections(n).len()).collect();

    let mut streams = Vec::new();
    let mut opened = Vec::new();
    for (channel, node) in &channels {
        let started = std::time::Instant::now();
        let mut events = Events::open(stream(&gw, &format!("/ssubscribe/{channel}"))).await;
        assert_eq!(events.data().await, format!("ssubscribe,{channel},1"));
        opened.push(started.elapsed());
        streams.push((channel.clone(), *node, events));
    }
    eprintln!("cluster: first event of each /ssubscribe stream after {opened:?}");
    let mut second = Events::open(stream(&gw, &format!("/ssubscribe/{}", channels[0].0))).await;
    second.data().await;
    // Each channel is subscribed on its owner, through one shared link per primary.
    for (channel, node) in &channels {
        assert_eq!(shard_numsub(&cluster.nodes[*node], channel), 1, "{channel}");
    }
    for node in &cluster.nodes {
        assert_eq!(named(node, "restash:spubsub"), 1, "node {}", node.port);
    }
    let during: Vec<usize> = cluster.nodes.iter().map(|n| connections(n).len()).collect();
    eprintln!(
        "cluster: CLIENT LIST lines per primary before {before:?}, with 7 streams {during:?}"
    );

    // SPUBLISH through restash (routed by the channel's slot) and through any node.
    for round in 0..5 {
        for (channel, _) in &channels {
            assert_eq!(spublish(&gw, channel, &format!("m{round}")).await, json!(1));
        }
    }
    for (channel, node) in &channels {
        let elsewhere = &cluster.nodes[(node + 1) % 3];
        assert_eq!(
            cli_following_redirects(elsewhere, &["SPUBLISH", channel, "via redis-cli -c"]),
            "1"
        );
    }
    // Plain PUBLISH reaches no sharded stream.
    let (_, body) = gw.command(json!(["PUBLISH", channels[0].0, "plain"])).await;
    assert_eq!(body, json!({"result": 0}));
    assert_eq!(spublish(&gw, &channels[0].0, "last").await, json!(1));
    for (channel, _, events) in &mut streams {
        for round in 0..5 {
            assert_eq!(events.data().await, format!("smessage,{channel},m{round}"));
        }
        assert_eq!(
            events.data().await,
            format!("smessage,{channel},via redis-cli -c")
        );
    }
    for expected in ["m0", "m1", "m2", "m3", "m4", "via redis-cli -c", "last"] {
        assert_eq!(
            second.data().await,
            format!("smessage,{},{expected}", channels[0].0)
        );
    }
    assert_eq!(
        streams[0].2.data().await,
        format!("smessage,{},last", channels[0].0)
    );
    refusals(&gw).await;

    // The slot of channels[0] moves to the next primary: Redis ends its subscription,
    // and so do both streams; the other channel of that node is unaffected.
    let (moved, from) = (channels[0].0.clone(), channels[0].1);
    let to = (from + 1) % 3;
    cluster
        .move_slot(restash::routing::key_slot(moved.as_bytes()), to)
        .await;
    let ended = "event: error\ndata: ERR stream closed: Redis ended the subscription: \
                 the channel's hash slot moved to another node; subscribe again";
    for events in [&mut streams[0].2, &mut second] {
        assert_eq!(
            events.block(Duration::from_secs(5)).await.as_deref(),
            Some(ended)
        );
        assert_eq!(events.block(Duration::from_secs(5)).await, None);
    }
    let neighbour = streams
        .iter_mut()
        .position(|(c, node, _)| *node == from && *c != moved)
        .unwrap();
    let channel = streams[neighbour].0.clone();
    assert_eq!(spublish(&gw, &channel, "still here").await, json!(1));
    assert_eq!(
        streams[neighbour].2.data().await,
        format!("smessage,{channel},still here")
    );
    // Subscribing again lands on the new owner (after a MOVED from the old one).
    let mut again = Events::open(stream(&gw, &format!("/ssubscribe/{moved}"))).await;
    assert_eq!(again.data().await, format!("ssubscribe,{moved},1"));
    assert_eq!(shard_numsub(&cluster.nodes[to], &moved), 1);
    assert_eq!(
        cli_following_redirects(&cluster.nodes[from], &["SPUBLISH", &moved, "moved"]),
        "1"
    );
    assert_eq!(again.data().await, format!("smessage,{moved},moved"));

    // Every stream closed: restash holds as many connections as before on each primary.
    drop((streams, second, again));
    eventually(
        "restash to release its sharded links",
        Duration::from_secs(3),
        || {
            cluster
                .nodes
                .iter()
                .zip(&before)
                .all(|(node, before)| connections(node).len() == *before)
        },
    )
    .await;

    // A primary that fails ends the streams on its link with an error event.
    let (channel, node) = channels
        .iter()
        .find(|(channel, node)| *node != to && *channel != moved)
        .cloned()
        .unwrap();
    let mut doomed = Events::open(stream(&gw, &format!("/ssubscribe/{channel}"))).await;
    doomed.data().await;
    cluster.nodes[node].kill();
    assert_eq!(
        doomed.block(Duration::from_secs(5)).await.as_deref(),
        Some("event: error\ndata: ERR stream closed: the connection to Redis was lost")
    );
}
