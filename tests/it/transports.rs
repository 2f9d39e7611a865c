//! Redis over TLS (`rediss://` with an operator-supplied CA) and over a Unix socket;
//! HTTP/2 with prior knowledge on the client side.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{
    free_port, test_config, Gateway, OutputWithin, RedisServer, CLI_LIMIT, TOKEN,
};

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl {args:?}");
}

/// A throw-away CA and a server certificate for 127.0.0.1, signed by it.
fn make_certificates(dir: &std::path::Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=restash test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

fn wait_for(check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("restash-tls-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certificates(&dir);
    let port = free_port();
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let _redis = Process(
        Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--tls-cert-file",
                &path("server.crt"),
                "--tls-key-file",
                &path("server.key"),
            ])
            .args([
                "--tls-ca-cert-file",
                &path("ca.crt"),
                "--tls-auth-clients",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server"),
    );
    wait_for(|| {
        Command::new("redis-cli")
            .args([
                "--tls",
                "--cacert",
                &path("ca.crt"),
                "-p",
                &port.to_string(),
                "PING",
            ])
            .output_within(CLI_LIMIT)
            .stdout
            .starts_with(b"PONG")
    });

    // restash's own connections (the default), then fred's.
    for own_multiplexer in [true, false] {
        let mut config = test_config(&format!("rediss://127.0.0.1:{port}"));
        config.redis_tls_ca_file = Some(dir.join("ca.crt"));
        config.own_multiplexer = own_multiplexer;
        let gw = Gateway::start_with(config).await;
        let value = format!("over tls, own multiplexer: {own_multiplexer}");
        assert_eq!(
            gw.command(json!(["SET", "tls:k", value])).await,
            (200, json!({"result": "OK"}))
        );
        let (status, body) = gw
            .post("/pipeline", json!([["GET", "tls:k"], ["PING"]]).to_string())
            .await;
        assert_eq!(status, 200);
        assert_eq!(body, json!([{"result": value}, {"result": "PONG"}]));
        // The Server-Sent Events connections trust the same CA.
        let mut stream = crate::pubsub::Events::open(
            gw.http
                .get(gw.at("/subscribe/tls-news"))
                .bearer_auth(crate::harness::TOKEN),
        )
        .await;
        assert_eq!(stream.data().await, "subscribe,tls-news,1");
        assert_eq!(
            gw.command(json!(["PUBLISH", "tls-news", "hello"])).await,
            (200, json!({"result": 1}))
        );
        assert_eq!(stream.data().await, "message,tls-news,hello");
    }

    // Without the CA, the server's certificate is not trusted: 503, never plain text.
    let mut config = test_config(&format!("rediss://127.0.0.1:{port}"));
    config.connect_timeout = Duration::from_millis(300);
    let untrusted = Gateway::start_with(config).await;
    assert_eq!(untrusted.command(json!(["PING"])).await.0, 503);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_a_unix_socket() {
    let socket = std::env::temp_dir().join(format!("restash-{:08x}.sock", rand::random::<u32>()));
    let socket_path = socket.to_str().unwrap().to_string();
    let _redis = Process(
        Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--unixsocket",
                &socket_path,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server"),
    );
    wait_for(|| socket.exists());
    let gw = Gateway::start_with(test_config(&format!("redis+unix://{socket_path}"))).await;
    assert_eq!(
        gw.command(json!(["SET", "unix:k", "v"])).await,
        (200, json!({"result": "OK"}))
    );
    assert_eq!(
        gw.command(json!(["GET", "unix:k"])).await,
        (200, json!({"result": "v"}))
    );
    let _ = std::fs::remove_file(&socket);
}

/// HTTP/1.1 only by default (an HTTP/2 connection costs more memory per open
/// connection); `RESTASH_HTTP2=true` also accepts HTTP/2 with prior knowledge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_only_when_enabled() {
    let redis = RedisServer::start();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");

    let plain = Gateway::start(&redis).await;
    let refused = h2.get(plain.at("/healthz")).send().await;
    assert!(refused.is_err(), "HTTP/2 answered: {refused:?}");
    assert_eq!(
        plain.send(plain.http.get(plain.at("/healthz"))).await.0,
        200
    );

    let mut config = test_config(&redis.url());
    config.http2 = true;
    let gw = Gateway::start_with(config).await;
    let response = h2
        .post(gw.at("/"))
        .bearer_auth(TOKEN)
        .body(r#"["PING"]"#)
        .send()
        .await
        .expect("HTTP/2 request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.expect("json"),
        serde_json::json!({"result": "PONG"})
    );
}
