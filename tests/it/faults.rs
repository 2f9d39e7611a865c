//! Faults restash must survive: Redis killed and restarted under load, overload,
//! slow clients, 5,000 idle connections, exactly-once INCRs across a restart, and
//! SIGTERM under load. (A stalled Redis answering 504 is in `protocol.rs`.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{
    free_port, prefix, test_config, Gateway, OutputWithin, RedisServer, CLI_LIMIT, TOKEN,
};

/// A `redis-server` on a fixed port that a test can kill and start again.
struct RestartableRedis {
    port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RestartableRedis {
    fn start(extra: &[&str]) -> RestartableRedis {
        let mut redis = RestartableRedis {
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        redis.spawn();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and waits until it answers PING.
    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/test");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.cli(&["PING"]) == "PONG" {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// SIGKILL: no shutdown, no goodbye to clients.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output_within(CLI_LIMIT);
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

impl Drop for RestartableRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One answered (or failed) request of a load generator.
#[derive(Debug, Clone)]
struct Outcome {
    started: Instant,
    finished: Instant,
    /// HTTP status, or 0 when the request failed at the transport level.
    status: u16,
    body: Value,
}

/// Sends `body` to `POST /`, checking that every answer is JSON.
async fn timed_command(http: &reqwest::Client, url: &str, body: String) -> Outcome {
    let started = Instant::now();
    let sent = http
        .post(url)
        .bearer_auth(TOKEN)
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    let (status, body) = match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            let body: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("status {status}: not JSON: {text:?}"));
            (status, body)
        }
        Err(_) => (0, Value::Null),
    };
    Outcome {
        started,
        finished: Instant::now(),
        status,
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load() {
    let mut redis = RestartableRedis::start(&["--appendonly", "no"]);
    let mut config = test_config(&redis.url());
    // Recovery is bounded by the reconnect delay cap (default 1 s, plus fred's
    // jitter): half of it keeps "within 1 s" true with margin on a loaded machine.
    config.reconnect_max_delay = Duration::from_millis(500);
    let command_timeout = config.command_timeout;
    let gw = Gateway::start_with(config).await;
    let key = format!("{}load", prefix());

    // Open-loop load: a new request every 5 ms, whatever the earlier ones are doing.
    let stop = Arc::new(AtomicBool::new(false));
    let generator = tokio::spawn({
        let stop = stop.clone();
        let url = gw.url.clone();
        let http = gw.http.clone();
        let body = json!(["INCR", key]).to_string();
        async move {
            let mut tasks = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (http, url, body) = (http.clone(), url.clone(), body.clone());
                tasks.push(tokio::spawn(async move {
                    timed_command(&http, &url, body).await
                }));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut outcomes = Vec::new();
            for task in tasks {
                outcomes.push(task.await.unwrap());
            }
            outcomes
        }
    });

    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    tokio::task::block_in_place(|| redis.kill());
    tokio::time::sleep(Duration::from_secs(5)).await;
    tokio::task::block_in_place(|| redis.spawn());
    let back = Instant::now();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = generator.await.unwrap();
    outcomes.sort_by_key(|o| o.started);

    let before: Vec<_> = outcomes.iter().filter(|o| o.finished < killed).collect();
    assert!(before.len() > 20, "too little load before the kill");
    assert!(
        before.iter().all(|o| o.status == 200),
        "failures before the kill"
    );

    // Requests sent while the client is still noticing the crash (its first
    // reconnection attempt) wait for the command timeout and get 504; none waits longer.
    // (About 80 ms on an idle machine; 1 s leaves room for a loaded one.)
    let noticing = killed + Duration::from_millis(1000);
    let slowest = outcomes
        .iter()
        .map(|o| o.finished - o.started)
        .max()
        .unwrap();
    let timed_out: Vec<_> = outcomes.iter().filter(|o| o.status == 504).collect();
    assert!(
        slowest < command_timeout + Duration::from_millis(250),
        "a request waited {slowest:?} (command timeout {command_timeout:?})"
    );
    assert!(
        timed_out.iter().all(|o| o.started < noticing),
        "504s long after the crash: {timed_out:?}"
    );
    // During the gap: JSON 503s, promptly.
    let gap: Vec<_> = outcomes
        .iter()
        .filter(|o| o.started > noticing && o.finished < back)
        .collect();
    assert!(
        gap.len() > 40,
        "too few requests during the gap: {}",
        gap.len()
    );
    let slowest_gap = gap.iter().map(|o| o.finished - o.started).max().unwrap();
    for o in &gap {
        assert_eq!(o.status, 503, "during the gap: {o:?}");
        assert!(o.body["error"].is_string(), "{o:?}");
    }
    assert!(
        slowest_gap < Duration::from_millis(500),
        "a request waited {slowest_gap:?} while Redis was down"
    );
    assert!(
        outcomes.iter().all(|o| matches!(o.status, 200 | 503 | 504)),
        "unexpected statuses: {:?}",
        outcomes
            .iter()
            .filter(|o| !matches!(o.status, 200 | 503 | 504))
            .collect::<Vec<_>>()
    );

    // Within 1 s of Redis answering again, every request succeeds.
    let last_failure = outcomes
        .iter()
        .filter(|o| o.status != 200)
        .map(|o| o.started)
        .max()
        .unwrap();
    let first_ok = outcomes
        .iter()
        .find(|o| o.started >= back && o.status == 200)
        .expect("no success after Redis came back");
    let first_success = first_ok.finished.saturating_duration_since(back);
    let recovery = last_failure.saturating_duration_since(back);
    eprintln!(
        "redis restart: {} requests right after the kill answered 504 after {slowest:?}; \
         {} requests during the rest of the 5 s gap answered 503, slowest {slowest_gap:?}; \
         after Redis answered PING again: first success after {first_success:?}, \
         last failure sent after {recovery:?}",
        timed_out.len(),
        gap.len()
    );
    assert!(
        recovery < Duration::from_secs(1),
        "recovery took {recovery:?}"
    );
    let after = outcomes.iter().filter(|o| o.started > last_failure).count();
    assert!(after > 100, "only {after} requests after recovery");
    let (status, _) = gw.send(gw.http.get(gw.at("/readyz"))).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_is_exactly_once_across_a_redis_restart() {
    const TOTAL: usize = 20_000;
    const CONNECTIONS: usize = 32;
    let dir = std::env::temp_dir().join(format!("restash-aof-{}", prefix().trim_end_matches(':')));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_text = dir.to_string_lossy().to_string();
    // Every acknowledged write is on disk before Redis answers it.
    let mut redis = RestartableRedis::start(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        &dir_text,
    ]);
    let gw = Gateway::start_with(test_config(&redis.url())).await;
    let key = format!("{}counter", prefix());

    let issued = Arc::new(AtomicUsize::new(0));
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let issued = issued.clone();
        let url = gw.url.clone();
        let body = json!(["INCR", key]).to_string();
        workers.push(tokio::spawn(async move {
            // One client per worker: many distinct connections.
            let http = reqwest::Client::new();
            let mut outcomes = Vec::new();
            while issued.fetch_add(1, Ordering::Relaxed) < TOTAL {
                let outcome = timed_command(&http, &url, body.clone()).await;
                if outcome.status != 200 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                outcomes.push(outcome);
            }
            outcomes
        }));
    }
    while issued.load(Ordering::Relaxed) < TOTAL / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    *killed_at.lock().unwrap() = Some(Instant::now());
    tokio::task::block_in_place(|| redis.kill());
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| redis.spawn());

    let mut outcomes = Vec::new();
    for worker in workers {
        outcomes.extend(worker.await.unwrap());
    }
    let killed = killed_at.lock().unwrap().unwrap();
    assert_eq!(outcomes.len(), TOTAL);
    let successes: Vec<i64> = outcomes
        .iter()
        .filter(|o| o.status == 200)
        .map(|o| o.body["result"].as_i64().expect("INCR result"))
        .collect();
    // Failed answers that might have run: in flight when Redis died.
    let in_doubt = outcomes
        .iter()
        .filter(|o| o.status != 200 && o.started <= killed && o.finished >= killed)
        .count();
    let failed = TOTAL - successes.len();
    let counter: i64 = redis.cli(&["GET", &key]).parse().expect("counter");
    let mut distinct = successes.clone();
    distinct.sort_unstable();
    distinct.dedup();
    eprintln!(
        "exactly once: {TOTAL} INCRs, {} acknowledged, {failed} failed ({in_doubt} in flight at \
         the kill), counter {counter}",
        successes.len()
    );
    assert!(failed > 0, "the restart did not interrupt anything");
    // No acknowledged INCR lost: every acknowledged value is distinct and counted.
    assert_eq!(
        distinct.len(),
        successes.len(),
        "an acknowledged INCR was lost"
    );
    assert!(counter >= successes.len() as i64, "acknowledged INCRs lost");
    // Nothing replayed: only commands in flight at the kill may have run unacknowledged.
    assert!(
        counter <= (successes.len() + in_doubt) as i64,
        "counter {counter} > {} acknowledged + {in_doubt} in doubt: a command ran twice",
        successes.len()
    );
    drop(redis);
    let _ = std::fs::remove_dir_all(dir);
}

fn config_with(
    redis: &RedisServer,
    adjust: impl FnOnce(&mut restash::config::Config),
) -> restash::config::Config {
    let mut config = test_config(&redis.url());
    adjust(&mut config);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_sheds_with_fast_json_503s() {
    let redis = RedisServer::start();
    let gw = Gateway::start_with(config_with(&redis, |c| c.max_concurrency = 8)).await;
    let key = format!("{}slow", prefix());
    redis.cli(&["CLIENT", "PAUSE", "1500", "ALL"]);

    // Eight requests hold every permit while Redis is paused.
    let mut held = Vec::new();
    for _ in 0..8 {
        let http = gw.http.clone();
        let url = gw.url.clone();
        let body = json!(["SET", key, "v"]).to_string();
        held.push(tokio::spawn(async move {
            timed_command(&http, &url, body).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut extra = Vec::new();
    for _ in 0..50 {
        let http = gw.http.clone();
        let url = gw.url.clone();
        extra.push(tokio::spawn(async move {
            timed_command(&http, &url, json!(["PING"]).to_string()).await
        }));
    }
    let mut slowest = Duration::ZERO;
    for task in extra {
        let o = task.await.unwrap();
        assert_eq!(o.status, 503, "{o:?}");
        assert_eq!(
            o.body["error"],
            "ERR server busy: too many requests in flight, retry later"
        );
        slowest = slowest.max(o.finished - o.started);
    }
    eprintln!("overload: 50 shed requests, slowest answer {slowest:?}");
    assert!(
        slowest < Duration::from_millis(300),
        "shedding took {slowest:?}"
    );
    // The liveness probe is never shed. Nor is the readiness probe: shedding it would
    // take a busy pod out of its Service and move its load onto the others. (It waits
    // for Redis' pause like any command, then answers.)
    let (status, _) = gw.send(gw.http.get(gw.at("/healthz"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        gw.send(gw.http.get(gw.at("/readyz"))).await,
        (200, json!({"status": "ready"}))
    );

    for task in held {
        let o = task.await.unwrap();
        assert_eq!(o.status, 200, "{o:?}");
    }
    assert_eq!(
        gw.command(json!(["GET", key])).await,
        (200, json!({"result": "v"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_cut_off_with_http2_on_too() {
    let redis = RedisServer::start();
    let gw = Gateway::start_with(config_with(&redis, |c| {
        c.header_timeout = Duration::from_millis(500);
        c.http2 = true;
    }))
    .await;
    let address = gw.url.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "a connection that sent nothing was never closed"
    );
    let cut = started.elapsed();
    assert!(
        cut >= Duration::from_millis(400) && cut < Duration::from_millis(1500),
        "cut off after {cut:?}"
    );
    // A client that speaks still gets its answer.
    assert_eq!(
        gw.command(json!(["PING"])).await,
        (200, json!({"result": "PONG"}))
    );
}

/// The vendored hyper keeps one header timer per connection and resets it for each
/// head (vendor/README.md, change 4): after a request that outlasts the header
/// timeout, the same connection still answers the next request, and then, idle, is
/// still closed after the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_timer_rearms_on_a_keep_alive_connection() {
    let redis = RedisServer::start();
    let gw = Gateway::start_with(config_with(&redis, |c| {
        c.header_timeout = Duration::from_millis(500);
    }))
    .await;
    let address = gw.url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    // A script that keeps Redis busy for 800 ms.
    let slow = json!([
        "EVAL",
        "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] \
         repeat local n = redis.call('TIME') until n[1] * 1000000 + n[2] - s > 800000 return 1",
        "0"
    ])
    .to_string();
    let started = Instant::now();
    let first = exchange_raw(&mut stream, &slow).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.ends_with(r#"{"result":1}"#), "{first}");
    assert!(started.elapsed() >= Duration::from_millis(800));
    let second = exchange_raw(&mut stream, r#"["PING"]"#).await;
    assert!(second.ends_with(r#"{"result":"PONG"}"#), "{second}");
    // Two requests in one write (the second arrives while the first is answered).
    let echo = |word: &str| post_request(&json!(["ECHO", word]).to_string());
    let both = echo("first") + &echo("second");
    stream.write_all(both.as_bytes()).await.unwrap();
    let mut answers = String::new();
    while answers.matches("HTTP/1.1 200").count() < 2 || !answers.ends_with(r#""second"}"#) {
        let mut buffer = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("both answers within 5 s")
            .unwrap();
        assert!(n > 0, "closed early: {answers}");
        answers.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    let first_at = answers
        .find(r#"{"result":"first"}"#)
        .expect("the first answer");
    assert!(first_at < answers.find(r#"{"result":"second"}"#).unwrap());
    let idle = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "an idle connection was never closed");
    let closed = idle.elapsed();
    assert!(
        closed >= Duration::from_millis(400) && closed < Duration::from_millis(1500),
        "closed after {closed:?} idle"
    );
}

/// The bytes of a keep-alive `POST /` with `body` and the test token.
fn post_request(body: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends `POST /` with `body` on `stream` and reads one whole answer (head and
/// `content-length` body) as text.
async fn exchange_raw(stream: &mut tokio::net::TcpStream, body: &str) -> String {
    stream
        .write_all(post_request(body).as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&answer).to_string();
        let Some((head, rest)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())
                    .flatten()
            })
            .expect("a content-length");
        if rest.len() >= length {
            return text;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let redis = RedisServer::start();
    let gw = Gateway::start_with(config_with(&redis, |c| {
        c.header_timeout = Duration::from_millis(500);
        c.request_timeout = Duration::from_millis(800);
    }))
    .await;
    let address = gw.url.trim_start_matches("http://").to_string();

    // Headers byte by byte: the connection is closed after the header timeout.
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!("POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 8\r\n\r\n[\"PING\"]");
    let (mut reader, mut writer) = stream.split();
    let trickle = async {
        for byte in request.as_bytes() {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::future::pending::<()>().await;
    };
    let mut answer = Vec::new();
    let closed = tokio::select! {
        _ = trickle => unreachable!(),
        read = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut answer)) => read.is_ok(),
    };
    let header_cut = started.elapsed();
    eprintln!("slow headers: closed after {header_cut:?}");
    assert!(closed, "slow header sender was never cut off");
    assert!(
        header_cut >= Duration::from_millis(400) && header_cut < Duration::from_millis(1500),
        "cut off after {header_cut:?}"
    );
    drop(stream);

    // Body byte by byte: 408 with a JSON error after the request timeout.
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n["
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.split();
    let trickle = async {
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::future::pending::<()>().await;
    };
    let mut answer = Vec::new();
    tokio::select! {
        _ = trickle => unreachable!(),
        read = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut answer)) => {
            assert!(read.is_ok(), "slow body sender was never cut off");
        }
    };
    let body_cut = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    eprintln!("slow body: answered after {body_cut:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains(r#"{"error":"ERR request timeout"}"#),
        "{answer}"
    );
    assert!(
        body_cut >= Duration::from_millis(700) && body_cut < Duration::from_millis(2000),
        "cut off after {body_cut:?}"
    );

    // Well-behaved clients are unaffected.
    assert_eq!(
        gw.command(json!(["PING"])).await,
        (200, json!({"result": "PONG"}))
    );
}

/// The `restash` binary as a child process, for RSS and signal tests.
struct Binary {
    child: Child,
    url: String,
}

impl Binary {
    fn start(redis_url: &str, extra_env: &[(&str, &str)]) -> Binary {
        let mut command = Command::new(env!("CARGO_BIN_EXE_restash"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("REDIS_URL", redis_url)
            .env("RESTASH_LISTEN", "127.0.0.1:0")
            .env("RESTASH_TOKEN", TOKEN)
            .env("RESTASH_LOG", "error")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start restash");
        let stdout = child.stdout.take().expect("stdout");
        let mut url = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(u) = line.trim().strip_prefix("URL:") {
                url = Some(u.trim().to_string());
            }
            if line.trim_start().starts_with("Try:") {
                break;
            }
        }
        Binary {
            child,
            url: url.expect("no URL in the banner"),
        }
    }

    fn address(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0);
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raises this process' open-file limit to at least `wanted` (children inherit it).
fn ensure_fd_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    assert!(
        limit.rlim_cur >= wanted,
        "the open-file limit is {} (hard {}); this test needs {wanted}",
        limit.rlim_cur,
        limit.rlim_max
    );
}

#[test]
fn five_thousand_idle_connections_keep_memory_bounded() {
    const CONNECTIONS: usize = 5_000;
    ensure_fd_limit(CONNECTIONS as u64 * 2 + 1_000);
    let redis = RedisServer::start();
    let binary = Binary::start(&redis.url(), &[("RESTASH_HEADER_TIMEOUT_MS", "60000")]);
    let address = binary.address();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let exchange = |stream: &mut TcpStream| {
        stream.write_all(request).unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    };
    // Warm up, then measure.
    for _ in 0..50 {
        exchange(&mut TcpStream::connect(&address).unwrap());
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = binary.rss_kib();

    let started = Instant::now();
    let mut open = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(&address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // One request each, then the connection stays open and idle (keep-alive).
        exchange(&mut stream);
        open.push(stream);
    }
    std::thread::sleep(Duration::from_millis(300));
    let with_connections = binary.rss_kib();
    // Still answering promptly with every connection open.
    let probe = Instant::now();
    exchange(open.last_mut().unwrap());
    let latency = probe.elapsed();
    let per_connection = (with_connections.saturating_sub(before)) * 1024 / CONNECTIONS as u64;
    eprintln!(
        "idle connections: RSS {before} KiB before, {with_connections} KiB with {CONNECTIONS} open \
         ({per_connection} bytes each; opened in {:?}); a request meanwhile took {latency:?}",
        started.elapsed()
    );
    assert!(
        with_connections < before + 160 * 1024,
        "RSS grew from {before} KiB to {with_connections} KiB"
    );
    assert!(latency < Duration::from_millis(500));
    drop(open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_refuses_and_exits_in_time() {
    let redis = RedisServer::start();
    let grace = Duration::from_millis(2000);
    let mut binary = Binary::start(&redis.url(), &[("RESTASH_SHUTDOWN_TIMEOUT_MS", "2000")]);
    let address = binary.address();
    let url = binary.url.clone();
    let http = reqwest::Client::new();
    let key = format!("{}drain", prefix());
    let warm = timed_command(&http, &url, json!(["PING"]).to_string()).await;
    assert_eq!(warm.status, 200);

    // A request that can never finish: its body never arrives.
    let mut stuck = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!("POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 50\r\n\r\n[");
    stuck.write_all(head.as_bytes()).await.unwrap();

    // Load: 24 requests in flight (Redis paused), on their own connections.
    redis.cli(&["CLIENT", "PAUSE", "800", "ALL"]);
    let mut in_flight = Vec::new();
    for i in 0..24 {
        let url = url.clone();
        let body = json!(["SET", format!("{key}{i}"), "done"]).to_string();
        in_flight.push(tokio::spawn(async move {
            timed_command(&reqwest::Client::new(), &url, body).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    binary.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(150)).await;

    // New connections are refused.
    let refused = tokio::net::TcpStream::connect(&address).await;
    assert!(
        refused.is_err(),
        "a new connection was accepted after SIGTERM"
    );

    // In-flight requests complete.
    for task in in_flight {
        let o = task.await.unwrap();
        assert_eq!(o.status, 200, "in-flight request: {o:?}");
        assert_eq!(o.body, json!({"result": "OK"}));
    }
    // The stuck request does not hold the process past the grace period.
    let code = tokio::task::block_in_place(|| binary.wait_exit(grace + Duration::from_secs(2)));
    let exited = signalled.elapsed();
    eprintln!(
        "sigterm: 24 in-flight requests completed; exited after {exited:?} (grace {grace:?})"
    );
    assert_eq!(code, Some(0));
    assert!(
        exited < grace + Duration::from_millis(700),
        "exit took {exited:?}"
    );
    assert_eq!(redis.cli(&["GET", &format!("{key}23")]), "done");
    drop(stuck);
}
