//! `MONITOR` on a dedicated connection per stream.
//!
//! A task reads the connection as fast as Redis writes (Redis buffers a slow
//! monitor client without limit) and hands each line to the stream's buffer,
//! bounded in events and bytes; a full buffer ends the stream. Dropping the stream aborts the task,
//! which closes the connection at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::link::{Endpoint, Link};
use super::resp::Reply;
use super::{stream_buffer, BufferLimits, Delivery, Inbox, Offer, Outbox, StreamError};

/// A running `MONITOR`: each event is one command line as a JSON string.
pub struct MonitorStream {
    inbox: Inbox,
    task: JoinHandle<()>,
    _permit: OwnedSemaphorePermit,
}

impl MonitorStream {
    /// The next event, or why the stream ends.
    pub async fn next(&mut self) -> Delivery {
        self.inbox.next().await
    }
}

impl Drop for MonitorStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a connection, sends `MONITOR` and starts forwarding its lines.
pub async fn start(
    endpoint: &Endpoint,
    connect: Duration,
    command: Duration,
    buffer: BufferLimits,
    permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) -> Result<MonitorStream, StreamError> {
    let unavailable = |e: &dyn std::fmt::Display| StreamError::Unavailable(e.to_string());
    let mut link = Link::connect(endpoint, "restash:monitor", connect)
        .await
        .map_err(|e| unavailable(&e))?;
    match tokio::time::timeout(command, link.request(&[b"MONITOR"])).await {
        Ok(Ok(Reply::Simple(ok))) if ok.as_ref() == b"OK" => {}
        Ok(Ok(Reply::Error(text))) => {
            return Err(StreamError::Redis(
                String::from_utf8_lossy(&text).into_owned(),
            ))
        }
        Ok(Ok(other)) => {
            return Err(StreamError::Unavailable(format!(
                "unexpected reply to MONITOR: {other:?}"
            )))
        }
        Ok(Err(error)) => return Err(unavailable(&error)),
        Err(_) => {
            return Err(StreamError::Unavailable(format!(
                "Redis did not answer MONITOR within {} ms",
                command.as_millis()
            )))
        }
    }
    let (outbox, inbox) = stream_buffer(buffer);
    let task = tokio::spawn(pump(link, outbox, shutdown));
    Ok(MonitorStream {
        inbox,
        task,
        _permit: permit,
    })
}

async fn pump(mut link: Link, outbox: Outbox, shutdown: CancellationToken) {
    loop {
        let reply = tokio::select! {
            _ = outbox.closed() => return,
            _ = shutdown.cancelled() => return,
            reply = link.read() => reply,
        };
        match reply {
            Ok(Reply::Simple(line)) => {
                let line = String::from_utf8_lossy(&line);
                let event: Arc<str> = serde_json::to_string(&*line).unwrap_or_default().into();
                if !matches!(outbox.offer(&event), Offer::Taken) {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "MONITOR connection to Redis lost");
                return;
            }
        }
    }
}
