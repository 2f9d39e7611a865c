//! Per-token request rates (GCRA: a token bucket without a refill task).
//!
//! Each token name has a "theoretical arrival time" `tat`. A request at `now` is
//! admitted when `tat - now <= (burst - 1) × interval`, and then moves `tat` one
//! interval later; otherwise the caller may retry in `tat - now - (burst - 1) × interval`.
//! Kept in process memory, or in Redis (`restash:rate:{<name>}`, with Redis' own
//! clock) so that several restash instances share one limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::backend::Backend;
use crate::dispatch::Dispatch;
use crate::policy::scope::Rate;
use crate::policy::CommandTable;
use crate::protocol::reply::Frame;

/// Beyond this many names, names whose bucket is full again are forgotten.
const PRUNE_ABOVE: usize = 10_000;

/// GCRA in Redis: `KEYS[1]` the bucket, `ARGV[1]` the interval and `ARGV[2]` the
/// burst tolerance, both in microseconds. Answers -1 (admitted) or the wait in µs.
pub const SHARED_SCRIPT: &str = "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local ok, held = pcall(redis.call, 'GET', KEYS[1])
local tat = (ok and tonumber(held)) or 0
if tat < now then tat = now end
if tat - now > tolerance then return tat - now - tolerance end
local nxt = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
return -1";

/// The rate limiter: in memory, or shared through Redis.
#[derive(Debug)]
pub struct RateLimiter {
    shared: bool,
    epoch: Instant,
    local: Mutex<HashMap<String, f64>>,
}

impl RateLimiter {
    /// A limiter; `shared` keeps the buckets in Redis.
    pub fn new(shared: bool) -> RateLimiter {
        RateLimiter {
            shared,
            epoch: Instant::now(),
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Whether buckets live in Redis.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Admits one request of `name`, or answers how long to wait.
    pub fn admit_local(&self, name: &str, rate: Rate) -> Result<(), Duration> {
        let interval = 1.0 / rate.per_second;
        let tolerance = interval * f64::from(rate.burst.saturating_sub(1));
        let now = self.epoch.elapsed().as_secs_f64();
        let mut buckets = match self.local.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, tat| *tat > now);
        }
        let tat = buckets.get(name).copied().unwrap_or(now).max(now);
        if tat - now > tolerance {
            return Err(Duration::from_secs_f64(tat - now - tolerance));
        }
        buckets.insert(name.to_string(), tat + interval);
        Ok(())
    }

    /// Admits one request of `name` against the bucket in Redis. Fails open (admits)
    /// when Redis cannot answer, and logs why.
    pub async fn admit_shared(
        &self,
        backend: &Backend,
        table: Option<&CommandTable>,
        name: &str,
        rate: Rate,
    ) -> Result<(), Duration> {
        let interval = 1_000_000.0 / rate.per_second;
        let tolerance = interval * f64::from(rate.burst.saturating_sub(1));
        let args = vec![
            Bytes::from_static(b"EVAL"),
            Bytes::from_static(SHARED_SCRIPT.as_bytes()),
            Bytes::from_static(b"1"),
            Bytes::from(format!("restash:rate:{{{name}}}")),
            Bytes::from(format!("{interval:.0}")),
            Bytes::from(format!("{tolerance:.0}")),
        ];
        match Dispatch::new(backend, table).one(args).await {
            Ok(Frame::Number { data, .. }) if data < 0 => Ok(()),
            Ok(Frame::Number { data, .. }) => {
                Err(Duration::from_micros(u64::try_from(data).unwrap_or(0)))
            }
            Ok(other) => {
                tracing::warn!(reply = ?other, "shared rate limit: unexpected reply; admitting");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "shared rate limit: Redis did not answer; admitting");
                Ok(())
            }
        }
    }
}

/// The `Retry-After` value: whole seconds, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let limiter = RateLimiter::new(false);
        let rate = Rate {
            per_second: 10.0,
            burst: 3,
        };
        for _ in 0..3 {
            assert!(limiter.admit_local("a", rate).is_ok());
        }
        let wait = limiter.admit_local("a", rate).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // Another name has its own bucket.
        assert!(limiter.admit_local("b", rate).is_ok());
        std::thread::sleep(Duration::from_millis(110));
        assert!(limiter.admit_local("a", rate).is_ok());
        assert!(limiter.admit_local("a", rate).is_err());
        assert_eq!(retry_after_seconds(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(2100)), 3);
    }
}
