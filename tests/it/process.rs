//! The `restash` binary itself: start-up banner, generated token, graceful shutdown.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{OutputWithin, RedisServer};

struct Binary {
    child: Child,
    banner: Vec<String>,
}

impl Binary {
    fn start(redis: &RedisServer, extra_env: &[(&str, &str)]) -> Binary {
        let mut command = Command::new(env!("CARGO_BIN_EXE_restash"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("REDIS_URL", redis.url())
            .env("RESTASH_LISTEN", "127.0.0.1:0")
            .env("RESTASH_LOG", "warn")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start restash");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        while let Some(Ok(line)) = lines.next() {
            let done = line.trim_start().starts_with("Try:");
            banner.push(line);
            if done {
                break;
            }
        }
        Binary { child, banner }
    }

    fn field(&self, name: &str) -> String {
        self.banner
            .iter()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {name} in banner {:?}", self.banner))
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_url_and_generated_token() {
    let redis = RedisServer::start();
    let binary = Binary::start(&redis, &[]);
    let url = binary.field("URL:");
    let token_line = binary.field("Token:");
    let token = token_line
        .split_whitespace()
        .next()
        .expect("token")
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(binary.field("Try:").contains(&format!("Bearer {token}")));

    let http = reqwest::Client::new();
    let answer: Value = http
        .post(&url)
        .bearer_auth(&token)
        .body(r#"["PING"]"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer, json!({"result": "PONG"}));
    let status = http
        .post(&url)
        .bearer_auth("wrong")
        .body(r#"["PING"]"#)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests() {
    let redis = RedisServer::start();
    let mut binary = Binary::start(&redis, &[("RESTASH_TOKEN", "shutdown-token")]);
    let url = binary.field("URL:");
    let http = reqwest::Client::new();
    // Make sure the connection to Redis is up before pausing it.
    let ping = http
        .post(&url)
        .bearer_auth("shutdown-token")
        .body(r#"["PING"]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 200);

    redis.cli(&["CLIENT", "PAUSE", "1000", "ALL"]);
    let in_flight = tokio::spawn({
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(url)
                .bearer_auth("shutdown-token")
                .body(r#"["SET","drain","done"]"#)
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    binary.terminate();
    let response = in_flight
        .await
        .unwrap()
        .expect("in-flight request was dropped");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"result": "OK"})
    );
    let code = tokio::task::block_in_place(|| binary.wait_exit(Duration::from_secs(10)));
    assert_eq!(code, Some(0));
    assert_eq!(redis.cli(&["GET", "drain"]), "done");
}

/// Configuration mistakes stop the binary with status 2 and a line naming them: a
/// `.env` that cannot be parsed (not half applied), a log filter that is not one, a
/// weak JWT secret and a maximum JWT lifetime that is not a number of seconds.
#[test]
fn bad_configuration_exits_with_its_reason() {
    let dir = std::env::temp_dir().join(format!("restash-env-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join(".env"),
        "RESTASH_LISTEN=127.0.0.1:0\nRESTASH_TOKEN=a b\"\n",
    )
    .expect("write .env");
    let run = |dir: &std::path::Path, env: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_restash"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(dir);
        for (name, value) in env {
            command.env(name, value);
        }
        command.output_within(Duration::from_secs(10))
    };
    let output = run(&dir, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot read .env"), "{stderr}");

    std::fs::remove_file(dir.join(".env")).expect("remove .env");
    let output = run(&dir, &[("RESTASH_LOG", "restash=loud")]);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("RESTASH_LOG"), "{stderr}");

    // An HS256 secret too short to resist an offline guess stops restash without
    // printing the secret; so does a maximum JWT lifetime that is not a number.
    let output = run(&dir, &[("RESTASH_JWT_SECRET", "password123")]);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("RESTASH_JWT_SECRET") && stderr.contains("shorter than 32 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("password123"), "{stderr}");
    let output = run(&dir, &[("RESTASH_JWT_MAX_LIFETIME_SECONDS", "1h")]);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("RESTASH_JWT_MAX_LIFETIME_SECONDS=\"1h\" is invalid"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Connections killed over and over (`CLIENT KILL` every 20 ms for 15 s) while
/// transactions run: afterwards every dedicated connection works again. fred 10.1.0
/// as published could spin for ever at 100 % CPU replaying a command that found no
/// connection during a reconnection (vendor/README.md), taking a worker thread with
/// it, and the connection it served answered nothing. Not every storm hits it (one
/// run of this storm did after 8 s). The gateway runs as a child process here: a
/// runtime with a task that never yields cannot shut down, so in-process this test
/// hung instead of failing (2 runs out of 2 with fred as published).
#[test]
fn connections_killed_over_and_over_all_work_again() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let redis = RedisServer::start();
    let token = "storm-token";
    let binary = Binary::start(
        &redis,
        &[
            ("RESTASH_TOKEN", token),
            ("RESTASH_TRANSACTION_CONNECTIONS", "4"),
        ],
    );
    let address = binary
        .field("URL:")
        .trim_start_matches("http://")
        .to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|writer| {
            let (address, stop) = (address.clone(), stop.clone());
            std::thread::spawn(move || {
                let batch = Value::Array(vec![json!(["INCR", format!("storm:{writer}")]); 50]);
                while !stop.load(Ordering::Relaxed) {
                    post_within(&address, token, "/multi-exec", &batch.to_string());
                }
            })
        })
        .collect();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(20));
        let _ = redis.cli(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer");
    }
    // Four at once, so that each dedicated connection serves one.
    let body = json!([["INCR", "storm:after"], ["GET", "storm:after"]]).to_string();
    let answers: Vec<_> = (0..4)
        .map(|_| {
            let (address, body) = (address.clone(), body.clone());
            std::thread::spawn(move || post_within(&address, token, "/multi-exec", &body))
        })
        .collect();
    for answer in answers {
        let answer = answer.join().expect("no panic");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(redis.cli(&["GET", "storm:after"]), "4");
}

/// `POST path` with `body` and `token` on a connection of its own, answered within
/// 10 s: the whole answer as text, or what came before the deadline.
fn post_within(address: &str, token: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut answer = Vec::new();
    let outcome = stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.read_to_end(&mut answer));
    if let Err(error) = outcome {
        answer.extend_from_slice(format!("\n(no whole answer within 10 s: {error})").as_bytes());
    }
    String::from_utf8_lossy(&answer).into_owned()
}
