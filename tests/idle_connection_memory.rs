//! How much heap an idle keep-alive HTTP/1.1 connection holds in hyper (issue 7: RSS
//! with 5,000 open connections). Its own test binary: it counts live heap bytes with
//! a global allocator, so no other test may allocate while it measures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::atomic::{AtomicIsize, Ordering};

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// hyper 1.12.0 as published holds an 8 KiB read buffer and an 8 KiB response-head
/// buffer per connection (this test counted 17,978 bytes per connection with it); the
/// vendored copy holds a 4 KiB read buffer and a head buffer the size of one response
/// head (5,810 bytes; vendor/README.md).
#[test]
fn an_idle_keep_alive_connection_holds_under_8_kib() {
    const CONNECTIONS: isize = 200;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let service = hyper::service::service_fn(|_request| async {
            Ok::<_, Infallible>(hyper::Response::new(String::from("\"value\"")))
        });
        // Warm up: one connection first, so that one-off allocations (tokio's
        // timer and I/O structures, hyper's cached date header) are not counted.
        let mut clients = vec![open_and_request(service).await];
        let before = LIVE_BYTES.load(Ordering::SeqCst);
        for _ in 0..CONNECTIONS {
            clients.push(open_and_request(service).await);
        }
        let per_connection = (LIVE_BYTES.load(Ordering::SeqCst) - before) / CONNECTIONS;
        assert!(
            per_connection < 8 * 1024,
            "an idle connection holds {per_connection} bytes"
        );
        assert!(per_connection > 0, "nothing was counted");
        drop(clients);
    });
}

/// Serves one connection on its own task, makes one request on it, reads the whole
/// response and returns the client end (the connection stays open and idle).
async fn open_and_request<S>(service: S) -> tokio::io::DuplexStream
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<String>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send,
{
    let (mut client, server) = tokio::io::duplex(1024);
    tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(server), service));
    client
        .write_all(b"GET /get/key HTTP/1.1\r\nhost: test\r\nauthorization: Bearer t\r\n\r\n")
        .await
        .expect("write the request");
    let mut response = Vec::with_capacity(256);
    while !response.ends_with(b"\"value\"") {
        let mut chunk = [0; 256];
        let read = client.read(&mut chunk).await.expect("read the response");
        assert!(read > 0, "the connection closed");
        response.extend_from_slice(&chunk[..read]);
    }
    assert!(response.starts_with(b"HTTP/1.1 200 OK"));
    client
}
