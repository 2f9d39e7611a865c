//! Test harness: real `redis-server` processes on free ports and restash served
//! in-process over real HTTP. Everything started here is stopped on drop.

use std::io::Read;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use restash::config::Config;
use serde_json::Value;

/// The standard token every test gateway accepts.
pub const TOKEN: &str = "test-token";
/// The read-only token every test gateway accepts.
pub const READONLY_TOKEN: &str = "test-readonly-token";

/// How long a `redis-cli` call may take before the test fails instead of hanging
/// (`redis-cli -c` follows redirects forever while a cluster disagrees).
pub const CLI_LIMIT: Duration = Duration::from_secs(20);

/// Runs a child process to completion, as [`Command::output`] does, but for at most
/// a time limit: past it the child is killed and the test fails with what it printed.
pub trait OutputWithin {
    /// Output of the finished child; panics if it cannot start or outlives `limit`.
    fn output_within(&mut self, limit: Duration) -> Output;
}

impl OutputWithin for Command {
    fn output_within(&mut self, limit: Duration) -> Output {
        try_output_within(self, limit).unwrap_or_else(|error| panic!("{error}"))
    }
}

/// [`OutputWithin::output_within`] that reports a child that cannot start or outlives
/// `limit` (killed) as an error, with what it printed.
pub fn try_output_within(command: &mut Command, limit: Duration) -> Result<Output, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Ok(Output {
                    status,
                    stdout: collect(stdout, limit),
                    stderr: collect(stderr, limit),
                })
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                // A grandchild may hold the pipes open: wait only briefly for them.
                let grace = Duration::from_secs(1);
                return Err(format!(
                    "{command:?} still running after {limit:?}; killed\n--- stdout\n{}\n--- stderr\n{}",
                    String::from_utf8_lossy(&collect(stdout, grace)),
                    String::from_utf8_lossy(&collect(stderr, grace))
                ));
            }
        }
    }
}

/// Reads a child's pipe to its end on a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = sender.send(bytes);
    });
    receiver
}

/// What [`drain`] read, or nothing if the pipe is still open after `limit`.
fn collect(drained: std::sync::mpsc::Receiver<Vec<u8>>, limit: Duration) -> Vec<u8> {
    drained.recv_timeout(limit).unwrap_or_default()
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A free port for a cluster node: Redis listens for its cluster bus on the port
/// plus 10,000, so that one must be free too (and below 65,536).
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port <= 55_000 && StdListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// For cluster nodes, a per-port cluster config file next to the data dir.
fn cluster_file_args(extra: &[&str], port: u16) -> Vec<String> {
    if extra.contains(&"--cluster-enabled") {
        vec!["--cluster-config-file".into(), format!("nodes-{port}.conf")]
    } else {
        Vec::new()
    }
}

/// A `redis-server` child process, killed on drop.
pub struct RedisServer {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl RedisServer {
    /// Starts a fresh, non-persistent Redis and waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a Sentinel from a config file (Sentinel rewrites it).
    pub fn start_sentinel(conf: &str) -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("redis-server")
                .args([
                    conf,
                    "--sentinel",
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server");
            let mut server = RedisServer { child, port };
            if server.wait_ready(Duration::from_secs(5)) {
                return server;
            }
            let _ = server.child.kill();
        }
        panic!("could not start a sentinel");
    }

    /// Like [`RedisServer::start`], with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        for _ in 0..5 {
            let port = if extra.contains(&"--cluster-enabled") {
                free_cluster_port()
            } else {
                free_port()
            };
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args(cluster_file_args(extra, port))
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is not installed: run scripts/test, which installs it");
            let mut server = RedisServer { child, port };
            if server.wait_ready(Duration::from_secs(5)) {
                return server;
            }
            let _ = server.child.kill();
        }
        panic!("could not start redis-server");
    }

    /// Starts a cluster-enabled node, in no cluster yet (1 s node timeout), that
    /// keeps its cluster file in `dir`.
    pub fn start_cluster_node(dir: &std::path::Path) -> RedisServer {
        RedisServer::start_with(&[
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            "1000",
            "--dir",
            dir.to_str().expect("utf-8 temp dir"),
        ])
    }

    /// Sends the process `signal` (`"STOP"` freezes it: connections are still
    /// accepted by the kernel but never answered; `"CONT"` resumes it).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Kills the process (a crash, as far as clients can tell).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this server and returns its trimmed output.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output_within(CLI_LIMIT);
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// How many times `command` ran since start or `CONFIG RESETSTAT` (`INFO commandstats`).
    pub fn command_calls(&self, command: &str) -> u64 {
        let prefix = format!("cmdstat_{command}:calls=");
        self.cli(&["INFO", "commandstats"])
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().expect("a count"))
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            // A server with a password answers NOAUTH: it is up all the same.
            let reply = self.cli(&["PING"]);
            if reply == "PONG" || reply.starts_with("NOAUTH") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Cluster of `redis-server` processes on free ports, killed on drop.
pub struct RedisCluster {
    /// Every node, primaries first.
    pub nodes: Vec<RedisServer>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    /// Starts `primaries` primaries with `replicas` replicas each and waits for
    /// `cluster_state:ok` on every node. A cluster that does not form in time (its
    /// nodes never agree) is killed and started again on new ports, up to 3 times.
    pub fn start(primaries: usize, replicas: usize) -> RedisCluster {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match RedisCluster::try_start(primaries, replicas) {
                Ok(cluster) => return cluster,
                Err(error) => {
                    eprintln!("a test cluster did not form, starting another: {error}");
                    failures.push(error);
                }
            }
        }
        panic!("could not start a cluster:\n{}", failures.join("\n"));
    }

    fn try_start(primaries: usize, replicas: usize) -> Result<RedisCluster, String> {
        let dir =
            std::env::temp_dir().join(format!("restash-cluster-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let total = primaries * (1 + replicas);
        let nodes: Vec<RedisServer> = (0..total)
            .map(|_| RedisServer::start_cluster_node(&dir))
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        // Dropped on any early return: kills the nodes and removes the directory.
        let cluster = RedisCluster { nodes, dir };
        // `--cluster create` waits for the nodes to agree with no limit of its own.
        let output = try_output_within(
            Command::new("redis-cli")
                .arg("--cluster")
                .arg("create")
                .args(&addresses)
                .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]),
            Duration::from_secs(30),
        )?;
        if !output.status.success() {
            return Err(format!(
                "cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            ));
        }
        cluster.wait_ok(Duration::from_secs(20))?;
        Ok(cluster)
    }

    fn wait_ok(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let all_ok = self.nodes.iter().all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            });
            let replicas_synced = self.nodes.iter().all(|n| {
                let role = n.cli(&["ROLE"]);
                !role.starts_with("slave") || role.contains("connected")
            });
            // Every node's CLUSTER SLOTS lists every node (replicas included).
            let slots_complete = self.nodes.iter().all(|n| {
                let slots = n.cli(&["CLUSTER", "SLOTS"]);
                self.nodes
                    .iter()
                    .all(|m| slots.contains(&m.port.to_string()))
            });
            if all_ok && replicas_synced && slots_complete {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("the cluster was not ok within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port of the primary that owns each slot, as node `index` sees it (`CLUSTER NODES`).
    pub fn slot_owners(&self, index: usize) -> std::collections::HashMap<u16, u16> {
        let mut owners = std::collections::HashMap::new();
        for line in self.nodes[index].cli(&["CLUSTER", "NODES"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") {
                continue;
            }
            let port: u16 = fields[1]
                .split(['@', ','])
                .next()
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| p.parse().ok())
                .expect("node port");
            for range in &fields[8..] {
                if range.starts_with('[') {
                    continue;
                }
                let (first, last) = range.split_once('-').unwrap_or((range, range));
                for slot in first.parse::<u16>().unwrap()..=last.parse::<u16>().unwrap() {
                    owners.insert(slot, port);
                }
            }
        }
        owners
    }

    /// The index of the primary that owns `slot`, as node 0 sees it.
    pub fn owner_of(&self, slot: u16) -> usize {
        let port = self.slot_owners(0)[&slot];
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .expect("owner is a node")
    }

    /// Hands the (empty) hash slot `slot` to primary `to` and waits until every
    /// node agrees. The new owner takes the cluster's highest config epoch first, so
    /// that a gossip message still claiming the slot for the old owner cannot win it
    /// back (the two would then redirect to each other for ever); the new owner is
    /// told first, as Redis advises.
    pub async fn move_slot(&self, slot: u16, to: usize) {
        let target = self.nodes[to].cli(&["CLUSTER", "MYID"]);
        let bumped = self.nodes[to].cli(&["CLUSTER", "BUMPEPOCH"]);
        assert!(
            bumped.starts_with("BUMPED") || bumped.starts_with("STILL"),
            "{bumped}"
        );
        let slot_text = slot.to_string();
        let order = std::iter::once(to).chain((0..self.nodes.len()).filter(|n| *n != to));
        for node in order {
            if self.nodes[node].cli(&["ROLE"]).starts_with("slave") {
                continue;
            }
            assert_eq!(
                self.nodes[node].cli(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &target]),
                "OK"
            );
        }
        let new_owner = self.nodes[to].port;
        let started = Instant::now();
        let mut told_again = Instant::now();
        loop {
            let disagree: Vec<usize> = (0..self.nodes.len())
                .filter(|&node| self.slot_owners(node).get(&slot) != Some(&new_owner))
                .collect();
            if disagree.is_empty() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nodes {disagree:?} did not agree that slot {slot} moved within 30 s"
            );
            // On a loaded machine a late gossip message can still win a node back to
            // the old owner: tell the nodes that disagree once more.
            if told_again.elapsed() > Duration::from_secs(2) {
                self.nodes[to].cli(&["CLUSTER", "BUMPEPOCH"]);
                for &node in &disagree {
                    if !self.nodes[node].cli(&["ROLE"]).starts_with("slave") {
                        self.nodes[node].cli(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &target]);
                    }
                }
                told_again = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `redis-cluster://…` URL naming every node.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port);
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", node.port));
        }
        url
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A primary, one replica and three Sentinels watching them as `mymaster`.
pub struct SentinelSet {
    /// The primary, then the replica.
    pub servers: Vec<RedisServer>,
    /// The Sentinel processes.
    pub sentinels: Vec<RedisServer>,
    /// The Sentinels' own password (`requirepass`), when they have one.
    sentinel_password: Option<String>,
    dir: std::path::PathBuf,
}

impl SentinelSet {
    /// Starts the set and waits until every Sentinel knows the replica.
    pub fn start() -> SentinelSet {
        SentinelSet::start_protected(None)
    }

    /// [`SentinelSet::start`] with Sentinels that require `password` (the URL then
    /// carries it as `sentinelPassword`).
    pub fn start_protected(password: Option<&str>) -> SentinelSet {
        let dir =
            std::env::temp_dir().join(format!("restash-sentinel-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).expect("sentinel dir");
        // The replica writes the primary's snapshot to its working directory: keep it
        // in the set's own directory, not the crate's.
        let dir_arg = dir.to_str().expect("utf-8 path").to_string();
        let primary = RedisServer::start_with(&["--dir", &dir_arg]);
        let replica = RedisServer::start_with(&[
            "--replicaof",
            "127.0.0.1",
            &primary.port.to_string(),
            "--dir",
            &dir_arg,
        ]);
        let sentinels = (0..3)
            .map(|i| {
                let conf = dir.join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "sentinel monitor mymaster 127.0.0.1 {} 2\n\
                         sentinel down-after-milliseconds mymaster 1000\n\
                         sentinel failover-timeout mymaster 4000\n\
                         sentinel parallel-syncs mymaster 1\n{}",
                        primary.port,
                        password
                            .map(|p| format!("requirepass {p}\nsentinel sentinel-pass {p}\n"))
                            .unwrap_or_default()
                    ),
                )
                .expect("sentinel conf");
                RedisServer::start_sentinel(conf.to_str().expect("utf-8 path"))
            })
            .collect();
        let set = SentinelSet {
            servers: vec![primary, replica],
            sentinels,
            sentinel_password: password.map(str::to_string),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !(0..set.sentinels.len()).all(|i| {
            set.sentinel_cli(i, &["SENTINEL", "REPLICAS", "mymaster"])
                .contains("slave")
        }) {
            assert!(
                Instant::now() < deadline,
                "sentinels did not discover the replica"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        set
    }

    /// `redis-cli` against Sentinel `index`, with its password when it has one.
    pub fn sentinel_cli(&self, index: usize, args: &[&str]) -> String {
        match &self.sentinel_password {
            Some(password) => {
                let auth = ["-a", password.as_str(), "--no-auth-warning"];
                self.sentinels[index].cli(&[&auth[..], args].concat())
            }
            None => self.sentinels[index].cli(args),
        }
    }

    /// `redis-sentinel://…` URL naming every Sentinel.
    pub fn url(&self) -> String {
        let mut url = format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName=mymaster",
            self.sentinels[0].port
        );
        for sentinel in &self.sentinels[1..] {
            url.push_str(&format!("&node=127.0.0.1:{}", sentinel.port));
        }
        if let Some(password) = &self.sentinel_password {
            url.push_str(&format!("&sentinelPassword={password}"));
        }
        url
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        self.sentinels.clear();
        self.servers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A restash instance served in-process; shut down on drop.
pub struct Gateway {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// An HTTP client for tests.
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Default test configuration against `redis_url`, tweakable by `adjust`.
pub fn test_config(redis_url: &str) -> Config {
    let mut config = Config::from_lookup(|_| None).expect("default config");
    config.redis_url = redis_url.to_string();
    config.readonly_token = Some(READONLY_TOKEN.to_string());
    config.command_timeout = Duration::from_secs(3);
    config
}

impl Gateway {
    /// Starts restash against `redis` with the default test configuration.
    pub async fn start(redis: &RedisServer) -> Gateway {
        Gateway::start_with(test_config(&redis.url())).await
    }

    /// Starts restash against a cluster with the default test configuration.
    pub async fn start_cluster(cluster: &RedisCluster) -> Gateway {
        Gateway::start_with(test_config(&cluster.url())).await
    }

    /// Starts restash with `config` and waits until `/readyz` answers 200: up to
    /// 15 s while the URL's Redis accepts connections (a loaded machine), 3 s when it
    /// does not (tests whose Redis is down on purpose).
    pub async fn start_with(config: Config) -> Gateway {
        let redis_listening = redis_listening(&config.redis_url);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.await;
            };
            if let Err(error) = restash::serve(listener, config, TOKEN.to_string(), shutdown).await
            {
                eprintln!("gateway stopped: {error}");
            }
        });
        let gateway = Gateway {
            url,
            // A gateway that stops answering fails the test instead of hanging it.
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            shutdown: Some(tx),
            task: Some(task),
        };
        let wait = if redis_listening { 15 } else { 3 };
        let deadline = Instant::now() + Duration::from_secs(wait);
        while Instant::now() < deadline {
            if let Ok(r) = gateway.http.get(gateway.at("/readyz")).send().await {
                if r.status() == 200 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gateway
    }

    /// The absolute URL of `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// `POST path` with `body` and the standard token; returns status and JSON.
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.send(self.http.post(self.at(path)).bearer_auth(TOKEN).body(body))
            .await
    }

    /// `POST /` with a JSON command.
    pub async fn command(&self, command: Value) -> (u16, Value) {
        self.post("/", command.to_string()).await
    }

    /// Sends a prepared request and parses the JSON answer (panics if it is not JSON).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("request failed");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = response.text().await.expect("body");
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text:?}"));
        assert!(
            content_type.starts_with("application/json"),
            "content-type {content_type:?} for {text}"
        );
        (status, json)
    }
}

impl Gateway {
    /// The text of `GET /metrics` (the recorder is the test process's: every gateway
    /// of the process adds to the same counters).
    pub async fn metrics(&self) -> String {
        let response = self.http.get(self.at("/metrics")).send().await;
        let response = response.expect("GET /metrics");
        assert_eq!(response.status(), 200, "GET /metrics");
        response.text().await.expect("metrics text")
    }

    /// Shuts restash down gracefully and waits until `serve` has returned.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("restash stops within 30 s")
                .expect("restash's task");
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Whether the first `host:port` of a `redis://`-style URL accepts TCP connections.
fn redis_listening(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let address = authority.rsplit('@').next().unwrap_or_default();
    let Ok(mut addresses) = std::net::ToSocketAddrs::to_socket_addrs(address) else {
        return false;
    };
    addresses.next().is_some_and(|address| {
        std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
    })
}

/// A random key prefix so tests sharing a Redis never collide.
pub fn prefix() -> String {
    format!("t{:08x}:", rand::random::<u32>())
}
