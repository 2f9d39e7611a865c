//! The accept loop: hyper connections with a header read timeout and graceful shutdown.
//!
//! `axum::serve` cannot bound how long a client may take to send its request
//! headers, so restash drives hyper itself (as `axum::serve` does internally):
//! - the request line and headers must arrive within `header_timeout`, else the
//!   connection is closed (this also closes keep-alive connections idle that long);
//! - HTTP/1.1 only, unless `http2` (then HTTP/2 with prior knowledge too): the
//!   HTTP/2-capable connection costs about 8 KiB more per open connection;
//! - when `signal` resolves the listener is closed at once (new connections are
//!   refused), idle connections close, and in-flight requests finish; the returned
//!   future completes when the last connection has closed.

use std::future::Future;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

use super::App;
use tokio::sync::watch;

/// Runs a pinned hyper connection to its end; on `stop`, shuts it down gracefully
/// (idle keep-alive connections close, in-flight requests finish).
macro_rules! drive {
    ($connection:ident, $stop:ident) => {{
        let mut draining = false;
        loop {
            tokio::select! {
                result = $connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::trace!(%error, "connection ended with an error");
                    }
                    break;
                }
                _ = $stop.wait_for(|stop| *stop), if !draining => {
                    draining = true;
                    $connection.as_mut().graceful_shutdown();
                }
            }
        }
    }};
}

/// Serves `app` on `listener` until `signal` resolves and every connection has closed.
pub async fn serve(
    listener: TcpListener,
    app: App,
    header_timeout: Duration,
    http2: bool,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        signal.await;
        let _ = stop_tx.send(true);
    });
    // Every connection task holds a receiver; `closed()` resolves when all are gone.
    let (open_tx, open_rx) = watch::channel(());
    let mut stopping = stop_rx.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                if is_resource_exhausted(&error) {
                    // Out of file descriptors: wait for some to close.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let stop = stop_rx.clone();
        let open = open_rx.clone();
        // Two task types rather than one with both branches: a task is as large as
        // its largest state, so with both branches every HTTP/1.1 connection's task
        // took 2,328 bytes; on its own it takes 1,536.
        if http2 {
            tokio::spawn(serve_http1_and_2(
                stream,
                service,
                header_timeout,
                stop,
                open,
            ));
        } else {
            tokio::spawn(serve_http1(stream, service, header_timeout, stop, open));
        }
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}

/// The service a connection calls: the app, as hyper wants it.
type ConnectionService = TowerToHyperService<App>;

/// One HTTP/1.1 connection. `_open` is dropped when the connection ends.
async fn serve_http1(
    stream: TcpStream,
    service: ConnectionService,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    drive!(connection, stop);
}

/// One connection that may speak HTTP/1.1 or HTTP/2 (prior knowledge).
async fn serve_http1_and_2(
    stream: TcpStream,
    service: ConnectionService,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) {
    // Telling HTTP/1 from HTTP/2 waits for the first bytes with no timer of its own:
    // a client that sends nothing is closed after the header timeout, as on HTTP/1.
    let first_bytes = tokio::time::timeout(header_timeout, stream.peek(&mut [0u8; 1])).await;
    if !matches!(first_bytes, Ok(Ok(n)) if n > 0) {
        return;
    }
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // HTTP/2 connections have no header timeout: a peer that stops answering pings
    // within the header timeout is gone.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(header_timeout))
        .keep_alive_timeout(header_timeout);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    drive!(connection, stop);
}

fn is_resource_exhausted(error: &std::io::Error) -> bool {
    // EMFILE (24) and ENFILE (23): no file descriptor for the new connection.
    matches!(error.raw_os_error(), Some(23) | Some(24))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};

    use axum::body::Body;
    use hyper::server::conn::http1;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A waker that counts how often it is woken.
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A connection task woken while it runs is re-queued as a yield, and tokio
    /// then wakes a sleeping worker thread: two context switches per request with a
    /// body. hyper 1.12.0 did that on every body it had finished sending; the
    /// vendored copy does not (vendor/README.md). With an unpatched hyper this test
    /// counts one wake.
    #[tokio::test]
    async fn taking_a_request_body_does_not_wake_the_connection_itself() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let service = hyper::service::service_fn(|request: hyper::Request<_>| async move {
            let body = axum::body::to_bytes(Body::new(request.into_body()), 1024).await;
            let length = body.map(|bytes| bytes.len()).unwrap_or(0);
            Ok::<_, Infallible>(hyper::Response::new(Body::from(length.to_string())))
        });
        let connection = http1::Builder::new().serve_connection(TokioIo::new(server), service);
        let mut connection = std::pin::pin!(connection);
        client_write
            .write_all(b"POST / HTTP/1.1\r\nhost: test\r\ncontent-length: 5\r\n\r\nhello")
            .await
            .expect("write the request");

        let wakes = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        // One poll reads the request, runs the service and writes the response.
        let poll = connection.as_mut().poll(&mut Context::from_waker(&waker));
        assert!(
            poll.is_pending(),
            "the connection stays open for the next request"
        );

        let mut response = vec![0; 1024];
        let read = client_read
            .read(&mut response)
            .await
            .expect("read the response");
        let response = String::from_utf8_lossy(&response[..read]);
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.ends_with("\r\n\r\n5"), "{response}");
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            0,
            "the connection woke itself"
        );
    }
}
