//! restash: a self-hosted, Upstash-compatible HTTP REST gateway for Redis.
//!
//! # Layout
//! - [`config`]: settings from the environment;
//! - [`protocol`]: pure request parsing and reply encoding (the Upstash wire format);
//! - [`policy`]: pure decisions on what to send (read-only tokens, refusals, rewrites);
//! - [`backend`]: the only module that imports fred;
//! - [`auth`]: static tokens, the token file, JWTs, named backends, rate limits, audit;
//! - [`cache`]: the cache-aside API's semantics (keys, leases, tags, invalidation, stats);
//! - [`http`]: the only module that imports axum;
//! - [`error`]: the API error enum and its `{"error": …}` rendering.
//!
//! `main` and every integration test call the same [`serve`].

pub mod auth;
pub mod backend;
pub mod cache;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod protocol;
pub mod routing;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;

use crate::auth::jwt::JwtSettings;
use crate::auth::{AuthSettings, Authenticator, Tokens};
use crate::backend::{Backend, BackendError, BackendSettings};
use crate::config::Config;
use crate::http::AppState;
use crate::policy::CommandTable;
use crate::protocol::reply;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Redis settings were rejected.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The HTTP server failed.
    #[error("HTTP server error: {0}")]
    Io(#[from] std::io::Error),
    /// The token file or the JWT keys are unusable.
    #[error(transparent)]
    Auth(#[from] auth::AuthSetupError),
}

/// Runs restash on `listener` until `shutdown` resolves, then drains in-flight requests.
///
/// `token` is the standard token to accept (callers generate one when none is configured).
pub async fn serve(
    listener: TcpListener,
    config: Config,
    token: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let backend = Backend::connect(&backend_settings(&config)).await?;
    if !backend.wait_until_connected(config.connect_timeout).await {
        tracing::warn!(
            redis = %config.redis_url_redacted(),
            "Redis is not reachable yet; answering 503 until it is"
        );
    }
    let tokens = Tokens::new(&token, config.readonly_token.as_deref());
    let authenticator = match Authenticator::load(
        tokens.clone(),
        backend_settings(&config),
        auth_settings(&config),
    )
    .await
    {
        Ok(authenticator) => Arc::new(authenticator),
        Err(error) => {
            backend.shutdown().await;
            return Err(error.into());
        }
    };
    let state = AppState::new(backend.clone(), tokens, config.max_body_bytes);
    state.set_auth(authenticator.clone());
    let reloads_stop = tokio_util::sync::CancellationToken::new();
    let reloader = auth::reload::spawn(authenticator.clone(), reloads_stop.clone());
    state.set_limits(http::Limits {
        max_concurrency: config.max_concurrency,
        request_timeout: config.request_timeout,
    });
    state.set_cache_settings(cache::CacheSettings {
        timeout: config.cache_timeout,
    });
    // SSE streams and really-blocking commands end as soon as shutdown starts.
    let streams_closing = tokio_util::sync::CancellationToken::new();
    state.set_pubsub(backend::pubsub::PubSubHub::start(
        backend::pubsub::PubSubSettings::from_config(&config),
        streams_closing.clone(),
    )?);
    let blocking = if config.blocking {
        let pool = backend::blocking::BlockingPool::new(
            backend::blocking::BlockingSettings::from_config(&config),
            streams_closing.clone(),
        )?;
        state.set_blocking(pool.clone());
        Some(pool)
    } else {
        None
    };
    let stats_stop = tokio_util::sync::CancellationToken::new();
    let stats_flusher = tokio::spawn(flush_cache_stats(state.clone(), stats_stop.clone()));
    let loader = tokio::spawn(load_command_table(state.clone()));
    let app = http::app(state, &config.cors_origins);
    auth::audit::describe();

    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown_timeout = config.shutdown_timeout;
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        streams_closing.cancel();
        let _ = drained_tx.send(());
    };
    let server = http::serve(listener, app, config.header_timeout, config.http2, signal);
    tokio::pin!(server);
    let result = tokio::select! {
        result = &mut server => result,
        _ = async {
            // Once shutdown starts, give in-flight requests a bounded time.
            if drained_rx.await.is_ok() {
                tokio::time::sleep(shutdown_timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!("shutdown timeout reached; closing remaining connections");
            Ok(())
        }
    };
    loader.abort();
    // The cache events of the requests just finished reach Redis before it closes.
    stats_stop.cancel();
    let _ = stats_flusher.await;
    reloads_stop.cancel();
    let _ = reloader.await;
    authenticator.shutdown().await;
    if let Some(pool) = blocking {
        pool.shutdown().await;
    }
    backend.shutdown().await;
    result.map_err(ServeError::from)
}

/// Adds this process's cache event counts to the shared Redis counters every
/// [`cache::stats::FLUSH_INTERVAL`], and once more when `stop` is cancelled.
async fn flush_cache_stats(state: AppState, stop: tokio_util::sync::CancellationToken) {
    let mut ticks = tokio::time::interval(cache::stats::FLUSH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => state.cache().flush_stats(state.backend()).await,
            _ = stop.cancelled() => break,
        }
    }
    state.cache().flush_stats(state.backend()).await;
}

fn auth_settings(config: &Config) -> AuthSettings {
    AuthSettings {
        tokens_file: config.tokens_file.clone(),
        jwt: JwtSettings {
            secret: config.jwt_secret.clone(),
            keys_file: config.jwt_keys.clone(),
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            max_lifetime: config.jwt_max_lifetime,
        },
        revoked_file: config.jwt_revoked_file.clone(),
        shared_rate_limits: config.rate_limit_shared,
    }
}

fn backend_settings(config: &Config) -> BackendSettings {
    BackendSettings {
        url: config.redis_url.clone(),
        read_from_replicas: config.read_from_replicas,
        tls_ca_file: config.redis_tls_ca_file.clone(),
        connections: config.redis_connections,
        transaction_connections: config.transaction_connections,
        command_timeout: config.command_timeout,
        connect_timeout: config.connect_timeout,
        command_buffer: config.command_buffer,
        reconnect_max_delay: config.reconnect_max_delay,
        own_multiplexer: config.own_multiplexer,
    }
}

/// Reads `COMMAND` from Redis, retrying until it succeeds.
async fn load_command_table(state: AppState) {
    let mut delay = Duration::from_millis(100);
    loop {
        match state
            .backend()
            .execute(vec![Bytes::from_static(b"COMMAND")])
            .await
        {
            Ok(frame) if reply::error_text(&frame).is_none() => {
                match CommandTable::from_frame(&frame) {
                    Ok(table) => {
                        tracing::info!(commands = table.len(), "loaded the Redis command table");
                        state.set_command_table(table);
                        return;
                    }
                    Err(error) => tracing::error!(%error, "cannot read the Redis command table"),
                }
            }
            Ok(frame) => tracing::warn!(
                error = reply::error_text(&frame).unwrap_or_default(),
                "COMMAND failed"
            ),
            Err(error) => tracing::debug!(%error, "COMMAND failed; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
