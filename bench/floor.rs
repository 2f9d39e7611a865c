//! The floor of restash's HTTP stack: hyper's HTTP/1.1 server on tokio's
//! multi-threaded runtime, answering every request with a fixed 113-byte JSON body
//! (the size restash sends for a 100-byte GET), with no routing, middleware,
//! authentication or Redis, but with restash's connection settings (TCP_NODELAY,
//! HTTP/1.1 only, a header read timeout on tokio's timer). `bench/bench.py` measures
//! it under the benchmark's loads, next to nginx answering the same body.
//!
//!     FLOOR_LISTEN=127.0.0.1:8393 TOKIO_WORKER_THREADS=2 cargo run --release --example floor

use std::convert::Infallible;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// `{"result":"vvv…"}` with a 100-byte value.
fn body() -> Bytes {
    Bytes::from(format!("{{\"result\":\"{}\"}}", "v".repeat(100)))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::var("FLOOR_LISTEN").unwrap_or_else(|_| "127.0.0.1:8393".into());
    let listener = TcpListener::bind(&address).await?;
    let body = body();
    loop {
        // A failed accept (out of file descriptors, …) loses one connection, not the floor.
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let body = body.clone();
                async move {
                    // Read the request body, as restash does.
                    let _ = http_body_util::BodyExt::collect(request.into_body()).await;
                    let mut response = Response::new(Full::new(body));
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(response)
                }
            });
            // As restash's `serve_http1`, with RESTASH_HEADER_TIMEOUT_MS's default.
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
