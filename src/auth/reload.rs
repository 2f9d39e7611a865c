//! Hot reload: on SIGHUP every file is read again; otherwise each file's modification
//! time and size are polled every second and a changed file is read again. A file
//! that fails to load keeps the previous configuration, and the error is logged.
//! Requests in flight keep the scope they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::Authenticator;

/// How often files are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Tokens,
    JwtKeys,
    Revoked,
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Watches the token file, the JWT keys and the revocation list until `stop`.
pub fn spawn(auth: Arc<Authenticator>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let settings = auth.settings().clone();
        let mut watched: Vec<(Source, PathBuf, Stamp)> = [
            (Source::Tokens, settings.tokens_file.clone()),
            (Source::JwtKeys, settings.jwt.keys_file.clone()),
            (Source::Revoked, settings.revoked_file.clone()),
        ]
        .into_iter()
        .filter_map(|(source, path)| path.map(|p| (source, p.clone(), stamp(&p))))
        .collect();
        let mut hangup = hangup_signal();
        loop {
            let forced = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL_INTERVAL) => false,
                _ = next_hangup(&mut hangup) => true,
            };
            if forced {
                tracing::info!("SIGHUP: reloading tokens");
            }
            for (source, path, last) in watched.iter_mut() {
                let now = stamp(path);
                if !forced && now == *last {
                    continue;
                }
                *last = now;
                let outcome = match source {
                    Source::Tokens => auth.reload_tokens_file().await,
                    Source::JwtKeys => auth.reload_jwt_keys(),
                    Source::Revoked => auth.reload_revoked(),
                };
                if let Err(error) = outcome {
                    tracing::error!(%error, path = %path.display(), "reload failed; keeping the previous configuration");
                }
            }
        }
    })
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; files are still polled");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {
    None
}

#[cfg(unix)]
async fn next_hangup(signal: &mut Hangup) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending::<()>().await
}
