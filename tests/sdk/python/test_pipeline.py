"""pipeline() and multi() through upstash-redis (sync and async, base64 on and off)."""

import pytest
from upstash_redis.errors import UpstashError


async def test_pipeline_results_in_order(r, k):
    p_key, h, l = k("p"), k("ph"), k("pl")
    p = r.pipeline()
    p.set(p_key, "1").incr(p_key).incrby(p_key, 40).get(p_key)
    p.hset(h, "field", "value").hgetall(h)
    p.rpush(l, "abcd", "test").lrange(l, 0, -1)
    p.type(p_key).ping().echo("hello").exists(p_key, k("nope"))
    p.zadd(k("pz"), {"m": 1.5}).zscore(k("pz2"), "m")
    assert await p.exec() == [
        True, 2, 42, "42",
        1, {"field": "value"},
        2, ["abcd", "test"],
        "string", "PONG", "hello", 1,
        1, None,
    ]


async def test_pipeline_error_item_raises(r, k):
    key = k("pe")
    p = r.pipeline()
    p.set(key, "not a number")
    p.incr(key)
    p.get(key)
    with pytest.raises(UpstashError, match="value is not an integer or out of range"):
        await p.exec()
    # the commands around the failing one still ran
    assert await r.get(key) == "not a number"


async def test_pipeline_many_commands(r, k):
    keys = [k(f"m{i}") for i in range(300)]
    p = r.pipeline()
    for i, key in enumerate(keys):
        p.set(key, f"value-{i}-ü")
    for key in keys:
        p.get(key)
    res = await p.exec()
    assert res[:300] == [True] * 300
    assert res[300:] == [f"value-{i}-ü" for i in range(300)]


async def test_multi_transaction(r, k):
    key, s = k("tx"), k("txs")
    tx = r.multi()
    tx.set(key, "a")
    tx.append(key, "bc")
    tx.get(key)
    tx.sadd(s, "x", "y")
    tx.scard(s)
    tx.delete(s)
    assert await tx.exec() == [True, 3, "abc", 2, 2, 1]
    assert await r.get(key) == "abc"


async def test_multi_runtime_error(r, k):
    key = k("txe")
    tx = r.multi()
    tx.set(key, "word")
    tx.incr(key)
    tx.append(key, "s")
    with pytest.raises(UpstashError, match="value is not an integer or out of range"):
        await tx.exec()
    # Redis semantics: the other commands of the transaction still ran
    assert await r.get(key) == "words"
