"""Lua scripting through upstash-redis: eval, evalsha, script_load, script_exists."""

import hashlib

import pytest
from upstash_redis.errors import UpstashError

ZERO_SHA = "0" * 40


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


async def test_eval(r, k):
    key = k("ev")
    assert await r.eval("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}", keys=[key], args=["hello", "41"]) == [
        key,
        "hello",
        42,
    ]
    assert await r.eval("return redis.call('SET', KEYS[1], ARGV[1])", keys=[key], args=["stored"]) == "OK"
    assert await r.eval("return redis.call('GET', KEYS[1])", keys=[key]) == "stored"
    assert await r.eval("return 'test'") == "test"
    assert await r.eval("return redis.status_reply('FINE')") == "FINE"
    assert await r.eval("return {1, 'two', {3, 'four', {'ü😀'}}}") == [1, "two", [3, "four", ["ü😀"]]]
    assert await r.eval("return nil") is None
    assert await r.eval("return 3.99") == 3
    assert await r.eval("return ARGV[1]", args=[12.5]) == "12.5"


async def test_eval_errors(r, k):
    key = k("everr")
    await r.set(key, "text")
    with pytest.raises(UpstashError, match="value is not an integer or out of range"):
        await r.eval("return redis.call('INCR', KEYS[1])", keys=[key])
    with pytest.raises(UpstashError, match="MYERR custom failure"):
        await r.eval("return redis.error_reply('MYERR custom failure')")
    with pytest.raises(UpstashError, match="NOSCRIPT"):
        await r.evalsha(ZERO_SHA)


async def test_script_load_exists_evalsha(r, k):
    key = k("sha")
    # unique per run, so it can never be cached from elsewhere
    script = f"return {{KEYS[1], ARGV[1], '{k.base}'}}"
    sha = await r.script_load(script)
    assert sha == sha1(script)
    assert await r.script_exists(sha, ZERO_SHA) == [True, False]
    try:
        result = await r.evalsha(sha, keys=[key], args=["arg"])
    except UpstashError as e:
        # another suite sharing this Redis may have run SCRIPT FLUSH in between: load once more
        assert "NOSCRIPT" in str(e)
        assert await r.script_load(script) == sha
        result = await r.evalsha(sha, keys=[key], args=["arg"])
    assert result == [key, "arg", k.base]


async def test_allow_key_locking_flag(r, k):
    key = k("locking")
    script = f"#!lua flags=allow-key-locking\nlocal v = redis.call('INCR', KEYS[1])\nreturn {{v, ARGV[1], '{k.base}'}}"
    client_sha = sha1(script)
    assert await r.script_exists(client_sha) == [False]
    assert await r.eval(script, keys=[key], args=["a"]) == [1, "a", k.base]
    assert await r.script_exists(client_sha) == [True]
    assert await r.evalsha(client_sha, keys=[key], args=["b"]) == [2, "b", k.base]
    assert await r.script_load(script) == client_sha
    assert await r.evalsha(client_sha, keys=[key], args=["c"]) == [3, "c", k.base]
    assert await r.get(key) == "3"
