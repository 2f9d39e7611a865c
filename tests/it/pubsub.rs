//! Pub/Sub and MONITOR over Server-Sent Events (shared subscriber connections,
//! bounded per-stream buffers, clean-up, shutdown) and blocking commands on
//! dedicated connections (`RESTASH_BLOCKING=true`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{
    free_port, prefix, test_config, Gateway, RedisServer, SentinelSet, READONLY_TOKEN, TOKEN,
};

/// The memory-heavy tests run one at a time so that RSS figures mean something.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Reads Server-Sent Events from a streaming response, one block at a time.
pub(crate) struct Events {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Events {
    /// Sends `request` and checks that it is an event stream.
    pub(crate) async fn open(request: reqwest::RequestBuilder) -> Events {
        let response = request.send().await.expect("stream request");
        assert_eq!(response.status(), 200, "stream refused: {:?}", response);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert_eq!(content_type, "text/event-stream");
        Events {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next event block without its blank line; `None` when the stream ends.
    pub(crate) async fn block(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
                self.buffer.drain(..end + 2);
                return Some(block);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.extend_from_slice(&chunk),
                Ok(Ok(None)) | Ok(Err(_)) => return None,
                Err(_) => panic!("no event within {limit:?}; buffered {:?}", self.buffer),
            }
        }
    }

    /// The next `data:` event (heartbeats skipped).
    pub(crate) async fn data(&mut self) -> String {
        loop {
            let block = self
                .block(Duration::from_secs(5))
                .await
                .expect("stream ended");
            if block.starts_with(':') {
                continue;
            }
            return block
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {block:?}"))
                .to_string();
        }
    }
}
/// A raw HTTP client on `path` (a stream route) that reads until `first_event`
/// has arrived, then stops reading: a slow reader.
pub(crate) async fn stalled_reader(gw: &Gateway, path: &str, first_event: &str) -> TcpStream {
    let address = gw.url.trim_start_matches("http://").to_string();
    let mut socket = TcpStream::connect(&address).await.expect("connect");
    socket
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\n\
                 Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&head).contains(first_event) {
        socket.read_exact(&mut byte).await.expect("first event");
        head.push(byte[0]);
    }
    socket
}

pub(crate) fn stream(gw: &Gateway, path: &str) -> reqwest::RequestBuilder {
    gw.http.get(gw.at(path)).bearer_auth(TOKEN)
}

async fn publish(gw: &Gateway, channel: &str, message: &str) -> Value {
    let (status, body) = gw.command(json!(["PUBLISH", channel, message])).await;
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

/// Lines of `CLIENT LIST` (one per connection, redis-cli's own included).
pub(crate) fn connections(redis: &RedisServer) -> Vec<String> {
    redis
        .cli(&["CLIENT", "LIST"])
        .lines()
        .map(str::to_string)
        .collect()
}

pub(crate) fn named(redis: &RedisServer, name: &str) -> usize {
    connections(redis)
        .iter()
        .filter(|l| l.contains(&format!(" name={name} ")))
        .count()
}

fn numsub(redis: &RedisServer, channel: &str) -> i64 {
    let out = redis.cli(&["PUBSUB", "NUMSUB", channel]);
    out.lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(-1)
}

/// `count` pipelined `verb channel <size bytes of x>` commands, as RESP.
pub(crate) fn publish_batch(verb: &str, channel: &str, count: usize, size: usize) -> Vec<u8> {
    let payload = "x".repeat(size);
    let mut batch = Vec::new();
    for _ in 0..count {
        batch.extend_from_slice(
            format!(
                "*3\r\n${}\r\n{verb}\r\n${}\r\n{channel}\r\n${size}\r\n{payload}\r\n",
                verb.len(),
                channel.len()
            )
            .as_bytes(),
        );
    }
    batch
}

/// Sends `batch` (`count` commands) straight to Redis, not through restash, and
/// waits for every reply.
pub(crate) async fn send_to_redis(port: u16, batch: &[u8], count: usize) {
    let mut publisher = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("redis");
    let (mut reader, mut writer) = publisher.split();
    let drain = async {
        let mut sink = vec![0u8; 64 * 1024];
        let mut replies = 0;
        while replies < count {
            let n = reader.read(&mut sink).await.expect("replies");
            assert!(n > 0, "Redis closed the publisher");
            replies += sink[..n].iter().filter(|b| **b == b'\n').count();
        }
    };
    let (written, ()) = tokio::join!(writer.write_all(batch), drain);
    written.expect("publish");
}

/// What a stalled reader's socket still holds, read to its end (within 10 s).
pub(crate) async fn read_rest(socket: &mut TcpStream) -> String {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut rest))
        .await
        .expect("the stream ends")
        .expect("read");
    String::from_utf8_lossy(&rest).into_owned()
}

/// Waits (bounded) until `check` holds.
pub(crate) async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_psubscribe_speak_upstash_sse() {
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.sse_keepalive = Duration::from_millis(200);
    // Streams outlive the request timeout (it bounds the answer's start, not the stream).
    config.request_timeout = Duration::from_millis(500);
    config.header_timeout = Duration::from_millis(500);
    let gw = Gateway::start_with(config).await;
    let p = prefix();
    let chat = format!("{p}chat");

    // GET without any Accept header.
    let mut events = Events::open(stream(&gw, &format!("/subscribe/{chat}"))).await;
    assert_eq!(events.data().await, format!("subscribe,{chat},1"));
    // From POST /, from a path command, from any Redis client; never base64.
    assert_eq!(
        gw.send(
            gw.http
                .post(gw.at("/"))
                .bearer_auth(TOKEN)
                .header("Upstash-Encoding", "base64")
                .body(json!(["PUBLISH", chat, "hello"]).to_string())
        )
        .await
        .1,
        json!({"result": 1})
    );
    assert_eq!(events.data().await, format!("message,{chat},hello"));
    let (status, _) = gw
        .send(
            gw.http
                .post(gw.at(&format!("/publish/{chat}")))
                .bearer_auth(TOKEN)
                .body("a, b ; c"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(events.data().await, format!("message,{chat},a, b ; c"));
    redis.cli(&["PUBLISH", &chat, "{\"json\":true}"]);
    assert_eq!(
        events.data().await,
        format!("message,{chat},{{\"json\":true}}")
    );
    // A heartbeat comment while idle.
    let block = events
        .block(Duration::from_secs(2))
        .await
        .expect("heartbeat");
    assert_eq!(block, ": keepalive");

    // POST like the SDK (JSON body, SSE Accept header), token in the query string,
    // channel names from the raw path: slashes kept, percent-escapes decoded.
    let odd = format!("{p}room/1 x");
    let mut posted = Events::open(
        gw.http
            .post(gw.at(&format!("/subscribe/{p}room/1%20x?_token={TOKEN}")))
            .header("Accept", "text/event-stream")
            .header("Content-Type", "application/json")
            .body("[]"),
    )
    .await;
    assert_eq!(posted.data().await, format!("subscribe,{odd},1"));
    redis.cli(&["PUBLISH", &odd, "ok"]);
    assert_eq!(posted.data().await, format!("message,{odd},ok"));

    // Overlapping patterns on one shared connection each get their own pmessage.
    let users = format!("{p}user:*");
    let one = format!("{p}user:1*");
    let mut all_users = Events::open(stream(&gw, &format!("/psubscribe/{users}"))).await;
    let mut user_ones = Events::open(stream(&gw, &format!("/psubscribe/{one}"))).await;
    assert_eq!(all_users.data().await, format!("psubscribe,{users},1"));
    assert_eq!(user_ones.data().await, format!("psubscribe,{one},1"));
    publish(&gw, &format!("{p}user:123"), "hi").await;
    publish(&gw, &format!("{p}user:2"), "two").await;
    assert_eq!(
        all_users.data().await,
        format!("pmessage,{users},{p}user:123,hi")
    );
    assert_eq!(
        all_users.data().await,
        format!("pmessage,{users},{p}user:2,two")
    );
    assert_eq!(
        user_ones.data().await,
        format!("pmessage,{one},{p}user:123,hi")
    );

    // Keyspace notifications are ordinary pattern messages.
    redis.cli(&["CONFIG", "SET", "notify-keyspace-events", "KA"]);
    let keyspace = format!("__keyspace@0__:{p}note*");
    let mut notes = Events::open(stream(&gw, &format!("/psubscribe/{keyspace}"))).await;
    assert_eq!(notes.data().await, format!("psubscribe,{keyspace},1"));
    gw.command(json!(["SET", format!("{p}note1"), "x"])).await;
    assert_eq!(
        notes.data().await,
        format!("pmessage,{keyspace},__keyspace@0__:{p}note1,set")
    );

    // Tokens: none is a JSON 401; read-only tokens may listen.
    let (status, body) = gw
        .send(gw.http.get(gw.at(&format!("/subscribe/{chat}"))))
        .await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": "WRONGPASS invalid or missing auth token"})
        )
    );
    let mut read_only = Events::open(
        gw.http
            .get(gw.at(&format!("/subscribe/{chat}")))
            .bearer_auth(READONLY_TOKEN),
    )
    .await;
    assert_eq!(read_only.data().await, format!("subscribe,{chat},1"));
    // Two streams on one channel: one Redis subscription, both receive.
    assert_eq!(numsub(&redis, &chat), 1);
    publish(&gw, &chat, "both").await;
    assert_eq!(events.data().await, format!("message,{chat},both"));
    assert_eq!(read_only.data().await, format!("message,{chat},both"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    publish(&gw, &chat, "later").await;
    assert_eq!(events.data().await, format!("message,{chat},later"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_going_away_releases_redis_at_once() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let channel = format!("{}gone", prefix());
    gw.command(json!(["PING"])).await;
    let before = connections(&redis).len();

    for request in [
        stream(&gw, &format!("/subscribe/{channel}")),
        gw.http
            .post(gw.at(&format!("/subscribe/{channel}")))
            .bearer_auth(TOKEN)
            .body("[]"),
    ] {
        let mut events = Events::open(request).await;
        events.data().await;
        assert_eq!(numsub(&redis, &channel), 1);
        assert_eq!(named(&redis, "restash:pubsub"), 1);
        drop(events);
        let started = Instant::now();
        eventually("the subscription to go", Duration::from_secs(2), || {
            numsub(&redis, &channel) == 0 && connections(&redis).len() == before
        })
        .await;
        eprintln!(
            "stream closed by the client: Redis released in {:?}",
            started.elapsed()
        );
    }

    // A subscriber connection killed under live streams is reopened and re-subscribed.
    let mut events = Events::open(stream(&gw, &format!("/subscribe/{channel}"))).await;
    events.data().await;
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    eventually("the re-subscription", Duration::from_secs(3), || {
        numsub(&redis, &channel) == 1
    })
    .await;
    publish(&gw, &channel, "after").await;
    assert_eq!(events.data().await, format!("message,{channel},after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_answer_503_when_redis_is_down() {
    let mut config = test_config(&format!("redis://127.0.0.1:{}", free_port()));
    config.connect_timeout = Duration::from_millis(300);
    let gw = Gateway::start_with(config).await;
    for path in [
        "/subscribe/x",
        "/psubscribe/x*",
        "/ssubscribe/x",
        "/monitor",
    ] {
        let started = Instant::now();
        let (status, body) = gw.send(stream(&gw, path)).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("ERR Redis is unavailable"),
            "{body}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{path}");
    }
}

/// Streams reach the primary that Sentinels name, and authenticate to Sentinels
/// that require a password (`sentinelPassword`): before, the links asked them
/// without it and every stream got 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_follow_sentinel_to_the_primary() {
    let set = tokio::task::block_in_place(|| SentinelSet::start_protected(Some("sentinel-secret")));
    let gw = Gateway::start_with(test_config(&set.url())).await;
    // Commands (fred's pools) reach the primary too.
    assert_eq!(
        gw.command(json!(["SET", format!("{}sentinel-key", prefix()), "v"]))
            .await,
        (200, json!({"result": "OK"}))
    );
    let channel = format!("{}sentinel", prefix());
    let mut events = Events::open(stream(&gw, &format!("/subscribe/{channel}"))).await;
    assert_eq!(events.data().await, format!("subscribe,{channel},1"));
    set.servers[0].cli(&["PUBLISH", &channel, "from the primary"]);
    assert_eq!(
        events.data().await,
        format!("message,{channel},from the primary")
    );
    // Sharded Pub/Sub follows Sentinel too (the same links).
    let mut sharded = Events::open(stream(&gw, &format!("/ssubscribe/{channel}"))).await;
    assert_eq!(sharded.data().await, format!("ssubscribe,{channel},1"));
    set.servers[0].cli(&["SPUBLISH", &channel, "sharded"]);
    assert_eq!(sharded.data().await, format!("smessage,{channel},sharded"));
    // And MONITOR.
    let mut monitor = Events::open(stream(&gw, "/monitor")).await;
    assert_eq!(monitor.data().await, "\"OK\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_streams_commands_within_a_limit() {
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.monitor_max_streams = 1;
    let gw = Gateway::start_with(config).await;
    let key = format!("{}mon", prefix());
    gw.command(json!(["PING"])).await;
    let before = connections(&redis).len();

    let mut monitor = Events::open(stream(&gw, "/monitor")).await;
    assert_eq!(monitor.data().await, "\"OK\"");
    gw.command(json!(["SET", key, "v\"1"])).await;
    let line = loop {
        let data = monitor.data().await;
        if data.contains(&key) {
            break data;
        }
    };
    let text: String = serde_json::from_str(&line).expect("a JSON string");
    assert!(
        text.contains(&format!("\"SET\" \"{key}\" \"v\\\"1\"")),
        "{text}"
    );

    // Beyond the limit: a JSON 503; read-only tokens: 403.
    let (status, body) = gw
        .send(gw.http.post(gw.at("/monitor")).bearer_auth(TOKEN))
        .await;
    assert_eq!(status, 503);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .starts_with("ERR too many MONITOR streams"));
    let (status, _) = gw
        .send(gw.http.get(gw.at("/monitor")).bearer_auth(READONLY_TOKEN))
        .await;
    assert_eq!(status, 403);

    // Closing the stream closes its connection and frees its place.
    assert_eq!(named(&redis, "restash:monitor"), 1);
    drop(monitor);
    eventually(
        "the monitor connection to close",
        Duration::from_secs(2),
        || connections(&redis).len() == before,
    )
    .await;
    let mut again = Events::open(stream(&gw, "/monitor")).await;
    assert_eq!(again.data().await, "\"OK\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_streams_share_a_few_connections() {
    let _heavy = HEAVY.lock().await;
    const STREAMS: usize = 2000;
    const CHANNELS: usize = 10;
    const MESSAGES: usize = 5;
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis).await;
    let p = prefix();
    let channel = |i: usize| format!("{p}ch{i}");
    publish(&gw, &channel(0), "warm-up").await;
    let before = connections(&redis).len();

    let started = Instant::now();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let opening: Vec<_> = (0..STREAMS)
        .map(|i| {
            let request = client
                .get(gw.at(&format!("/subscribe/{}", channel(i % CHANNELS))))
                .bearer_auth(TOKEN);
            let expected = format!("subscribe,{},1", channel(i % CHANNELS));
            tokio::spawn(async move {
                let mut events = Events::open(request).await;
                assert_eq!(events.data().await, expected);
                events
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(STREAMS);
    for task in opening {
        streams.push(task.await.expect("stream task"));
    }
    let opened = started.elapsed();
    let during = connections(&redis).len();
    let subscribers = named(&redis, "restash:pubsub");
    for i in 0..CHANNELS {
        assert_eq!(
            numsub(&redis, &channel(i)),
            1,
            "one Redis subscription per channel"
        );
    }

    let started = Instant::now();
    for m in 0..MESSAGES {
        for i in 0..CHANNELS {
            // One Redis subscriber per channel, whatever the number of streams.
            assert_eq!(publish(&gw, &channel(i), &format!("m{m}")).await, json!(1));
        }
    }
    let reading: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut events)| {
            let ch = channel(i % CHANNELS);
            tokio::spawn(async move {
                for m in 0..MESSAGES {
                    assert_eq!(events.data().await, format!("message,{ch},m{m}"));
                }
                events
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(STREAMS);
    for task in reading {
        streams.push(task.await.expect("reader task"));
    }
    let delivered = started.elapsed();

    let started = Instant::now();
    drop(streams);
    // Released means: no subscription left in Redis and no connection beyond those
    // held before the streams opened (the unsubscribe and the close may land apart).
    eventually(
        "every subscription and connection to go",
        Duration::from_secs(10),
        || {
            (0..CHANNELS).all(|i| numsub(&redis, &channel(i)) == 0)
                && connections(&redis).len() == before
        },
    )
    .await;
    let released = started.elapsed();
    assert!(
        subscribers <= 2 && during <= before + 2,
        "{subscribers} subscriber connections, {during} vs {before}"
    );
    eprintln!(
        "{STREAMS} streams on {CHANNELS} channels: opened in {opened:?}, \
         {} messages delivered in {delivered:?}, released in {released:?}; \
         Redis connections before {before}, during {during} ({subscribers} subscriber), after {}",
        STREAMS * MESSAGES,
        connections(&redis).len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_cut_off_with_bounded_memory() {
    let _heavy = HEAVY.lock().await;
    const BUFFER: usize = 16;
    const MESSAGES: usize = 2000;
    const SIZE: usize = 32 * 1024;
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.sse_buffer = BUFFER;
    let gw = Gateway::start_with(config).await;
    let channel = format!("{}slow", prefix());
    // A raw client that reads the first event, then stops reading.
    let mut socket = stalled_reader(
        &gw,
        &format!("/subscribe/{channel}"),
        &format!("subscribe,{channel},1"),
    )
    .await;

    // 64 MB straight into Redis, pipelined (built before measuring memory).
    let batch = publish_batch("PUBLISH", &channel, MESSAGES, SIZE);
    let rss_before = rss_bytes();
    send_to_redis(redis.port, &batch, MESSAGES).await;

    // restash cut the reader off on its own: nothing subscribes any more.
    eventually(
        "the slow reader to be cut off",
        Duration::from_secs(5),
        || numsub(&redis, &channel) == 0,
    )
    .await;
    let growth = rss_bytes().saturating_sub(rss_before);
    let published = (MESSAGES * SIZE) as u64;
    eprintln!(
        "slow reader: {} MB published, RSS grew {} MB",
        published >> 20,
        growth >> 20
    );
    assert!(growth < published / 4, "RSS grew {growth} bytes");

    // Reading again: what was already in flight, then the error event, then the end.
    let text = read_rest(&mut socket).await;
    let received = text.matches(&format!("data: message,{channel},")).count();
    assert!(received < MESSAGES / 2, "received {received} of {MESSAGES}");
    assert!(
        text.contains("event: error\ndata: ERR stream closed: the client read too slowly"),
        "no error event at the end: {:?}",
        &text[text.len().saturating_sub(300)..]
    );
    eprintln!("slow reader: received {received} of {MESSAGES} messages before the error event");
}

/// `quantile` (0..1) of `samples`.
fn percentile(samples: &mut [Duration], quantile: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * quantile).round() as usize;
    samples[index]
}

/// 16 workers × 50 sequential GETs; the latency of each.
async fn get_latencies(gw: &Gateway, key: &str) -> Vec<Duration> {
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let client = gw.http.clone();
            let url = gw.at(&format!("/get/{key}"));
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(50);
                for _ in 0..50 {
                    let started = Instant::now();
                    let response = client
                        .get(&url)
                        .bearer_auth(TOKEN)
                        .send()
                        .await
                        .expect("get");
                    assert_eq!(response.status(), 200);
                    response.bytes().await.expect("body");
                    samples.push(started.elapsed());
                }
                samples
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.expect("worker"));
    }
    all
}

/// p50 and p99 of [`get_latencies`], the better of two rounds (scheduling noise on
/// a small machine only ever adds latency).
async fn latency_profile(gw: &Gateway, key: &str) -> (Duration, Duration) {
    let mut best = (Duration::MAX, Duration::MAX);
    for _ in 0..2 {
        let mut samples = get_latencies(gw, key).await;
        best.0 = best.0.min(percentile(&mut samples, 0.5));
        best.1 = best.1.min(percentile(&mut samples, 0.99));
    }
    best
}

fn blocked_clients(redis: &RedisServer) -> usize {
    redis
        .cli(&["INFO", "clients"])
        .lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_commands_block_without_slowing_anyone() {
    let _heavy = HEAVY.lock().await;
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.blocking = true;
    config.blocking_max = Duration::from_secs(10);
    let gw = Gateway::start_with(config).await;
    let p = prefix();
    gw.command(json!(["SET", format!("{p}k"), "v"])).await;
    get_latencies(&gw, &format!("{p}k")).await; // warm-up
    let (p50_without, p99_without) = latency_profile(&gw, &format!("{p}k")).await;

    // 50 callers blocked in BLMOVE with timeout 0 (clamped to RESTASH_BLOCKING_MAX_MS).
    let callers: Vec<_> = (0..50)
        .map(|i| {
            let request = gw.http.post(gw.at("/")).bearer_auth(TOKEN).body(
                json!([
                    "BLMOVE",
                    format!("{p}src{i}"),
                    format!("{p}dst{i}"),
                    "LEFT",
                    "RIGHT",
                    0
                ])
                .to_string(),
            );
            tokio::spawn(async move {
                let response = request.send().await.expect("blmove");
                let arrived = Instant::now();
                let body: Value = response.json().await.expect("json");
                (arrived, body)
            })
        })
        .collect();
    eventually("50 blocked callers", Duration::from_secs(5), || {
        blocked_clients(&redis) == 50
    })
    .await;
    let (p50_with, p99_with) = latency_profile(&gw, &format!("{p}k")).await;
    eprintln!(
        "800 GETs (16 concurrent), best of 2 rounds: p50 {p50_without:?} / p99 {p99_without:?} \
         alone, p50 {p50_with:?} / p99 {p99_with:?} with 50 callers blocked in BLMOVE"
    );
    // On a shared connection they would wait for the BLMOVE timeout (10 s).
    assert!(
        p99_with < p99_without * 2 + Duration::from_millis(50),
        "blocked callers slowed GETs: p99 {p99_with:?} vs {p99_without:?}"
    );
    assert_eq!(blocked_clients(&redis), 50);

    // Each blocked caller returns as soon as its item arrives.
    let mut pushed = Vec::new();
    for i in 0..50 {
        pushed.push(Instant::now());
        let (status, _) = gw
            .command(json!(["RPUSH", format!("{p}src{i}"), format!("item{i}")]))
            .await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut waits = Vec::new();
    for (i, caller) in callers.into_iter().enumerate() {
        let (arrived, body) = caller.await.expect("caller");
        assert_eq!(body, json!({"result": format!("item{i}")}));
        waits.push(arrived.saturating_duration_since(pushed[i]));
    }
    let slowest = *waits.iter().max().unwrap();
    eprintln!("blocked callers answered {slowest:?} at most after their item was pushed");
    assert!(slowest < Duration::from_millis(500), "{waits:?}");
    assert_eq!(blocked_clients(&redis), 0);

    // Pipelines never block a shared connection: BLPOP still answers at once there.
    let started = Instant::now();
    let (status, body) = gw
        .post(
            "/pipeline",
            json!([["BLPOP", format!("{p}none"), 0]]).to_string(),
        )
        .await;
    assert_eq!((status, body), (200, json!([{"result": null}])));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_limits_clamp_busy_and_abandoned_callers() {
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.blocking = true;
    config.blocking_max = Duration::from_millis(1000);
    config.blocking_connections = 2;
    let gw = Gateway::start_with(config).await;
    let p = prefix();

    // Timeout 0 means the maximum; a longer one is clamped to it.
    for timeout in ["0", "100"] {
        let started = Instant::now();
        let (status, body) = gw
            .command(json!(["BLPOP", format!("{p}empty"), timeout]))
            .await;
        let took = started.elapsed();
        assert_eq!((status, body), (200, json!({"result": null})));
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
            "BLPOP {timeout} took {took:?}"
        );
    }
    let started = Instant::now();
    gw.command(json!([
        "XREAD",
        "BLOCK",
        0,
        "STREAMS",
        format!("{p}stream"),
        "$"
    ]))
    .await;
    assert!(started.elapsed() >= Duration::from_millis(900));

    // Every dedicated connection busy: a prompt JSON 503.
    let blockers: Vec<_> = (0..2)
        .map(|i| {
            let request = gw
                .http
                .post(gw.at("/"))
                .bearer_auth(TOKEN)
                .body(json!(["BLPOP", format!("{p}busy{i}"), 0]).to_string());
            tokio::spawn(async move { request.send().await.expect("blpop").status() })
        })
        .collect();
    eventually("2 blocked callers", Duration::from_secs(2), || {
        blocked_clients(&redis) == 2
    })
    .await;
    let started = Instant::now();
    let (status, body) = gw.command(json!(["BLPOP", format!("{p}busy9"), 0])).await;
    assert_eq!(status, 503);
    assert!(body["error"].as_str().unwrap().contains("busy"), "{body}");
    assert!(started.elapsed() < Duration::from_millis(500));
    // Other requests are unaffected.
    assert_eq!(gw.command(json!(["PING"])).await.0, 200);
    for blocker in blockers {
        assert_eq!(blocker.await.expect("blocker"), 200);
    }

    // A caller that goes away is unblocked at once: no item is popped for nobody.
    let abandoned = gw
        .http
        .post(gw.at("/"))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_millis(200))
        .body(json!(["BLPOP", format!("{p}gone"), 0]).to_string())
        .send()
        .await;
    assert!(abandoned.is_err(), "the client should have timed out");
    eventually(
        "the abandoned caller to be unblocked",
        Duration::from_millis(600),
        || blocked_clients(&redis) == 0,
    )
    .await;
    gw.command(json!(["RPUSH", format!("{p}gone"), "kept"]))
        .await;
    assert_eq!(
        gw.command(json!(["LLEN", format!("{p}gone")])).await.1,
        json!({"result": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_stream() {
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.blocking = true;
    config.blocking_max = Duration::from_secs(30);
    config.shutdown_timeout = Duration::from_secs(20);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        restash::serve(listener, config, TOKEN.to_string(), shutdown).await
    });
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !matches!(
        http.get(format!("{url}/readyz"))
            .send()
            .await
            .map(|r| r.status()),
        Ok(reqwest::StatusCode::OK)
    ) {
        assert!(Instant::now() < deadline, "gateway not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channel = format!("{}bye", prefix());
    let mut subscriber = Events::open(
        http.get(format!("{url}/subscribe/{channel}"))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(subscriber.data().await, format!("subscribe,{channel},1"));
    let mut monitor = Events::open(http.get(format!("{url}/monitor")).bearer_auth(TOKEN)).await;
    assert_eq!(monitor.data().await, "\"OK\"");
    let mut sharded = Events::open(
        http.get(format!("{url}/ssubscribe/{channel}"))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(sharded.data().await, format!("ssubscribe,{channel},1"));
    let blocked = {
        let request = http
            .post(format!("{url}/"))
            .bearer_auth(TOKEN)
            .body(json!(["BLPOP", format!("{channel}:list"), 0]).to_string());
        tokio::spawn(async move { request.send().await.expect("blpop").text().await })
    };
    eventually("the blocked caller", Duration::from_secs(2), || {
        blocked_clients(&redis) == 1
    })
    .await;

    let started = Instant::now();
    stop.send(()).expect("stop");
    for events in [&mut subscriber, &mut monitor, &mut sharded] {
        let last = loop {
            let block = events
                .block(Duration::from_secs(5))
                .await
                .expect("a final event");
            if block.starts_with("event: error") {
                break block;
            }
        };
        assert_eq!(
            last,
            "event: error\ndata: ERR stream closed: restash is shutting down"
        );
        assert_eq!(events.block(Duration::from_secs(5)).await, None);
    }
    assert_eq!(
        blocked.await.expect("caller").expect("body"),
        r#"{"result":null}"#
    );
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returned")
        .expect("task")
        .expect("serve");
    eprintln!("shutdown with open streams took {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A subscriber connection to a Redis that stops answering while its TCP connection
/// stays up is found by a PING after `RESTASH_SSE_KEEPALIVE_MS` of silence and
/// replaced once Redis answers again; the stream goes on. Before, restash stayed on
/// the hung connection for as long as TCP did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_subscriber_connection_is_replaced() {
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.sse_keepalive = Duration::from_millis(200);
    config.command_timeout = Duration::from_millis(300);
    let gw = Gateway::start_with(config).await;
    let channel = format!("{}hung", prefix());
    let mut events = Events::open(stream(&gw, &format!("/subscribe/{channel}"))).await;
    assert_eq!(events.data().await, format!("subscribe,{channel},1"));
    let subscriber = || {
        connections(&redis)
            .iter()
            .find(|l| l.contains(" name=restash:pubsub "))
            .and_then(|l| l.split(' ').next().map(str::to_string))
    };
    let before = subscriber().expect("a subscriber connection");
    // Redis runs no command of any client for a second; connections stay open.
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "1000", "ALL"]), "OK");
    eventually(
        "a new subscriber connection",
        Duration::from_secs(5),
        || subscriber().is_some_and(|now| now != before),
    )
    .await;
    assert_eq!(named(&redis, "restash:pubsub"), 1);
    // Subscribed again: messages flow on the same stream.
    eventually(
        "the channel to be subscribed again",
        Duration::from_secs(2),
        || numsub(&redis, &channel) == 1,
    )
    .await;
    redis.cli(&["PUBLISH", &channel, "after"]);
    assert_eq!(events.data().await, format!("message,{channel},after"));
}

/// A slow reader is also cut off by the bytes it holds (`RESTASH_SSE_BUFFER_BYTES`),
/// not only by the number of events: large messages could otherwise pile up to
/// `RESTASH_SSE_BUFFER` times their size per stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_cut_off_by_the_bytes_it_holds() {
    let _heavy = HEAVY.lock().await;
    const MESSAGES: usize = 400;
    const SIZE: usize = 64 * 1024;
    let redis = RedisServer::start();
    let mut config = test_config(&redis.url());
    config.sse_buffer = 100_000;
    config.sse_buffer_bytes = 256 * 1024;
    let gw = Gateway::start_with(config).await;
    let channel = format!("{}big", prefix());
    let mut socket = stalled_reader(
        &gw,
        &format!("/subscribe/{channel}"),
        &format!("subscribe,{channel},1"),
    )
    .await;
    // 25 MB, more than the sockets between restash and the reader can hold.
    let batch = publish_batch("PUBLISH", &channel, MESSAGES, SIZE);
    send_to_redis(redis.port, &batch, MESSAGES).await;
    eventually(
        "the slow reader to be cut off by bytes",
        Duration::from_secs(5),
        || numsub(&redis, &channel) == 0,
    )
    .await;
    // Reading again: what was in flight, then the error event.
    let text = read_rest(&mut socket).await;
    assert!(
        text.contains("event: error\ndata: ERR stream closed: the client read too slowly"),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
}
