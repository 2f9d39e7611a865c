// The @upstash/redis methods the other files never call, once with the SDK's default options
// (auto-pipelining + base64 responses) and once with `responseEncoding: false`.
// Expected values are what the SDK returns from a real Upstash database (its default
// `automaticDeserialization` JSON-parses strings that are JSON, e.g. "2" -> 2).
//
// Not covered here: json.* (needs RedisJSON), search.* / vector.* and the ar* array commands
// (Upstash-only data types), hexpire/hpexpire/hexpireat/hpexpireat/httl/hpttl/hexpiretime/
// hpexpiretime/hpersist (Redis 7.4), hgetdel/hgetex/hsetex (Redis 8.0), xackdel/xdelex
// (Redis 8.2), clientSetinfo (CLIENT SETINFO is Redis 7.2), flushdb/flushall (other suites
// share the database).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, describe, test } from "node:test";
import { Redis } from "@upstash/redis";
import { RO_TOKEN, URL, clientConfigs, namespace, rejection, sha1 } from "./helpers.mjs";

for (const config of clientConfigs()) {
  describe(`more commands, ${config.name}`, () => {
    const ns = namespace(config.name.startsWith("default") ? "cov-b64" : "cov-raw");
    const r = config.make();
    after(() => ns.cleanup());

    test("strings: getex/getset/setex/psetex/setrange/msetnx/pexpireat/randomkey/time", async () => {
      const [k, missing] = [ns.key("getex"), ns.key("missing")];
      await r.set(k, "v1");
      assert.equal(await r.getex(k, { ex: 100 }), "v1");
      let ttl = await r.ttl(k);
      assert.ok(ttl > 90 && ttl <= 100, `ttl ${ttl}`);
      assert.equal(await r.getex(k, { px: 50_000 }), "v1");
      let pttl = await r.pttl(k);
      assert.ok(pttl > 40_000 && pttl <= 50_000, `pttl ${pttl}`);
      assert.equal(await r.getex(k, { persist: true }), "v1");
      assert.equal(await r.ttl(k), -1);
      assert.equal(await r.getex(k, { exat: Math.floor(Date.now() / 1000) + 300 }), "v1");
      ttl = await r.ttl(k);
      assert.ok(ttl > 290 && ttl <= 301, `ttl ${ttl}`);
      assert.equal(await r.getex(k, { pxat: Date.now() + 60_000 }), "v1");
      pttl = await r.pttl(k);
      assert.ok(pttl > 50_000 && pttl <= 60_000, `pttl ${pttl}`);
      assert.equal(await r.getex(k), "v1");
      assert.equal(await r.getex(missing, { ex: 10 }), null);

      const gs = ns.key("getset");
      assert.equal(await r.getset(gs, "old"), null);
      assert.equal(await r.getset(gs, "new"), "old");
      assert.equal(await r.getset(gs, 42), "new");
      assert.equal(await r.get(gs), 42);

      const [sx, psx] = [ns.key("setex"), ns.key("psetex")];
      assert.equal(await r.setex(sx, 100, "v"), "OK");
      ttl = await r.ttl(sx);
      assert.ok(ttl > 90 && ttl <= 100, `ttl ${ttl}`);
      assert.equal(await r.psetex(psx, 50_000, { a: 1 }), "OK");
      pttl = await r.pttl(psx);
      assert.ok(pttl > 40_000 && pttl <= 50_000, `pttl ${pttl}`);
      assert.deepEqual(await r.get(psx), { a: 1 });
      const e = await rejection(() => r.setex(sx, 0, "v"));
      assert.match(String(e.message), /ERR invalid expire time in 'setex' command/);

      const sr = ns.key("setrange");
      await r.set(sr, "Hello World");
      assert.equal(await r.setrange(sr, 6, "Redis"), 11);
      assert.equal(await r.get(sr), "Hello Redis");
      const pad = ns.key("pad");
      assert.equal(await r.setrange(pad, 3, "x"), 4);
      assert.equal(await r.get(pad), "\u0000\u0000\u0000x");

      const [a, b, c] = [ns.key("a"), ns.key("b"), ns.key("c")];
      assert.equal(await r.msetnx({ [a]: "alpha", [b]: 2 }), 1);
      assert.equal(await r.msetnx({ [b]: "x", [c]: "y" }), 0);
      assert.deepEqual(await r.mget(a, b, c), ["alpha", 2, null]);

      const at = ns.key("pexpireat");
      await r.set(at, "v");
      assert.equal(await r.pexpireat(at, Date.now() + 200_000), 1);
      pttl = await r.pttl(at);
      assert.ok(pttl > 190_000 && pttl <= 200_000, `pttl ${pttl}`);
      assert.equal(await r.pexpireat(missing, Date.now() + 200_000), 0);

      // the database holds at least the keys above
      const random = await r.randomkey();
      assert.notEqual(random, null);
      assert.ok(["string", "number"].includes(typeof random), `randomkey ${random}`);

      const time = await r.time();
      assert.equal(time.length, 2);
      const [sec, micros] = time;
      assert.equal(typeof sec, "number");
      assert.equal(typeof micros, "number");
      assert.ok(Math.abs(sec - Date.now() / 1000) < 60, `time ${time}`);
      assert.ok(micros >= 0 && micros < 1_000_000, `time ${time}`);
    });

    test("bits: bitfield get/set/incrby/overflow", async () => {
      // the SDK's auto-pipelining proxy turns bitfield() into a promise with no builder
      // methods, so this runs on a client without it
      const r = config.make({ enableAutoPipelining: false });
      const b = ns.key("bitfield");
      assert.deepEqual(await r.bitfield(b).set("u8", 0, 255).get("u8", 0).incrby("u8", 0, 10).exec(), [0, 255, 9]);
      assert.deepEqual(await r.bitfield(b).overflow("SAT").incrby("u8", 0, 300).exec(), [255]);
      assert.deepEqual(await r.bitfield(b).overflow("FAIL").incrby("u8", 0, 1).get("u8", 0).exec(), [null, 255]);
      assert.deepEqual(await r.bitfield(b).set("i8", "#1", -5).get("i8", 8).get("u4", 8).exec(), [0, -5, 15]);
      assert.deepEqual(await r.bitfield(ns.key("nobits")).get("u16", 0).exec(), [0]);
    });

    test("hashes: hmset/hsetnx/hstrlen/hrandfield", async () => {
      const [h, missing] = [ns.key("hash"), ns.key("nohash")];
      assert.equal(await r.hmset(h, { a: 1, name: "restash", obj: { x: 1 } }), "OK");
      assert.equal(await r.hsetnx(h, "a", "2"), 0);
      assert.equal(await r.hsetnx(h, "b", "two"), 1);
      assert.deepEqual(await r.hgetall(h), { a: 1, name: "restash", obj: { x: 1 }, b: "two" });
      assert.equal(await r.hstrlen(h, "name"), 7);
      assert.equal(await r.hstrlen(h, "obj"), 7); // {"x":1}
      assert.equal(await r.hstrlen(h, "nope"), 0);
      const fields = ["a", "b", "name", "obj"];
      assert.ok(fields.includes(await r.hrandfield(h)));
      assert.deepEqual((await r.hrandfield(h, 10)).sort(), fields);
      assert.equal((await r.hrandfield(h, -6)).length, 6);
      assert.deepEqual(await r.hrandfield(h, 10, true), { a: 1, name: "restash", obj: { x: 1 }, b: "two" });
      assert.equal(await r.hrandfield(missing), null);
      assert.deepEqual(await r.hrandfield(missing, 3), []);
    });

    test("lists: lpushx/rpushx/lmpop", async () => {
      const [l, empty] = [ns.key("list"), ns.key("empty")];
      assert.equal(await r.lpushx(empty, "a"), 0);
      assert.equal(await r.rpushx(empty, "a", "b"), 0);
      assert.equal(await r.exists(empty), 0);
      assert.equal(await r.rpush(l, "b"), 1);
      assert.equal(await r.lpushx(l, "a"), 2);
      assert.equal(await r.rpushx(l, "c", "d", 5), 5);
      assert.deepEqual(await r.lrange(l, 0, -1), ["a", "b", "c", "d", 5]);
      assert.deepEqual(await r.lmpop(2, [empty, l], "LEFT"), [l, ["a"]]);
      assert.deepEqual(await r.lmpop(2, [empty, l], "RIGHT", 2), [l, [5, "d"]]);
      assert.deepEqual(await r.lmpop(1, [l], "LEFT", 10), [l, ["b", "c"]]);
      assert.equal(await r.lmpop(2, [empty, l], "LEFT"), null);
    });

    test("sets: sinterstore/sunionstore/sdiffstore/sintercard/smove", async () => {
      const [s1, s2, dest, missing] = [ns.key("s1"), ns.key("s2"), ns.key("dest"), ns.key("missing")];
      await r.sadd(s1, "a", "b", "c");
      await r.sadd(s2, "b", "c", "d");
      assert.equal(await r.sinterstore(dest, s1, s2), 2);
      assert.deepEqual((await r.smembers(dest)).sort(), ["b", "c"]);
      assert.equal(await r.sunionstore(dest, s1, s2), 4);
      assert.deepEqual((await r.smembers(dest)).sort(), ["a", "b", "c", "d"]);
      assert.equal(await r.sdiffstore(dest, s1, s2), 1);
      assert.deepEqual(await r.smembers(dest), ["a"]);
      assert.equal(await r.sinterstore(dest, s1, missing), 0);
      assert.equal(await r.exists(dest), 0);
      assert.equal(await r.sintercard([s1, s2]), 2);
      assert.equal(await r.sintercard([s1, s2], { limit: 1 }), 1);
      assert.equal(await r.sintercard([s1, missing]), 0);
      assert.equal(await r.smove(s1, s2, "a"), 1);
      assert.equal(await r.smove(s1, s2, "zzz"), 0);
      assert.equal(await r.sismember(s2, "a"), 1);
      assert.equal(await r.sismember(s1, "a"), 0);
    });

    test("sorted sets: zpopmax/zrevrank/zlexcount/zremrangeby*/zscan/zunion/zdiffstore", async () => {
      const z = ns.key("zset");
      await r.zadd(
        z,
        { score: 1, member: "a" },
        { score: 2, member: "b" },
        { score: 3.5, member: "c" },
        { score: 4, member: "d" },
        { score: 5, member: "e" },
      );
      assert.equal(await r.zrevrank(z, "e"), 0);
      assert.equal(await r.zrevrank(z, "a"), 4);
      assert.equal(await r.zrevrank(z, "nope"), null);
      assert.deepEqual(await r.zpopmax(z), ["e", 5]);
      assert.deepEqual(await r.zpopmax(z, 2), ["d", 4, "c", 3.5]);
      assert.deepEqual(await r.zpopmax(ns.key("nozset")), []);
      await r.zadd(z, { score: 3.5, member: "c" }, { score: 4, member: "d" }, { score: 5, member: "e" });
      assert.equal(await r.zremrangebyrank(z, 0, 0), 1); // a
      assert.equal(await r.zremrangebyscore(z, "(2", 4), 2); // c d
      assert.deepEqual(await r.zrange(z, 0, -1, { withScores: true }), ["b", 2, "e", 5]);
      assert.equal(await r.zremrangebyscore(z, "-inf", "+inf"), 2);
      assert.equal(await r.exists(z), 0);

      const lex = ns.key("lex");
      await r.zadd(lex, ...["a", "b", "c", "d", "e"].map((member) => ({ score: 0, member })));
      assert.equal(await r.zlexcount(lex, "-", "+"), 5);
      assert.equal(await r.zlexcount(lex, "[b", "(d"), 2);
      assert.equal(await r.zremrangebylex(lex, "[a", "[b"), 2);
      assert.equal(await r.zremrangebylex(lex, "(x", "+"), 0);
      assert.deepEqual(await r.zrange(lex, 0, -1), ["c", "d", "e"]);

      const sc = ns.key("scan");
      await r.zadd(sc, { score: 1.5, member: "m1" }, { score: 2, member: "m2" }, { score: 3, member: "other" });
      const [cursor, items] = await r.zscan(sc, 0, { match: "m*" });
      assert.equal(String(cursor), "0");
      assert.deepEqual(items, ["m1", 1.5, "m2", 2]);
      const [cursor2, all] = await r.zscan(sc, "0", { count: 100 });
      assert.equal(String(cursor2), "0");
      assert.equal(all.length, 6);

      const [z1, z2, d] = [ns.key("z1"), ns.key("z2"), ns.key("diff")];
      await r.zadd(z1, { score: 1, member: "a" }, { score: 2, member: "b" });
      await r.zadd(z2, { score: 10, member: "b" }, { score: 0.5, member: "c" });
      assert.deepEqual(await r.zunion(2, [z1, z2]), ["c", "a", "b"]);
      assert.deepEqual(await r.zunion(2, [z1, z2], { withScores: true }), ["c", 0.5, "a", 1, "b", 12]);
      assert.deepEqual(await r.zunion(2, [z1, z2], { withScores: true, aggregate: "max" }), ["c", 0.5, "a", 1, "b", 10]);
      assert.deepEqual(await r.zunion(2, [z1, z2], { withScores: true, weights: [2, 1] }), ["c", 0.5, "a", 2, "b", 14]);
      assert.deepEqual(await r.zunion(1, z1), ["a", "b"]);
      assert.equal(await r.zdiffstore(d, 2, z1, z2), 1);
      assert.deepEqual(await r.zrange(d, 0, -1, { withScores: true }), ["a", 1]);
    });

    test("geo: geosearchstore", async () => {
      const [g, dest] = [ns.key("geo"), ns.key("geodest")];
      await r.geoadd(
        g,
        { longitude: 13.361389, latitude: 38.115556, member: "Palermo" },
        { longitude: 15.087269, latitude: 37.502669, member: "Catania" },
      );
      const center = { type: "FROMLONLAT", coordinate: { lon: 15, lat: 37 } };
      const radius = { type: "BYRADIUS", radius: 200, radiusType: "KM" };
      assert.equal(await r.geosearchstore(dest, g, center, radius, "ASC"), 2);
      assert.deepEqual(await r.zrange(dest, 0, -1), ["Palermo", "Catania"]); // by geohash score
      assert.equal(await r.zscore(dest, "Palermo"), await r.zscore(g, "Palermo"));
      assert.equal(await r.geosearchstore(dest, g, center, radius, "ASC", { count: { limit: 1 }, storeDist: true }), 1);
      const stored = await r.zrange(dest, 0, -1, { withScores: true });
      assert.equal(stored.length, 2);
      assert.equal(stored[0], "Catania");
      assert.ok(Math.abs(stored[1] - 56.4413) < 1e-3, JSON.stringify(stored));
      const box = { type: "BYBOX", rect: { width: 10, height: 10 }, rectType: "KM" };
      assert.equal(await r.geosearchstore(dest, g, { type: "FROMMEMBER", member: "Palermo" }, box, "ASC"), 1);
      assert.deepEqual(await r.zrange(dest, 0, -1), ["Palermo"]);
    });

    test("streams: xclaim/xautoclaim/xinfo", async () => {
      const s = ns.key("stream");
      await r.xadd(s, "1-1", { f: "one" });
      await r.xadd(s, "2-1", { f: "two", n: 2 });
      assert.equal(await r.xgroup(s, { type: "CREATE", group: "grp", id: "0" }), "OK");
      await r.xreadgroup("grp", "c1", s, ">", { count: 2 });
      assert.deepEqual(await r.xclaim(s, "grp", "c2", 0, "1-1"), [["1-1", ["f", "one"]]]);
      assert.deepEqual(await r.xclaim(s, "grp", "c2", 0, ["1-1", "2-1"], { justId: true }), ["1-1", "2-1"]);
      assert.deepEqual(await r.xclaim(s, "grp", "c2", 3_600_000, "1-1"), []);
      assert.deepEqual(await r.xautoclaim(s, "grp", "c3", 0, "0-0"), [
        "0-0",
        [["1-1", ["f", "one"]], ["2-1", ["f", "two", "n", 2]]],
        [],
      ]);
      assert.deepEqual(await r.xautoclaim(s, "grp", "c1", 0, "0-0", { count: 1, justId: true }), ["2-1", ["1-1"], []]);

      const groups = await r.xinfo(s, { type: "GROUPS" });
      assert.deepEqual(groups, [
        ["name", "grp", "consumers", 3, "pending", 2, "last-delivered-id", "2-1", "entries-read", 2, "lag", 0],
      ]);
      const consumers = await r.xinfo(s, { type: "CONSUMERS", group: "grp" });
      assert.deepEqual(
        consumers.map((c) => [c[0], c[1], c[2], c[3], c[4], typeof c[5]]),
        [
          ["name", "c1", "pending", 1, "idle", "number"],
          ["name", "c2", "pending", 0, "idle", "number"],
          ["name", "c3", "pending", 1, "idle", "number"],
        ],
      );
      // JUSTID does not count a delivery; RETRYCOUNT sets the count
      assert.deepEqual(await r.xclaim(s, "grp", "c2", 0, "2-1", { retryCount: 5, justId: true }), ["2-1"]);
      const pending = await r.xpending(s, "grp", "-", "+", 10);
      assert.deepEqual(pending.map(([id, consumer, , n]) => [id, consumer, n]), [["1-1", "c1", 3], ["2-1", "c2", 5]]);
      // an entry deleted while pending comes back in XAUTOCLAIM's third list
      assert.equal(await r.xdel(s, "1-1"), 1);
      assert.deepEqual(await r.xautoclaim(s, "grp", "c3", 0, "0-0"), ["0-0", [["2-1", ["f", "two", "n", 2]]], ["1-1"]]);
      const err = await rejection(() => r.xinfo(ns.key("nostream"), { type: "GROUPS" }));
      assert.match(String(err.message), /ERR no such key/);
    });

    test("scripts: evalshaRo and functions load/list/call/callRo/stats/delete/flush", async () => {
      const k = ns.key("fn");
      await r.set(k, "stored");
      const read = `return {redis.call('GET', KEYS[1]), ARGV[1], '${ns.base}ro'}`;
      const sha = await r.scriptLoad(read);
      assert.deepEqual(await r.evalshaRo(sha, [k], ["arg"]), ["stored", "arg", `${ns.base}ro`]);
      const writeSha = await r.scriptLoad(`return redis.call('SET', KEYS[1], 'changed')`);
      const err = await rejection(() => r.evalshaRo(writeSha, [k], []));
      assert.match(String(err.message), /Write commands are not allowed from read-only scripts/);
      assert.equal(await r.get(k), "stored");
      // Upstash's allow-key-locking flag: EVALSHA_RO takes the SHA1 of the script as sent
      const locking = `#!lua flags=allow-key-locking,no-writes\nreturn redis.call('GET', KEYS[1])`;
      const lockingSha = await r.scriptLoad(locking);
      assert.equal(lockingSha, sha1(locking));
      assert.equal(await r.evalshaRo(lockingSha, [k], []), "stored");

      const id = randomBytes(6).toString("hex");
      const lib = `lib_${id}`;
      const code =
        `#!lua name=${lib}\n` +
        `redis.register_function('echo_${id}', function(keys, args) return {keys[1], args[1], 7} end)\n` +
        `redis.register_function{function_name='get_${id}', callback=function(keys, args) return redis.call('GET', keys[1]) end, flags={'no-writes'}}\n`;
      try {
        assert.equal(await r.functions.load({ code }), lib);
        const dup = await rejection(() => r.functions.load({ code }));
        assert.match(String(dup.message), new RegExp(`Library '${lib}' already exists`));
        assert.equal(await r.functions.load({ code, replace: true }), lib);
        const byName = (fns) => [...fns].sort((x, y) => x.name.localeCompare(y.name));
        const [listed] = await r.functions.list({ libraryName: lib });
        assert.equal(listed.libraryName, lib);
        assert.equal(listed.engine, "LUA");
        assert.equal(listed.libraryCode, undefined);
        assert.deepEqual(byName(listed.functions), [
          { name: `echo_${id}`, description: undefined, flags: [] },
          { name: `get_${id}`, description: undefined, flags: ["no-writes"] },
        ]);
        const [withCode] = await r.functions.list({ libraryName: lib, withCode: true });
        assert.equal(withCode.libraryCode, code);
        assert.deepEqual(await r.functions.call(`echo_${id}`, [k], ["hello"]), [k, "hello", 7]);
        assert.equal(await r.functions.call(`get_${id}`, [k]), "stored");
        assert.equal(await r.functions.callRo(`get_${id}`, [k], []), "stored");
        const roErr = await rejection(() => r.functions.callRo(`echo_${id}`, [k], ["x"]));
        assert.match(String(roErr.message), /Can not execute a script with write flag using \*_ro command/);
        const stats = await r.functions.stats();
        assert.ok(stats.engines.LUA.librariesCount >= 1, JSON.stringify(stats));
        assert.ok(stats.engines.LUA.functionsCount >= 2, JSON.stringify(stats));
        assert.equal(await r.functions.delete(lib), "OK");
        assert.deepEqual(await r.functions.list({ libraryName: lib }), []);
        const gone = await rejection(() => r.functions.call(`echo_${id}`, [k], []));
        assert.match(String(gone.message), /Function not found/);
        assert.equal(await r.functions.load({ code }), lib);
        assert.equal(await r.functions.flush(), "OK");
        assert.deepEqual(await r.functions.list({ libraryName: lib }), []);
      } finally {
        await r.functions.delete(lib).catch(() => {});
      }
    });

    test("read-only token: evalshaRo and functions.callRo are allowed, functions.load is not", async () => {
      assert.ok(RO_TOKEN, "RESTASH_READONLY_TOKEN must be set");
      const ro = new Redis({
        url: URL,
        token: RO_TOKEN,
        ...(config.name.startsWith("default") ? {} : { responseEncoding: false }),
      });
      const k = ns.key("rofn");
      await r.set(k, "readable");
      const sha = await r.scriptLoad("return redis.call('GET', KEYS[1])");
      assert.equal(await ro.evalshaRo(sha, [k], []), "readable");
      const id = randomBytes(6).toString("hex");
      const lib = `rolib_${id}`;
      const code = `#!lua name=${lib}\nredis.register_function{function_name='roget_${id}', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}`;
      try {
        assert.equal(await r.functions.load({ code }), lib);
        assert.equal(await ro.functions.callRo(`roget_${id}`, [k], []), "readable");
        const err = await rejection(() => ro.functions.load({ code, replace: true }));
        assert.match(String(err.message), /NOPERM/);
      } finally {
        await r.functions.delete(lib).catch(() => {});
      }
    });
  });
}
