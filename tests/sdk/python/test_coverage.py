"""The upstash-redis command methods the other test files do not call (sync and async, base64 on and off).

Expected values are what the SDK returns against a real Upstash database (see test_commands.py).
Not covered here: the ``json`` family (needs the RedisJSON module), ``search`` (an Upstash-only
module), ``flushall``/``flushdb`` (the suite never flushes a database other suites may share), and
the commands Redis 7.0 does not have: ``client_setinfo`` (7.2), ``hexpire``/``hpexpire``/
``hexpireat``/``hpexpireat``/``httl``/``hpttl``/``hexpiretime``/``hpexpiretime``/``hpersist`` (7.4),
``hgetdel``/``hgetex``/``hsetex`` (8.0), ``xackdel``/``xdelex`` (8.2).
"""

import hashlib
import inspect
import time

import pytest
from upstash_redis.errors import UpstashError
from upstash_redis.utils import GeoSearchResult

from conftest import make_client, RO_TOKEN


async def resolved(value):
    if inspect.isawaitable(value):
        return await value
    return value


def pairs_to_dict(flat):
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


async def test_strings_more(r, k):
    s, pad, missing = k("s"), k("pad"), k("missing")
    assert await r.getset(s, "one") is None
    assert await r.getset(s, "two") == "one"
    assert await r.setrange(s, 1, "XYZ") == 4
    assert await r.get(s) == "tXYZ"
    assert await r.substr(s, 1, 2) == "XY"
    assert await r.substr(s, -2, -1) == "YZ"
    assert await r.setrange(pad, 3, "ab") == 5
    assert await r.get(pad) == "\x00\x00\x00ab"

    assert await r.getex(s) == "tXYZ"
    assert await r.ttl(s) == -1
    assert await r.getex(s, ex=100) == "tXYZ"
    assert 90 < await r.ttl(s) <= 100
    assert await r.getex(s, px=50_000) == "tXYZ"
    assert 40_000 < await r.pttl(s) <= 50_000
    assert await r.getex(s, exat=int(time.time()) + 200) == "tXYZ"
    assert 190 < await r.ttl(s) <= 201
    assert await r.getex(s, pxat=int(time.time() * 1000) + 300_000) == "tXYZ"
    assert 290_000 < await r.pttl(s) <= 300_000
    assert await r.getex(s, persist=True) == "tXYZ"
    assert await r.ttl(s) == -1
    assert await r.getex(missing) is None

    e, p = k("setex"), k("psetex")
    assert await r.setex(e, 100, "v") is True
    assert 90 < await r.ttl(e) <= 100
    assert await r.psetex(p, 100_000, "ü") is True
    assert await r.get(p) == "ü"
    assert 90_000 < await r.pttl(p) <= 100_000
    with pytest.raises(UpstashError, match="invalid expire time in 'setex' command"):
        await r.setex(e, 0, "v")

    a, b, c = k("a"), k("b"), k("c")
    assert await r.msetnx({a: "1", b: "2"}) is True
    assert await r.msetnx({b: "x", c: "y"}) is False
    assert await r.mget(a, b, c) == ["1", "2", None]

    now_ms = int(time.time() * 1000)
    assert await r.pexpireat(a, now_ms + 100_000) is True
    assert 90_000 < await r.pttl(a) <= 100_000
    assert await r.pexpireat(a, now_ms + 200_000, nx=True) is False
    assert await r.pexpireat(a, now_ms + 200_000, gt=True) is True
    assert 190_000 < await r.pttl(a) <= 200_000
    assert await r.pexpireat(missing, now_ms + 100_000) is False


async def test_server_commands(r, k):
    secs, micros = await r.time()
    assert isinstance(secs, int) and isinstance(micros, int)
    assert abs(secs - time.time()) < 10
    assert 0 <= micros < 1_000_000

    key = k("rk")
    await r.set(key, "v")
    rk = await r.randomkey()
    assert isinstance(rk, str) and rk != ""

    assert await r.publish(k("channel"), "nobody listens") == 0


async def test_bitfield(r, k):
    b = k("bf")
    bf = await r.bitfield(b)
    bf.set("u8", 0, 200).get("u8", 0).incrby("u8", 0, 100)
    bf.overflow("SAT").incrby("u8", 0, 100)
    bf.overflow("FAIL").incrby("u8", 0, 200)
    assert await resolved(bf.execute()) == [0, 200, 44, 144, None]
    assert await resolved((await r.bitfield(b)).set("i8", "#1", -5).get("i8", "#1").execute()) == [0, -5]
    ro = (await r.bitfield_ro(b)).get("u8", 0).get("i8", 0).get("i8", 8)
    assert await resolved(ro.execute()) == [144, -112, -5]
    assert await resolved((await r.bitfield_ro(k("nobf"))).get("u16", 0).execute()) == [0]


async def test_hashes_more(r, k):
    h = k("h")
    assert await r.hmset(h, {"a": "1", "b": "two"}) is True
    assert await r.hsetnx(h, "a", "x") is False
    assert await r.hsetnx(h, "c", "ü😀") is True
    assert await r.hget(h, "a") == "1"
    assert await r.hstrlen(h, "b") == 3
    assert await r.hstrlen(h, "c") == 6
    assert await r.hstrlen(h, "nope") == 0
    assert await r.hrandfield(h) in ("a", "b", "c")
    assert sorted(await r.hrandfield(h, 5)) == ["a", "b", "c"]
    assert await r.hrandfield(h, 5, withvalues=True) == {"a": "1", "b": "two", "c": "ü😀"}
    assert len(await r.hrandfield(h, -5)) == 5
    nohash = k("nohash")
    assert await r.hrandfield(nohash) is None
    assert await r.hrandfield(nohash, 2) == []


async def test_lists_more(r, k):
    l, l2, missing = k("l"), k("l2"), k("missing")
    assert await r.lpushx(missing, "a") == 0
    assert await r.rpushx(missing, "a") == 0
    assert await r.exists(missing) == 0
    await r.rpush(l, "m")
    assert await r.lpushx(l, "b", "a") == 3
    assert await r.rpushx(l, "y", "z") == 5
    assert await r.lrange(l, 0, -1) == ["a", "b", "m", "y", "z"]
    assert await r.rpoplpush(l, l2) == "z"
    assert await r.rpoplpush(l, l) == "y"
    assert await r.lrange(l, 0, -1) == ["y", "a", "b", "m"]
    assert await r.lrange(l2, 0, -1) == ["z"]
    assert await r.rpoplpush(missing, l2) is None


async def test_sets_more(r, k):
    s1, s2, d, missing = k("s1"), k("s2"), k("dest"), k("missing")
    await r.sadd(s1, "a", "b", "c")
    await r.sadd(s2, "b", "c", "d")
    assert await r.sinterstore(d, s1, s2) == 2
    assert sorted(await r.smembers(d)) == ["b", "c"]
    assert await r.sunionstore(d, s1, s2) == 4
    assert sorted(await r.smembers(d)) == ["a", "b", "c", "d"]
    assert await r.sdiffstore(d, s1, s2) == 1
    assert await r.smembers(d) == ["a"]
    assert await r.sdiffstore(d, missing, s1) == 0
    assert await r.exists(d) == 0
    assert await r.smove(s1, s2, "a") is True
    assert await r.smove(s1, s2, "a") is False
    assert sorted(await r.smembers(s2)) == ["a", "b", "c", "d"]
    assert sorted(await r.smembers(s1)) == ["b", "c"]


async def test_sorted_sets_more(r, k):
    z, missing = k("z"), k("missing")
    await r.zadd(z, {"a": 1, "b": 2, "c": 3, "d": 4})
    assert await r.zrevrange(z, 0, 1) == ["d", "c"]
    assert await r.zrevrange(z, 0, 1, withscores=True) == [("d", 4.0), ("c", 3.0)]
    assert await r.zrevrank(z, "d") == 0
    assert await r.zrevrank(z, "a") == 3
    assert await r.zrevrank(z, "nope") is None
    assert await r.zpopmax(z) == [("d", 4.0)]
    assert await r.zpopmax(z, 2) == [("c", 3.0), ("b", 2.0)]
    assert await r.zpopmax(missing) == []
    await r.zadd(z, {"b": 2, "c": -3.5})
    assert await r.zrandmember(z) in ("a", "b", "c")
    assert sorted(await r.zrandmember(z, 5)) == ["a", "b", "c"]
    assert sorted(await r.zrandmember(z, 5, withscores=True)) == [("a", 1.0), ("b", 2.0), ("c", -3.5)]
    assert len(await r.zrandmember(z, -5)) == 5
    assert await r.zrandmember(missing) is None
    cursor, members = await r.zscan(z, 0, match="*", count=100)
    assert cursor == 0
    assert members == [("c", -3.5), ("a", 1.0), ("b", 2.0)]
    assert await r.zscan(missing, 0) == (0, [])

    lx, dst = k("lex"), k("dst")
    await r.zadd(lx, {"a": 0, "b": 0, "c": 0, "d": 0, "e": 0})
    assert await r.zlexcount(lx, "-", "+") == 5
    assert await r.zlexcount(lx, "[b", "(d") == 2
    assert await r.zrangebylex(lx, "-", "[c") == ["a", "b", "c"]
    assert await r.zrangebylex(lx, "(a", "+", offset=1, count=2) == ["c", "d"]
    assert await r.zrevrangebylex(lx, "+", "(c") == ["e", "d"]
    assert await r.zrevrangebylex(lx, "[d", "-", offset=1, count=1) == ["c"]
    assert await r.zremrangebylex(lx, "[a", "[b") == 2
    assert await r.zrangestore(dst, lx, 0, -1) == 3
    assert await r.zrange(dst, 0, -1) == ["c", "d", "e"]
    assert await r.zrangestore(dst, lx, "[d", "+", sortby="BYLEX") == 2
    assert await r.zrange(dst, 0, -1) == ["d", "e"]
    assert await r.zrangestore(dst, z, "+inf", 0, sortby="BYSCORE", rev=True, offset=0, count=1) == 1
    assert await r.zrange(dst, 0, -1, withscores=True) == [("b", 2.0)]

    z1, z2 = k("z1"), k("z2")
    await r.zadd(z1, {"a": 1, "b": 2, "c": 3})
    await r.zadd(z2, {"b": 10, "d": 5})
    assert await r.zdiff([z1, z2]) == ["a", "c"]
    assert await r.zdiff([z1, z2], withscores=True) == [("a", 1.0), ("c", 3.0)]
    assert await r.zdiffstore(dst, [z1, z2]) == 2
    assert await r.zrange(dst, 0, -1) == ["a", "c"]
    assert await r.zinter([z1, z2]) == ["b"]
    assert await r.zinter([z1, z2], withscores=True) == [("b", 12.0)]
    assert await r.zinter([z1, z2], aggregate="MAX", withscores=True) == [("b", 10.0)]
    assert await r.zinter([z1, z2], weights=[2, 0.5], withscores=True) == [("b", 9.0)]
    assert await r.zunion([z1, z2]) == ["a", "c", "d", "b"]
    assert await r.zunion([z1, z2], withscores=True) == [("a", 1.0), ("c", 3.0), ("d", 5.0), ("b", 12.0)]
    assert await r.zunion([z1, z2], aggregate="MIN", withscores=True) == [
        ("a", 1.0),
        ("b", 2.0),
        ("c", 3.0),
        ("d", 5.0),
    ]
    assert await r.zremrangebyrank(z1, 0, 0) == 1
    assert await r.zremrangebyscore(z1, "(2", "+inf") == 1
    assert await r.zrange(z1, 0, -1, withscores=True) == [("b", 2.0)]
    assert await r.zremrangebyscore(z1, 0, 10) == 1
    assert await r.exists(z1) == 0


CATANIA = GeoSearchResult(
    "Catania", distance=56.4413, hash=3479447370796909, longitude=15.08726745843887329, latitude=37.50266842333162032
)
AGRIGENTO = GeoSearchResult(
    "Agrigento", distance=130.4235, hash=3479030013248308, longitude=13.5833314061164856, latitude=37.31666804993816555
)


async def test_geo_radius_and_store(r, k):
    g, dst, dst2 = k("geo"), k("gdst"), k("gdst2")
    assert await r.geoadd(
        g,
        (13.361389, 38.115556, "Palermo"),
        (15.087269, 37.502669, "Catania"),
        (13.583333, 37.316667, "Agrigento"),
    ) == 3
    assert await r.georadius(g, 15, 37, 200, "KM", order="ASC") == ["Catania", "Agrigento", "Palermo"]
    assert await r.georadius(
        g, 15, 37, 200, "KM", withdist=True, withhash=True, withcoord=True, count=2, order="ASC"
    ) == [CATANIA, AGRIGENTO]
    assert await r.georadius_ro(g, 15, 37, 100, "KM", withdist=True) == [GeoSearchResult("Catania", distance=56.4413)]
    assert await r.georadius_ro(g, 15, 37, 200, "KM", withhash=True, count=1, order="ASC") == [
        GeoSearchResult("Catania", hash=3479447370796909)
    ]
    assert len(await r.georadius_ro(g, 15, 37, 200, "KM", count=1, any=True)) == 1
    assert await r.georadiusbymember(g, "Agrigento", 100, "KM", withdist=True, order="ASC") == [
        GeoSearchResult("Agrigento", distance=0.0),
        GeoSearchResult("Palermo", distance=90.9778),
    ]
    assert await r.georadiusbymember_ro(g, "Agrigento", 100, "KM", order="DESC") == ["Palermo", "Agrigento"]
    assert await r.georadiusbymember_ro(g, "Catania", 10, "KM", withcoord=True) == [
        GeoSearchResult("Catania", longitude=15.08726745843887329, latitude=37.50266842333162032)
    ]

    assert await r.georadius(g, 15, 37, 200, "KM", store=dst) == 3
    assert await r.zrange(dst, 0, -1, withscores=True) == [
        ("Agrigento", 3479030013248308.0),
        ("Palermo", 3479099956230698.0),
        ("Catania", 3479447370796909.0),
    ]
    assert await r.georadiusbymember(g, "Palermo", 100, "KM", storedist=dst2) == 2
    stored = await r.zrange(dst2, 0, -1, withscores=True)
    assert [m for m, _ in stored] == ["Palermo", "Agrigento"]
    assert stored[0][1] == 0.0 and abs(stored[1][1] - 90.9778) < 1e-3

    assert await r.geosearchstore(
        dst, g, longitude=15, latitude=37, width=400, height=400, unit="KM", order="ASC", count=2, storedist=True
    ) == 2
    stored = await r.zrange(dst, 0, -1, withscores=True)
    assert [m for m, _ in stored] == ["Catania", "Agrigento"]
    assert abs(stored[0][1] - 56.441257870158204) < 1e-9 and abs(stored[1][1] - 130.42348706714702) < 1e-9
    assert await r.geosearchstore(dst, g, member="Palermo", radius=300, unit="KM") == 3
    assert await r.zscore(dst, "Palermo") == 3479099956230698.0
    assert await r.geosearchstore(dst, g, longitude=0, latitude=0, radius=1, unit="M") == 0
    assert await r.exists(dst) == 0


async def test_stream_groups(r, k):
    s = k("stream")
    await r.xadd(s, "1-1", {"f": "one"})
    await r.xadd(s, "2-1", {"f": "two"})
    await r.xadd(s, "3-1", {"f": "three"})
    assert await r.xinfo_groups(s) == []
    assert await r.xgroup_create(s, "grp", "0") == "OK"
    assert await r.xgroup_createconsumer(s, "grp", "alice") == 1
    assert await r.xreadgroup("grp", "bob", {s: ">"}, count=2) == [
        [s, [["1-1", ["f", "one"]], ["2-1", ["f", "two"]]]]
    ]

    groups = await r.xinfo_groups(s)
    assert len(groups) == 1
    group = pairs_to_dict(groups[0])
    assert group["name"] == "grp"
    assert group["consumers"] == 2
    assert group["pending"] == 2
    assert group["last-delivered-id"] == "2-1"

    consumers = sorted((pairs_to_dict(c) for c in await r.xinfo_consumers(s, "grp")), key=lambda c: c["name"])
    assert [(c["name"], c["pending"]) for c in consumers] == [("alice", 0), ("bob", 2)]
    assert all(isinstance(c["idle"], int) for c in consumers)

    assert await r.xclaim(s, "grp", "alice", 0, "1-1") == [["1-1", ["f", "one"]]]
    assert await r.xclaim(s, "grp", "alice", 0, "2-1", "9-9", justid=True) == ["2-1"]
    assert await r.xautoclaim(s, "grp", "bob", 0, "0-0", count=1) == ["2-1", [["1-1", ["f", "one"]]], []]
    assert await r.xautoclaim(s, "grp", "bob", 0, "0-0", justid=True) == ["0-0", ["1-1", "2-1"], []]
    assert await r.xdel(s, "2-1") == 1
    assert await r.xautoclaim(s, "grp", "alice", 0, "0-0") == ["0-0", [["1-1", ["f", "one"]]], ["2-1"]]

    assert await r.xgroup_setid(s, "grp", "0") == "OK"
    assert await r.xgroup_setid(s, "grp", "$", entries_read=3) == "OK"
    assert pairs_to_dict((await r.xinfo_groups(s))[0])["last-delivered-id"] == "3-1"
    assert await r.xgroup_delconsumer(s, "grp", "bob") == 0
    assert await r.xgroup_delconsumer(s, "grp", "alice") == 1
    assert await r.xinfo_consumers(s, "grp") == []
    assert await r.xgroup_destroy(s, "grp") == 1
    assert await r.xgroup_destroy(s, "grp") == 0
    assert await r.xinfo_groups(s) == []


async def test_evalsha_ro_and_script_flush(r, k):
    key = k("ro")
    await r.set(key, "value")
    script = f"return {{redis.call('GET', KEYS[1]), ARGV[1], '{k.base}'}}"
    sha = await r.script_load(script)
    assert await r.evalsha_ro(sha, keys=[key], args=["arg"]) == ["value", "arg", k.base]
    ro = make_client(r.kind, r.encoding, token=RO_TOKEN)
    try:
        assert await ro.evalsha_ro(sha, keys=[key], args=["x"]) == ["value", "x", k.base]
    finally:
        await ro.close()
    # restash strips Upstash's allow-key-locking flag and maps the client's SHA1 to Redis' one
    locking = f"#!lua flags=no-writes,allow-key-locking\nreturn {{redis.call('GET', KEYS[1]), '{k.base}'}}"
    locking_sha = await r.script_load(locking)
    assert locking_sha == hashlib.sha1(locking.encode()).hexdigest()
    assert await r.evalsha_ro(locking_sha, keys=[key]) == ["value", k.base]
    writer = await r.script_load(f"return redis.call('SET', KEYS[1], '{k.base}')")
    with pytest.raises(UpstashError, match="Write commands are not allowed from read-only scripts"):
        await r.evalsha_ro(writer, keys=[key])
    assert await r.get(key) == "value"

    assert await r.script_flush() is True
    assert await r.script_exists(sha, writer, locking_sha) == [False, False, False]
    with pytest.raises(UpstashError, match="NOSCRIPT"):
        await r.evalsha_ro(sha, keys=[key])
    assert await r.script_flush("SYNC") is True
    assert await r.script_flush("ASYNC") is True


async def test_read_only_token_on_new_commands(r, k):
    z, h, g, s = k("z"), k("h"), k("geo"), k("s")
    await r.zadd(z, {"a": 1, "b": 2})
    await r.hset(h, "f", "value")
    await r.geoadd(g, (15.087269, 37.502669, "Catania"))
    await r.set(s, "hello")
    ro = make_client(r.kind, r.encoding, token=RO_TOKEN)
    try:
        assert await ro.zrevrange(z, 0, -1, withscores=True) == [("b", 2.0), ("a", 1.0)]
        assert await ro.zrandmember(z, 2, withscores=True) in ([("a", 1.0), ("b", 2.0)], [("b", 2.0), ("a", 1.0)])
        assert await ro.zscan(z, 0) == (0, [("a", 1.0), ("b", 2.0)])
        assert await ro.zunion([z], withscores=True) == [("a", 1.0), ("b", 2.0)]
        assert await ro.hrandfield(h, 1, withvalues=True) == {"f": "value"}
        assert await ro.hstrlen(h, "f") == 5
        assert await ro.substr(s, 0, 3) == "hell"
        assert await ro.georadius_ro(g, 15, 37, 100, "KM") == ["Catania"]
        assert await ro.georadiusbymember_ro(g, "Catania", 1, "KM") == ["Catania"]
        assert await resolved((await ro.bitfield_ro(s)).get("u8", 0).execute()) == [ord("h")]
        with pytest.raises(UpstashError, match="NOPERM"):
            await ro.getex(s, ex=10)
        with pytest.raises(UpstashError, match="NOPERM"):
            await ro.zrangestore(k("dst"), z, 0, -1)
        with pytest.raises(UpstashError, match="NOPERM"):
            await ro.script_flush()
    finally:
        await ro.close()
    assert await r.ttl(s) == -1
