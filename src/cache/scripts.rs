//! The Lua scripts of the cache. Each touches the keys of ONE hash slot only (an entry's
//! value and lease, or one tag set, or one namespace's log), so they run unchanged on a
//! Redis Cluster. Times come from the server (`TIME`), never from a restash instance.

/// A script with its SHA1, run with `EVALSHA` and sent again with `EVAL` after `NOSCRIPT`.
#[derive(Debug)]
pub struct Script {
    /// The Lua source.
    pub source: &'static str,
    /// Its SHA1 in hex.
    pub sha: String,
}

impl Script {
    fn new(source: &'static str) -> Script {
        Script {
            source,
            sha: sha1_smol::Sha1::from(source).digest().to_string(),
        }
    }
}

/// Shared Lua prelude: the server time in ms, and integers formatted without exponents.
macro_rules! lua {
    ($body:expr) => {
        concat!(
            "local t = redis.call('TIME')\n",
            "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n",
            "local function int(x) return string.format('%.0f', x) end\n",
            $body
        )
    };
}

/// KEYS: value, lease. ARGV: lease ms (0: none), token.
/// Returns `{kind, now, granted, d, c, a, f, s, e}` where kind is hit, stale, miss or held
/// (missing and another caller holds the lease); the entry fields only for hit and stale.
const LOOKUP: &str = lua!(
    r#"
local lease_ms = tonumber(ARGV[1])
local function take()
  if lease_ms > 0 and redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', lease_ms) then return 1 end
  return 0
end
local e = redis.call('HMGET', KEYS[1], 'd', 'c', 'a', 'f', 's', 'e')
if e[1] and now < tonumber(e[5]) then
  if now < tonumber(e[4]) then
    return {'hit', now, 0, e[1], e[2], e[3], e[4], e[5], e[6]}
  end
  return {'stale', now, take(), e[1], e[2], e[3], e[4], e[5], e[6]}
end
if take() == 1 then return {'miss', now, 1} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'held', now, 0} end
return {'miss', now, 0}
"#
);

/// KEYS: value, lease. ARGV: token ('' for a plain write), data, content type, etag,
/// ttl ms, swr ms, tags (comma-joined), write id.
/// Returns 1 when stored, 0 when the token no longer holds the lease. Any write ends the lease.
const FILL: &str = lua!(
    r#"
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
local ttl = tonumber(ARGV[5])
local swr = tonumber(ARGV[6])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'c', ARGV[3], 'a', int(now), 'f', int(now + ttl),
  's', int(now + ttl + swr), 'e', ARGV[4], 'w', ARGV[8], 't', ARGV[7])
redis.call('PEXPIRE', KEYS[1], int(ttl + swr))
return 1
"#
);

/// KEYS: value, lease. Deletes the entry and cancels its lease; returns 1 if a value existed.
const REMOVE: &str = r#"
local n = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
return n
"#;

/// KEYS: value. ARGV: write id. Deletes the entry only if that write is still the stored one.
const UNDO_FILL: &str = r#"
if redis.call('HGET', KEYS[1], 'w') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// KEYS: lease. ARGV: token. Ends the lease if the token still holds it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// KEYS: tag set (sorted set). ARGV: lifetime ms, member. Adds the member, scored by
/// when its entry's lifetime ends (a later score is kept), drops the members whose
/// entries have ended, and keeps the set alive at least as long as the entry.
const TAG: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local want = tonumber(ARGV[1])
local ends = now + want
local old = redis.call('ZSCORE', KEYS[1], ARGV[2])
if (not old) or tonumber(old) < ends then redis.call('ZADD', KEYS[1], ends, ARGV[2]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('PTTL', KEYS[1]) < want then redis.call('PEXPIRE', KEYS[1], want) end
return 1
"#;

/// KEYS: meta, log. ARGV: max log size, records… Records an invalidation; returns its seq.
const LOG: &str = r#"
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
for i = 2, #ARGV do redis.call('ZADD', KEYS[2], seq, ARGV[i]) end
local n = redis.call('ZCARD', KEYS[2])
local max = tonumber(ARGV[1])
if n > max then
  local dropped = redis.call('ZRANGE', KEYS[2], n - max - 1, n - max - 1, 'WITHSCORES')
  redis.call('HSET', KEYS[1], 'cut', dropped[2])
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - max - 1)
end
return seq
"#;

/// KEYS: meta, log. ARGV: since. Returns `{cut, seq, {records after since…}}`.
const CHECK: &str = r#"
local cut = redis.call('HGET', KEYS[1], 'cut') or '0'
local seq = redis.call('HGET', KEYS[1], 'seq') or '0'
return {tonumber(cut), tonumber(seq), redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')}
"#;

/// Every script of the cache.
#[derive(Debug)]
pub struct Scripts {
    /// See [`LOOKUP`].
    pub lookup: Script,
    /// See [`FILL`].
    pub fill: Script,
    /// See [`REMOVE`].
    pub remove: Script,
    /// See [`UNDO_FILL`].
    pub undo_fill: Script,
    /// See [`RELEASE`].
    pub release: Script,
    /// See [`TAG`].
    pub tag: Script,
    /// See [`LOG`].
    pub log: Script,
    /// See [`CHECK`].
    pub check: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            lookup: Script::new(LOOKUP),
            fill: Script::new(FILL),
            remove: Script::new(REMOVE),
            undo_fill: Script::new(UNDO_FILL),
            release: Script::new(RELEASE),
            tag: Script::new(TAG),
            log: Script::new(LOG),
            check: Script::new(CHECK),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shas_are_sha1_of_the_source() {
        let s = Scripts::default();
        assert_eq!(s.remove.sha.len(), 40);
        assert_eq!(
            Script::new("return 1").sha,
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
        assert!(s.lookup.source.starts_with("local t = redis.call('TIME')"));
    }
}
