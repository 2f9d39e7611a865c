"""Every command family through upstash-redis (sync and async, base64 on and off).

Expected values are what the SDK returns against a real Upstash database: strings stay
strings (the Python SDK does not JSON-parse), integers are ints, and commands listed in
upstash_redis.format.FORMATTERS are converted (e.g. SET -> bool, ZSCORE -> float).
"""

import asyncio
import time

import pytest
from upstash_redis.errors import UpstashError
from upstash_redis.utils import GeoSearchResult


async def test_strings(r, k):
    s = k("str")
    assert await r.set(s, "hello") is True
    assert await r.get(s) == "hello"
    assert await r.append(s, " world") == 11
    assert await r.getrange(s, 0, 4) == "hello"
    assert await r.getrange(s, -5, -1) == "world"
    assert await r.strlen(s) == 11
    assert await r.getdel(s) == "hello world"
    assert await r.get(s) is None
    assert await r.getdel(s) is None

    c = k("counter")
    assert await r.incr(c) == 1
    assert await r.incrby(c, 41) == 42
    assert await r.decr(c) == 41
    assert await r.decrby(c, -1) == 42
    assert await r.incrbyfloat(c, 1.5) == 43.5
    assert await r.incrbyfloat(c, -0.25) == 43.25
    assert await r.get(c) == "43.25"
    f = k("float")
    assert await r.incrbyfloat(f, 1e-5) == 1e-5
    assert await r.get(f) == "0.00001"

    word = k("word")
    await r.set(word, "abc")
    with pytest.raises(UpstashError, match="value is not an integer or out of range"):
        await r.incr(word)

    a, b, missing, n = k("a"), k("b"), k("missing"), k("n")
    assert await r.mset({a: "alpha", b: "beta"}) is True
    assert await r.mget(a, b, missing) == ["alpha", "beta", None]
    assert await r.setnx(a, "x") is False
    assert await r.setnx(n, "x") is True
    assert await r.set(a, "y", nx=True) is False
    assert await r.get(a) == "alpha"
    assert await r.set(missing, "y", xx=True) is False
    assert await r.set(a, "gamma", xx=True) is True
    assert await r.set(a, "delta", get=True) == "gamma"
    assert await r.get(a) == "delta"

    # numbers and booleans are sent as JSON types and stored as their text
    num = k("num")
    assert await r.set(num, 12) is True
    assert await r.get(num) == "12"
    assert await r.set(num, 2.5) is True
    assert await r.get(num) == "2.5"
    assert await r.set(num, True) is True
    assert await r.get(num) == "true"

    ex = k("ex")
    assert await r.set(ex, "v", ex=100) is True
    assert 90 < await r.ttl(ex) <= 100
    px = k("px")
    assert await r.set(px, "v", px=50_000) is True
    assert 40_000 < await r.pttl(px) <= 50_000
    short = k("short")
    assert await r.set(short, "v", px=150) is True
    assert await r.get(short) == "v"
    await asyncio.sleep(0.4)
    assert await r.get(short) is None
    nxex = k("nxex")
    assert await r.set(nxex, "first", nx=True, ex=60) is True
    assert await r.set(nxex, "second", nx=True, ex=60) is False
    assert await r.get(nxex) == "first"


async def test_bits(r, k):
    b = k("bits")
    assert await r.setbit(b, 7, 1) == 0
    assert await r.setbit(b, 7, 1) == 1
    assert await r.setbit(b, 9, 1) == 0
    assert await r.getbit(b, 7) == 1
    assert await r.getbit(b, 6) == 0
    assert await r.bitcount(b) == 2
    assert await r.bitcount(b, 0, 0) == 1
    assert await r.bitpos(b, 1) == 7
    assert await r.bitpos(b, 1, 1) == 9
    x, y, dest = k("x"), k("y"), k("dest")
    await r.set(x, "a")
    await r.set(y, "b")
    assert await r.bitop("AND", dest, x, y) == 1
    assert await r.get(dest) == "`"
    assert await r.bitop("OR", dest, x, y) == 1
    assert await r.get(dest) == "c"
    assert await r.bitop("XOR", dest, x, y) == 1
    assert await r.get(dest) == "\x03"


async def test_hashes(r, k):
    h = k("hash")
    assert await r.hset(h, values={"name": "restash", "count": 1, "ratio": 0.5}) == 3
    assert await r.hset(h, "name", "restash") == 0
    assert await r.hget(h, "name") == "restash"
    assert await r.hget(h, "count") == "1"
    assert await r.hget(h, "nope") is None
    assert await r.hgetall(h) == {"name": "restash", "count": "1", "ratio": "0.5"}
    assert await r.hgetall(k("nohash")) == {}
    assert await r.hincrby(h, "count", 2) == 3
    assert await r.hincrby(h, "count", -10) == -7
    assert await r.hincrbyfloat(h, "ratio", 0.25) == 0.75
    assert sorted(await r.hkeys(h)) == ["count", "name", "ratio"]
    assert sorted(await r.hvals(h)) == ["-7", "0.75", "restash"]
    assert await r.hlen(h) == 3
    assert await r.hexists(h, "name") is True
    assert await r.hexists(h, "nope") is False
    assert await r.hmget(h, "name", "count", "nope") == ["restash", "-7", None]
    cursor, fields = await r.hscan(h, 0, match="n*")
    assert cursor == 0
    assert fields == {"name": "restash"}
    assert await r.hdel(h, "count", "nope") == 1
    assert await r.hlen(h) == 2
    assert await r.hdel(h, "name", "ratio") == 2
    assert await r.exists(h) == 0


async def test_lists(r, k):
    l, l2 = k("list"), k("list2")
    assert await r.lpush(l, "b", "a") == 2
    assert await r.rpush(l, "c", "d") == 4
    assert await r.lrange(l, 0, -1) == ["a", "b", "c", "d"]
    assert await r.llen(l) == 4
    assert await r.lindex(l, 1) == "b"
    assert await r.lindex(l, 99) is None
    assert await r.lset(l, 1, "B") is True
    assert await r.linsert(l, "BEFORE", "c", "x") == 5
    assert await r.lpos(l, "c") == 3
    assert await r.lpos(l, "nope") is None
    assert await r.rpush(l, "c") == 6
    assert await r.lpos(l, "c", count=0) == [3, 5]
    assert await r.lrem(l, 0, "c") == 2
    assert await r.lpop(l) == "a"
    assert await r.rpop(l) == "d"
    assert await r.lmove(l, l2, "LEFT", "RIGHT") == "B"
    assert await r.lrange(l2, 0, -1) == ["B"]
    assert await r.rpush(l, "y", "z") == 3
    assert await r.ltrim(l, 1, -1) == "OK"
    assert await r.lrange(l, 0, -1) == ["y", "z"]
    assert await r.lpop(l, 2) == ["y", "z"]
    assert await r.lpop(l) is None
    assert await r.lrange(l, 0, -1) == []


async def test_sets(r, k):
    s1, s2 = k("set1"), k("set2")
    assert await r.sadd(s1, "a", "b", "c") == 3
    assert await r.sadd(s1, "a") == 0
    assert await r.sadd(s2, "b", "c", "d") == 3
    assert sorted(await r.smembers(s1)) == ["a", "b", "c"]
    assert await r.sismember(s1, "a") is True
    assert await r.sismember(s1, "z") is False
    assert await r.smismember(s1, "a", "z", "c") == [True, False, True]
    assert await r.scard(s1) == 3
    assert sorted(await r.sinter(s1, s2)) == ["b", "c"]
    assert sorted(await r.sunion(s1, s2)) == ["a", "b", "c", "d"]
    assert await r.sdiff(s1, s2) == ["a"]
    assert await r.srem(s1, "a", "z") == 1
    assert await r.srandmember(s1) in ("b", "c")
    assert sorted(await r.srandmember(s1, 5)) == ["b", "c"]
    assert await r.spop(s1) in ("b", "c")
    assert await r.scard(s1) == 1
    cursor, members = await r.sscan(s2, 0, match="*")
    assert cursor == 0
    assert sorted(members) == ["b", "c", "d"]


async def test_sorted_sets(r, k):
    z = k("zset")
    assert await r.zadd(z, {"alpha": 1.5, "beta": 2, "gamma": -0.25}) == 3
    assert await r.zscore(z, "alpha") == 1.5
    assert await r.zscore(z, "nope") is None
    assert await r.zrange(z, 0, -1) == ["gamma", "alpha", "beta"]
    assert await r.zrange(z, 0, -1, withscores=True) == [("gamma", -0.25), ("alpha", 1.5), ("beta", 2.0)]
    assert await r.zrange(z, 0, -1, rev=True) == ["beta", "alpha", "gamma"]
    assert await r.zrange(z, 0, "+inf", sortby="BYSCORE") == ["alpha", "beta"]
    assert await r.zrange(z, "-inf", "+inf", sortby="BYSCORE", offset=1, count=1) == ["alpha"]
    assert await r.zrank(z, "beta") == 2
    assert await r.zrank(z, "nope") is None
    assert await r.zcard(z) == 3
    assert await r.zcount(z, 0, 2) == 2
    assert await r.zcount(z, "-inf", "+inf") == 3
    assert await r.zincrby(z, 1.25, "alpha") == 2.75
    assert await r.zmscore(z, ["alpha", "nope", "gamma"]) == [2.75, None, -0.25]
    assert await r.zrangebyscore(z, "-inf", "(2.75", withscores=True) == [("gamma", -0.25), ("beta", 2.0)]
    assert await r.zrevrangebyscore(z, "+inf", 0) == ["alpha", "beta"]
    assert await r.zpopmin(z) == [("gamma", -0.25)]
    assert await r.zrem(z, "beta", "nope") == 1
    assert await r.zcard(z) == 1

    z1, z2, u, i = k("z1"), k("z2"), k("union"), k("inter")
    await r.zadd(z1, {"a": 1, "b": 2})
    await r.zadd(z2, {"b": 10, "c": 0.5})
    assert await r.zunionstore(u, [z1, z2]) == 3
    assert await r.zrange(u, 0, -1, withscores=True) == [("c", 0.5), ("a", 1.0), ("b", 12.0)]
    assert await r.zinterstore(i, [z1, z2], weights=[2, 0.5]) == 1
    assert await r.zrange(i, 0, -1, withscores=True) == [("b", 9.0)]


async def test_geo(r, k):
    g = k("geo")
    assert await r.geoadd(g, (13.361389, 38.115556, "Palermo"), (15.087269, 37.502669, "Catania")) == 2
    pos = await r.geopos(g, "Palermo", "nowhere")
    assert pos[1] is None
    assert abs(pos[0][0] - 13.361389) < 1e-5 and abs(pos[0][1] - 38.115556) < 1e-5
    assert await r.geodist(g, "Palermo", "Catania", "KM") == 166.2742
    assert await r.geodist(g, "Palermo", "Catania") == 166274.1516
    assert await r.geodist(g, "Palermo", "nowhere") is None
    assert await r.geohash(g, "Palermo", "Catania") == ["sqc8b49rny0", "sqdtr74hyu0"]
    assert await r.geosearch(g, longitude=15, latitude=37, radius=200, unit="KM", order="ASC") == [
        "Catania",
        "Palermo",
    ]
    assert await r.geosearch(
        g, longitude=15, latitude=37, radius=200, unit="KM", order="ASC", withdist=True
    ) == [GeoSearchResult("Catania", distance=56.4413), GeoSearchResult("Palermo", distance=190.4424)]
    res = await r.geosearch(g, member="Palermo", radius=200, unit="KM", order="DESC", count=1, withcoord=True)
    assert len(res) == 1 and res[0].member == "Catania"
    assert abs(res[0].longitude - 15.087269) < 1e-5 and abs(res[0].latitude - 37.502669) < 1e-5


async def test_hyperloglog(r, k):
    h1, h2, h3 = k("hll1"), k("hll2"), k("hll3")
    assert await r.pfadd(h1, "a", "b", "c") is True
    assert await r.pfadd(h1, "a") is False
    assert await r.pfcount(h1) == 3
    assert await r.pfadd(h2, "c", "d") is True
    assert await r.pfcount(h1, h2) == 4
    assert await r.pfmerge(h3, h1, h2) is True
    assert await r.pfcount(h3) == 4


async def test_streams(r, k):
    s = k("stream")
    assert await r.xadd(s, "1-1", {"field": "one", "n": 1}) == "1-1"
    assert await r.xadd(s, "2-1", {"field": "two", "n": 2}) == "2-1"
    assert await r.xadd(s, "3-1", {"field": "three", "n": 3}) == "3-1"
    auto = await r.xadd(s, "*", {"field": "four"})
    first, _, second = auto.partition("-")
    assert first.isdigit() and second.isdigit()
    assert await r.xlen(s) == 4
    assert await r.xrange(s, count=2) == [["1-1", ["field", "one", "n", "1"]], ["2-1", ["field", "two", "n", "2"]]]
    assert [e[0] for e in await r.xrange(s)] == ["1-1", "2-1", "3-1", auto]
    assert await r.xrevrange(s, count=1) == [[auto, ["field", "four"]]]
    assert await r.xread({s: "2-1"}) == [[s, [["3-1", ["field", "three", "n", "3"]], [auto, ["field", "four"]]]]]
    assert await r.xread({s: auto}) == []
    assert await r.xgroup_create(s, "grp", "0") == "OK"
    assert await r.xreadgroup("grp", "c1", {s: ">"}, count=2) == [
        [s, [["1-1", ["field", "one", "n", "1"]], ["2-1", ["field", "two", "n", "2"]]]]
    ]
    summary = await r.xpending(s, "grp")
    assert summary[0] == 2 and summary[1] == "1-1" and summary[2] == "2-1" and summary[3] == [["c1", "2"]]
    pending = await r.xpending(s, "grp", "-", "+", 10)
    assert [(p[0], p[1], p[3]) for p in pending] == [("1-1", "c1", 1), ("2-1", "c1", 1)]
    assert isinstance(pending[0][2], int)
    assert await r.xack(s, "grp", "1-1", "2-1", "9-9") == 2
    assert await r.xpending(s, "grp", "-", "+", 10) == []
    assert await r.xdel(s, "1-1", "9-9") == 1
    assert await r.xlen(s) == 3
    assert await r.xtrim(s, maxlen=1, approximate=False) == 2
    assert [e[0] for e in await r.xrange(s)] == [auto]


async def test_keys_and_types(r, k):
    k1, k2, k3, k4, k5, missing = (k(n) for n in ("k1", "k2", "k3", "k4", "k5", "missing"))
    assert await r.mset({k1: "one", k2: "two"}) is True
    assert await r.exists(k1, k2, missing) == 2
    assert await r.type(k1) == "string"
    assert await r.type(missing) == "none"
    typed = {"list": k("tl"), "hash": k("th"), "set": k("ts"), "zset": k("tz"), "stream": k("tx")}
    await r.rpush(typed["list"], "x")
    await r.hset(typed["hash"], "f", "v")
    await r.sadd(typed["set"], "m")
    await r.zadd(typed["zset"], {"m": 1})
    await r.xadd(typed["stream"], "*", {"f": "v"})
    for type_name, key in typed.items():
        assert await r.type(key) == type_name
    assert await r.rename(k1, k3) is True
    assert await r.exists(k1) == 0
    assert await r.get(k3) == "one"
    assert await r.renamenx(k3, k2) is False
    assert await r.renamenx(k3, k4) is True
    assert await r.copy(k4, k5) is True
    assert await r.copy(k2, k5) is False
    assert await r.copy(k2, k5, replace=True) is True
    assert await r.get(k5) == "two"
    assert await r.touch(k2, k4, missing) == 2
    assert await r.delete(k2, missing) == 1
    assert await r.unlink(k4, k5, missing) == 2
    assert await r.exists(k2, k4, k5) == 0
    with pytest.raises(UpstashError, match="no such key"):
        await r.rename(missing, k1)


async def test_expiry(r, k):
    e, p, at, missing = k("exp"), k("pexp"), k("expat"), k("missing")
    for key in (e, p, at):
        await r.set(key, "v")
    assert await r.ttl(e) == -1
    assert await r.ttl(missing) == -2
    assert await r.expire(e, 100) is True
    assert await r.expire(missing, 100) is False
    assert 90 < await r.ttl(e) <= 100
    assert await r.pexpire(p, 100_000) is True
    assert 90_000 < await r.pttl(p) <= 100_000
    assert await r.persist(e) is True
    assert await r.persist(e) is False
    assert await r.ttl(e) == -1
    assert await r.expireat(at, int(time.time()) + 200) is True
    assert 190 < await r.ttl(at) <= 201
    assert await r.pexpire(p, 100) is True
    await asyncio.sleep(0.35)
    assert await r.exists(p) == 0


async def test_keys_scan_dbsize(r, k):
    names = [k(f"s{i}") for i in range(25)]
    await r.mset({n: f"v{i}" for i, n in enumerate(names)})
    assert sorted(await r.keys(k.pattern)) == sorted(names)
    seen = set()
    cursor = 0
    while True:
        cursor, keys = await r.scan(cursor, match=k.pattern, count=100)
        assert isinstance(cursor, int)
        seen.update(keys)
        if cursor == 0:
            break
    assert sorted(seen) == sorted(names)
    seen_typed = set()
    cursor = 0
    while True:
        cursor, keys = await r.scan(cursor, match=k.pattern, count=100, type="string")
        seen_typed.update(keys)
        if cursor == 0:
            break
    assert sorted(seen_typed) == sorted(names)
    size = await r.dbsize()
    assert isinstance(size, int) and size >= len(names)
