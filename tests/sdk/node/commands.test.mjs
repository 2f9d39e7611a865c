// Every command family through @upstash/redis, once with the SDK's default options
// (auto-pipelining + base64 responses) and once with `responseEncoding: false`.
// Expected values are what the SDK returns from a real Upstash database (its default
// `automaticDeserialization` JSON-parses strings that are JSON, e.g. "2" -> 2, "1.5" -> 1.5).
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { clientConfigs, escapeGlob, namespace, rejection, sleep } from "./helpers.mjs";

for (const config of clientConfigs()) {
  describe(`commands, ${config.name}`, () => {
    const ns = namespace(config.name.startsWith("default") ? "cmd-b64" : "cmd-raw");
    const r = config.make();
    after(() => ns.cleanup());

    test("strings: set/get/append/getrange/strlen/getdel", async () => {
      const k = ns.key("str");
      assert.equal(await r.set(k, "hello"), "OK");
      assert.equal(await r.get(k), "hello");
      assert.equal(await r.append(k, " world"), 11);
      assert.equal(await r.getrange(k, 0, 4), "hello");
      assert.equal(await r.getrange(k, -5, -1), "world");
      assert.equal(await r.strlen(k), 11);
      assert.equal(await r.getdel(k), "hello world");
      assert.equal(await r.get(k), null);
      assert.equal(await r.getdel(k), null);
      assert.equal(await r.strlen(k), 0);
    });

    test("strings: incr/incrby/decr/incrbyfloat", async () => {
      const c = ns.key("counter");
      assert.equal(await r.incr(c), 1);
      assert.equal(await r.incrby(c, 41), 42);
      assert.equal(await r.decr(c), 41);
      assert.equal(await r.decrby(c, -1), 42);
      assert.equal(await r.incrbyfloat(c, 1.5), 43.5);
      assert.equal(await r.incrbyfloat(c, -0.25), 43.25);
      assert.equal(await r.get(c), 43.25);
      const f = ns.key("float");
      assert.equal(await r.incrbyfloat(f, 0.5), 0.5);
      assert.equal(await r.incrbyfloat(f, 1e-5), 0.50001);
      // JSON.stringify(1e-7) is "1e-7": the exponent form must reach Redis as sent
      const g = ns.key("tiny");
      assert.equal(Number(await r.incrbyfloat(g, 1e-7)), 1e-7);
      assert.equal(await r.get(g), "0.0000001");
      const word = ns.key("word");
      await r.set(word, "abc");
      const e = await rejection(() => r.incr(word));
      assert.match(String(e.message), /ERR value is not an integer or out of range/);
      assert.equal(await r.get(word), "abc");
    });

    test("strings: mset/mget/setnx and set with nx/xx/get/ex/px", async () => {
      const [a, b, missing, n] = [ns.key("a"), ns.key("b"), ns.key("missing"), ns.key("n")];
      assert.equal(await r.mset({ [a]: "alpha", [b]: "beta" }), "OK");
      assert.deepEqual(await r.mget(a, b, missing), ["alpha", "beta", null]);
      assert.deepEqual(await r.mget([a, b]), ["alpha", "beta"]);
      assert.equal(await r.setnx(a, "x"), 0);
      assert.equal(await r.setnx(n, "x"), 1);
      assert.equal(await r.get(n), "x");
      assert.equal(await r.set(a, "y", { nx: true }), null);
      assert.equal(await r.get(a), "alpha");
      assert.equal(await r.set(missing, "y", { xx: true }), null);
      assert.equal(await r.get(missing), null);
      assert.equal(await r.set(a, "gamma", { xx: true }), "OK");
      assert.equal(await r.set(a, "delta", { get: true }), "gamma");
      assert.equal(await r.get(a), "delta");

      const ex = ns.key("ex");
      assert.equal(await r.set(ex, "v", { ex: 100 }), "OK");
      const ttl = await r.ttl(ex);
      assert.ok(ttl > 90 && ttl <= 100, `ttl ${ttl}`);
      const px = ns.key("px");
      assert.equal(await r.set(px, "v", { px: 50_000 }), "OK");
      const pttl = await r.pttl(px);
      assert.ok(pttl > 40_000 && pttl <= 50_000, `pttl ${pttl}`);
      const short = ns.key("short");
      assert.equal(await r.set(short, "v", { px: 150 }), "OK");
      assert.equal(await r.get(short), "v");
      await sleep(400);
      assert.equal(await r.get(short), null);
      const nxex = ns.key("nxex");
      assert.equal(await r.set(nxex, "first", { nx: true, ex: 60 }), "OK");
      assert.equal(await r.set(nxex, "second", { nx: true, ex: 60 }), null);
      assert.equal(await r.get(nxex), "first");
    });

    test("bits: setbit/getbit/bitcount/bitpos/bitop", async () => {
      const b = ns.key("bits");
      assert.equal(await r.setbit(b, 7, 1), 0);
      assert.equal(await r.setbit(b, 7, 1), 1);
      assert.equal(await r.setbit(b, 9, 1), 0);
      assert.equal(await r.getbit(b, 7), 1);
      assert.equal(await r.getbit(b, 6), 0);
      assert.equal(await r.getbit(b, 1000), 0);
      assert.equal(await r.bitcount(b), 2);
      assert.equal(await r.bitcount(b, 0, 0), 1);
      assert.equal(await r.bitcount(b, 1, 1), 1);
      assert.equal(await r.bitpos(b, 1), 7);
      assert.equal(await r.bitpos(b, 1, 1), 9);
      assert.equal(await r.bitpos(b, 0), 0);

      const [x, y, dest] = [ns.key("x"), ns.key("y"), ns.key("dest")];
      await r.set(x, "a"); // 0x61
      await r.set(y, "b"); // 0x62
      assert.equal(await r.bitop("and", dest, x, y), 1);
      assert.equal(await r.get(dest), "`"); // 0x60
      assert.equal(await r.bitop("or", dest, x, y), 1);
      assert.equal(await r.get(dest), "c"); // 0x63
      assert.equal(await r.bitop("xor", dest, x, y), 1);
      assert.equal(await r.get(dest), "\u0003");
      assert.equal(await r.bitcount(dest), 2);
    });

    test("hashes: hset/hget/hgetall/hincrby/hincrbyfloat/hdel/hkeys/hvals/hlen/hexists/hmget/hscan", async () => {
      const h = ns.key("hash");
      assert.equal(await r.hset(h, { name: "restash", count: 1, ratio: 0.5 }), 3);
      assert.equal(await r.hset(h, { name: "restash" }), 0);
      assert.equal(await r.hget(h, "name"), "restash");
      assert.equal(await r.hget(h, "count"), 1);
      assert.equal(await r.hget(h, "nope"), null);
      // the SDK's hgetall parses safe integers and JSON, and keeps other numbers as strings
      assert.deepEqual(await r.hgetall(h), { name: "restash", count: 1, ratio: "0.5" });
      assert.equal(await r.hgetall(ns.key("nohash")), null);
      assert.equal(await r.hincrby(h, "count", 2), 3);
      assert.equal(await r.hincrby(h, "count", -10), -7);
      assert.equal(await r.hincrbyfloat(h, "ratio", 0.25), 0.75);
      assert.deepEqual((await r.hkeys(h)).sort(), ["count", "name", "ratio"]);
      assert.deepEqual((await r.hvals(h)).map(String).sort(), ["-7", "0.75", "restash"]);
      assert.equal(await r.hlen(h), 3);
      assert.equal(await r.hexists(h, "name"), 1);
      assert.equal(await r.hexists(h, "nope"), 0);
      assert.deepEqual(await r.hmget(h, "name", "count", "nope"), {
        name: "restash",
        count: -7,
        nope: null,
      });
      assert.equal(await r.hmget(h, "nope1", "nope2"), null);
      const [cursor, fields] = await r.hscan(h, 0, { match: "n*" });
      assert.equal(String(cursor), "0");
      assert.deepEqual(fields, ["name", "restash"]);
      assert.equal(await r.hdel(h, "count", "nope"), 1);
      assert.equal(await r.hlen(h), 2);
      assert.equal(await r.hdel(h, "name", "ratio"), 2);
      assert.equal(await r.exists(h), 0);
    });

    test("lists: push/pop/lrange/llen/lindex/lset/lrem/linsert/lmove/ltrim/lpos", async () => {
      const [l, l2] = [ns.key("list"), ns.key("list2")];
      assert.equal(await r.lpush(l, "b", "a"), 2); // a b
      assert.equal(await r.rpush(l, "c", "d"), 4); // a b c d
      assert.deepEqual(await r.lrange(l, 0, -1), ["a", "b", "c", "d"]);
      assert.equal(await r.llen(l), 4);
      assert.equal(await r.lindex(l, 1), "b");
      assert.equal(await r.lindex(l, -1), "d");
      assert.equal(await r.lindex(l, 99), null);
      assert.equal(await r.lset(l, 1, "B"), "OK"); // a B c d
      assert.equal(await r.linsert(l, "before", "c", "x"), 5); // a B x c d
      assert.equal(await r.linsert(l, "after", "nope", "x"), -1);
      assert.equal(await r.lpos(l, "c"), 3);
      assert.equal(await r.lpos(l, "nope"), null);
      assert.equal(await r.rpush(l, "c"), 6); // a B x c d c
      assert.deepEqual(await r.lpos(l, "c", { count: 0 }), [3, 5]);
      assert.equal(await r.lpos(l, "c", { rank: -1 }), 5);
      assert.equal(await r.lrem(l, 0, "c"), 2); // a B x d
      assert.equal(await r.lpop(l), "a"); // B x d
      assert.equal(await r.rpop(l), "d"); // B x
      assert.equal(await r.lmove(l, l2, "left", "right"), "B"); // l: x, l2: B
      assert.deepEqual(await r.lrange(l2, 0, -1), ["B"]);
      assert.equal(await r.rpush(l, "y", "z"), 3); // x y z
      assert.equal(await r.ltrim(l, 1, -1), "OK"); // y z
      assert.deepEqual(await r.lrange(l, 0, -1), ["y", "z"]);
      assert.deepEqual(await r.lpop(l, 2), ["y", "z"]);
      assert.equal(await r.lpop(l), null);
      assert.deepEqual(await r.lrange(l, 0, -1), []);
      assert.equal(await r.llen(l), 0);
    });

    test("sets: sadd/smembers/sismember/smismember/srem/scard/sinter/sunion/sdiff/spop/srandmember/sscan", async () => {
      const [s1, s2] = [ns.key("set1"), ns.key("set2")];
      assert.equal(await r.sadd(s1, "a", "b", "c"), 3);
      assert.equal(await r.sadd(s1, "a"), 0);
      assert.equal(await r.sadd(s2, "b", "c", "d"), 3);
      assert.deepEqual((await r.smembers(s1)).sort(), ["a", "b", "c"]);
      assert.equal(await r.sismember(s1, "a"), 1);
      assert.equal(await r.sismember(s1, "z"), 0);
      assert.deepEqual(await r.smismember(s1, ["a", "z", "c"]), [1, 0, 1]);
      assert.equal(await r.scard(s1), 3);
      assert.deepEqual((await r.sinter(s1, s2)).sort(), ["b", "c"]);
      assert.deepEqual((await r.sunion(s1, s2)).sort(), ["a", "b", "c", "d"]);
      assert.deepEqual(await r.sdiff(s1, s2), ["a"]);
      assert.equal(await r.srem(s1, "a", "z"), 1);
      assert.ok(["b", "c"].includes(await r.srandmember(s1)));
      assert.deepEqual((await r.srandmember(s1, 5)).sort(), ["b", "c"]);
      const popped = await r.spop(s1);
      assert.ok(["b", "c"].includes(popped), `spop gave ${popped}`);
      assert.equal(await r.scard(s1), 1);
      const [cursor, members] = await r.sscan(s2, 0, { match: "*" });
      assert.equal(String(cursor), "0");
      assert.deepEqual(members.sort(), ["b", "c", "d"]);
      assert.deepEqual(await r.smembers(ns.key("noset")), []);
    });

    test("sorted sets: zadd/zscore/zrange/zrank/zincrby/zrem/zcard/zcount/zpopmin/zmscore", async () => {
      const z = ns.key("zset");
      assert.equal(
        await r.zadd(
          z,
          { score: 1.5, member: "alpha" },
          { score: 2, member: "beta" },
          { score: -0.25, member: "gamma" },
        ),
        3,
      );
      assert.equal(await r.zadd(z, { xx: true }, { score: 2, member: "new" }), 0);
      assert.equal(await r.zscore(z, "alpha"), 1.5);
      assert.equal(await r.zscore(z, "gamma"), -0.25);
      assert.equal(await r.zscore(z, "nope"), null);
      assert.deepEqual(await r.zrange(z, 0, -1), ["gamma", "alpha", "beta"]);
      assert.deepEqual(await r.zrange(z, 0, -1, { withScores: true }), [
        "gamma", -0.25, "alpha", 1.5, "beta", 2,
      ]);
      assert.deepEqual(await r.zrange(z, 0, -1, { rev: true }), ["beta", "alpha", "gamma"]);
      assert.deepEqual(await r.zrange(z, 0, "+inf", { byScore: true }), ["alpha", "beta"]);
      assert.deepEqual(
        await r.zrange(z, "-inf", "+inf", { byScore: true, offset: 1, count: 1, withScores: true }),
        ["alpha", 1.5],
      );
      assert.deepEqual(await r.zrange(z, "+inf", "(1.5", { byScore: true, rev: true }), ["beta"]);
      assert.equal(await r.zrank(z, "beta"), 2);
      assert.equal(await r.zrank(z, "nope"), null);
      assert.equal(await r.zcard(z), 3);
      assert.equal(await r.zcount(z, 0, 2), 2);
      assert.equal(await r.zcount(z, "-inf", "+inf"), 3);
      assert.equal(await r.zincrby(z, 1.25, "alpha"), 2.75);
      assert.deepEqual(await r.zmscore(z, ["alpha", "nope", "gamma"]), [2.75, null, -0.25]);
      assert.deepEqual(await r.exec(["zrangebyscore", z, "-inf", "(2.75", "withscores"]), [
        "gamma", -0.25, "beta", 2,
      ]);
      assert.deepEqual(await r.exec(["zrangebyscore", z, "(0", "+inf"]), ["beta", "alpha"]);
      assert.deepEqual(await r.zpopmin(z), ["gamma", -0.25]);
      assert.equal(await r.zrem(z, "beta", "nope"), 1);
      assert.equal(await r.zcard(z), 1);
    });

    test("sorted sets: zunionstore/zinterstore", async () => {
      const [z1, z2, u, i] = [ns.key("z1"), ns.key("z2"), ns.key("union"), ns.key("inter")];
      await r.zadd(z1, { score: 1, member: "a" }, { score: 2, member: "b" });
      await r.zadd(z2, { score: 10, member: "b" }, { score: 0.5, member: "c" });
      assert.equal(await r.zunionstore(u, 2, [z1, z2]), 3);
      assert.deepEqual(await r.zrange(u, 0, -1, { withScores: true }), ["c", 0.5, "a", 1, "b", 12]);
      assert.equal(await r.zinterstore(i, 2, [z1, z2], { weights: [2, 0.5] }), 1);
      assert.deepEqual(await r.zrange(i, 0, -1, { withScores: true }), ["b", 9]);
      assert.equal(await r.zunionstore(u, 2, [z1, z2], { aggregate: "max" }), 3);
      assert.equal(await r.zscore(u, "b"), 10);
    });

    test("geo: geoadd/geopos/geodist/geosearch/geohash", async () => {
      const g = ns.key("geo");
      assert.equal(
        await r.geoadd(
          g,
          { longitude: 13.361389, latitude: 38.115556, member: "Palermo" },
          { longitude: 15.087269, latitude: 37.502669, member: "Catania" },
        ),
        2,
      );
      const pos = await r.geopos(g, "Palermo", "Catania");
      assert.equal(pos.length, 2);
      assert.ok(Math.abs(pos[0].lng - 13.361389) < 1e-5 && Math.abs(pos[0].lat - 38.115556) < 1e-5, JSON.stringify(pos));
      assert.ok(Math.abs(pos[1].lng - 15.087269) < 1e-5 && Math.abs(pos[1].lat - 37.502669) < 1e-5, JSON.stringify(pos));
      assert.equal(await r.geodist(g, "Palermo", "Catania", "KM"), 166.2742);
      assert.equal(await r.geodist(g, "Palermo", "Catania"), 166274.1516);
      assert.equal(await r.geodist(g, "Palermo", "Nowhere"), null);
      assert.deepEqual(await r.geohash(g, "Palermo", "Catania"), ["sqc8b49rny0", "sqdtr74hyu0"]);
      const center = { type: "FROMLONLAT", coordinate: { lon: 15, lat: 37 } };
      const radius = { type: "BYRADIUS", radius: 200, radiusType: "KM" };
      assert.deepEqual(await r.geosearch(g, center, radius, "ASC"), [
        { member: "Catania" },
        { member: "Palermo" },
      ]);
      assert.deepEqual(await r.geosearch(g, center, radius, "ASC", { withDist: true }), [
        { member: "Catania", dist: 56.4413 },
        { member: "Palermo", dist: 190.4424 },
      ]);
      const withCoord = await r.geosearch(g, { type: "FROMMEMBER", member: "Palermo" }, radius, "DESC", {
        withCoord: true,
        count: { limit: 1 },
      });
      assert.equal(withCoord.length, 1);
      assert.equal(withCoord[0].member, "Catania");
      assert.ok(Math.abs(withCoord[0].coord.long - 15.087269) < 1e-5, JSON.stringify(withCoord));
    });

    test("hyperloglog: pfadd/pfcount/pfmerge", async () => {
      const [h1, h2, h3] = [ns.key("hll1"), ns.key("hll2"), ns.key("hll3")];
      assert.equal(await r.pfadd(h1, "a", "b", "c"), 1);
      assert.equal(await r.pfadd(h1, "a"), 0);
      assert.equal(await r.pfcount(h1), 3);
      assert.equal(await r.pfadd(h2, "c", "d"), 1);
      assert.equal(await r.pfcount(h1, h2), 4);
      assert.equal(await r.pfmerge(h3, h1, h2), "OK");
      assert.equal(await r.pfcount(h3), 4);
    });

    test("streams: xadd/xrange/xrevrange/xlen/xread/xgroup/xreadgroup/xpending/xack/xdel/xtrim", async () => {
      const s = ns.key("stream");
      assert.equal(await r.xadd(s, "1-1", { field: "one", n: 1 }), "1-1");
      assert.equal(await r.xadd(s, "2-1", { field: "two", n: 2 }), "2-1");
      assert.equal(await r.xadd(s, "3-1", { field: "three", n: 3 }), "3-1");
      const auto = await r.xadd(s, "*", { field: "four" });
      assert.match(auto, /^\d+-\d+$/);
      assert.equal(await r.xlen(s), 4);
      assert.deepEqual(await r.xrange(s, "-", "+", 2), {
        "1-1": { field: "one", n: 1 },
        "2-1": { field: "two", n: 2 },
      });
      assert.deepEqual(Object.keys(await r.xrange(s, "-", "+")), ["1-1", "2-1", "3-1", auto]);
      assert.deepEqual(await r.xrevrange(s, "+", "-", 1), { [auto]: { field: "four" } });
      assert.deepEqual(await r.xread(s, "2-1"), [
        [s, [["3-1", ["field", "three", "n", 3]], [auto, ["field", "four"]]]],
      ]);
      assert.equal(await r.xread(s, auto), null);

      assert.equal(await r.xgroup(s, { type: "CREATE", group: "grp", id: "0" }), "OK");
      assert.deepEqual(await r.xreadgroup("grp", "c1", s, ">", { count: 2 }), [
        [s, [["1-1", ["field", "one", "n", 1]], ["2-1", ["field", "two", "n", 2]]]],
      ]);
      const pending = await r.xpending(s, "grp", "-", "+", 10);
      assert.deepEqual(
        pending.map(([id, consumer, , deliveries]) => [id, consumer, deliveries]),
        [["1-1", "c1", 1], ["2-1", "c1", 1]],
      );
      assert.equal(typeof pending[0][2], "number");
      assert.equal(await r.xack(s, "grp", "1-1"), 1);
      assert.equal(await r.xack(s, "grp", ["2-1", "9-9"]), 1);
      assert.deepEqual(await r.xpending(s, "grp", "-", "+", 10), []);
      assert.equal(await r.xdel(s, "1-1"), 1);
      assert.equal(await r.xdel(s, ["2-1", "9-9"]), 1);
      assert.equal(await r.xlen(s), 2);
      assert.equal(await r.xtrim(s, { strategy: "MAXLEN", exactness: "=", threshold: 1 }), 1);
      assert.deepEqual(Object.keys(await r.xrange(s, "-", "+")), [auto]);
    });

    test("keys: exists/del/unlink/type/rename/renamenx/copy/touch", async () => {
      const [k1, k2, k3, k4, k5, missing] = ["k1", "k2", "k3", "k4", "k5", "missing"].map((n) => ns.key(n));
      assert.equal(await r.mset({ [k1]: "one", [k2]: "two" }), "OK");
      assert.equal(await r.exists(k1, k2, missing), 2);
      assert.equal(await r.type(k1), "string");
      assert.equal(await r.type(missing), "none");
      const typed = { list: ns.key("tl"), hash: ns.key("th"), set: ns.key("ts"), zset: ns.key("tz"), stream: ns.key("tx") };
      await r.rpush(typed.list, "x");
      await r.hset(typed.hash, { f: "v" });
      await r.sadd(typed.set, "m");
      await r.zadd(typed.zset, { score: 1, member: "m" });
      await r.xadd(typed.stream, "*", { f: "v" });
      for (const [type, key] of Object.entries(typed)) {
        assert.equal(await r.type(key), type);
      }
      assert.equal(await r.rename(k1, k3), "OK");
      assert.equal(await r.exists(k1), 0);
      assert.equal(await r.get(k3), "one");
      assert.equal(await r.renamenx(k3, k2), 0);
      assert.equal(await r.renamenx(k3, k4), 1);
      assert.equal(await r.get(k4), "one");
      assert.equal(await r.copy(k4, k5), "COPIED");
      assert.equal(await r.copy(k2, k5), "NOT_COPIED");
      assert.equal(await r.copy(k2, k5, { replace: true }), "COPIED");
      assert.equal(await r.get(k5), "two");
      assert.equal(await r.touch(k2, k4, missing), 2);
      assert.equal(await r.del(k2, missing), 1);
      assert.equal(await r.unlink(k4, k5, missing), 2);
      assert.equal(await r.exists(k2, k4, k5), 0);
      const err = await rejection(() => r.rename(missing, k1));
      assert.match(String(err.message), /no such key/);
    });

    test("expiry: expire/pexpire/ttl/pttl/persist/expireat", async () => {
      const [k, p, at, missing] = [ns.key("exp"), ns.key("pexp"), ns.key("expat"), ns.key("missing")];
      await r.set(k, "v");
      await r.set(p, "v");
      await r.set(at, "v");
      assert.equal(await r.ttl(k), -1);
      assert.equal(await r.ttl(missing), -2);
      assert.equal(await r.pttl(missing), -2);
      assert.equal(await r.expire(k, 100), 1);
      assert.equal(await r.expire(missing, 100), 0);
      const ttl = await r.ttl(k);
      assert.ok(ttl > 90 && ttl <= 100, `ttl ${ttl}`);
      assert.equal(await r.pexpire(p, 100_000), 1);
      const pttl = await r.pttl(p);
      assert.ok(pttl > 90_000 && pttl <= 100_000, `pttl ${pttl}`);
      assert.equal(await r.persist(k), 1);
      assert.equal(await r.persist(k), 0);
      assert.equal(await r.ttl(k), -1);
      const when = Math.floor(Date.now() / 1000) + 200;
      assert.equal(await r.expireat(at, when), 1);
      const ttlAt = await r.ttl(at);
      assert.ok(ttlAt > 190 && ttlAt <= 201, `ttl ${ttlAt}`);
      assert.equal(await r.pexpire(p, 100), 1);
      await sleep(350);
      assert.equal(await r.exists(p), 0);
      assert.equal(await r.get(p), null);
    });

    test("keys/scan with a test-unique prefix, dbsize", async () => {
      const sub = `${ns.base}scan-${Date.now()}:`;
      const names = [];
      for (let i = 0; i < 25; i++) names.push(`${sub}s${i}`);
      await r.mset(Object.fromEntries(names.map((n, i) => [n, `v${i}`])));
      const hashKey = `${sub}hash`;
      await r.hset(hashKey, { f: "v" });
      const all = [...names, hashKey].sort();
      const pattern = `${escapeGlob(sub)}*`;

      assert.deepEqual((await r.keys(pattern)).sort(), all);
      assert.deepEqual(await r.keys(`${escapeGlob(sub)}nothing*`), []);

      const seen = new Set();
      let cursor = "0";
      let rounds = 0;
      do {
        const [next, keys] = await r.scan(cursor, { match: pattern, count: 100 });
        assert.equal(typeof String(next), "string");
        for (const k of keys) seen.add(k);
        cursor = String(next);
        assert.ok(++rounds < 100_000, "scan did not terminate");
      } while (cursor !== "0");
      assert.deepEqual([...seen].sort(), all);

      const size = await r.dbsize();
      assert.equal(typeof size, "number");
      assert.ok(size >= all.length, `dbsize ${size}`);
    });

    test("scan withType (Upstash extension): [cursor, [key, type, ...]]", async () => {
      const sub = `${ns.base}scantype-${Date.now()}:`;
      const names = Array.from({ length: 12 }, (_, i) => `${sub}s${i}`);
      await r.mset(Object.fromEntries(names.map((n, i) => [n, `v${i}`])));
      const hashKey = `${sub}hash`;
      await r.hset(hashKey, { f: "v" });
      const listKey = `${sub}list`;
      await r.rpush(listKey, "x");
      const pattern = `${escapeGlob(sub)}*`;
      const typed = new Map();
      let cursor = "0";
      do {
        const [next, entries] = await r.scan(cursor, { match: pattern, count: 100, withType: true });
        for (const { key, type } of entries) typed.set(key, type);
        cursor = String(next);
      } while (cursor !== "0");
      assert.equal(typed.size, names.length + 2);
      for (const n of names) assert.equal(typed.get(n), "string");
      assert.equal(typed.get(hashKey), "hash");
      assert.equal(typed.get(listKey), "list");
    });
  });
}
