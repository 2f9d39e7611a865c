// Value fidelity through @upstash/redis: unicode, number-like strings, JSON objects, a 5 MB
// value and integers above 2^53, with both encodings.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { clientConfigs, escapeGlob, namespace } from "./helpers.mjs";

const UNICODE = [
  "😀🎉 party",
  "中文字符 日本語 한국어",
  "e\u0301 (combining acute) a\u0308 o\u0303",
  "ü",
  "Ünïcödé ß",
  "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓀀",
  "tab\tnew\nline \"quotes\" \\ backslash",
  "test", // valid base64 on its own: must not be decoded twice
  "abcd",
  "OK ",
];

// With the SDK's default automaticDeserialization these come back like this (the SDK JSON-parses
// a string when the parse round-trips exactly, otherwise it keeps the string).
const NUMBER_LIKE = [
  ["123", 123],
  ["1e3", "1e3"],
  ["007", "007"],
  ["-0.5", -0.5],
  ["1.50", "1.50"],
  ["12345678901234567890", "12345678901234567890"],
  ["9007199254740993", "9007199254740993"],
  ["", ""],
  ["true", true],
];

for (const config of clientConfigs()) {
  describe(`values, ${config.name}`, () => {
    const ns = namespace(config.name.startsWith("default") ? "val-b64" : "val-raw");
    const r = config.make();
    // same encoding, automaticDeserialization off: every string comes back exactly as stored
    const raw = config.make({ automaticDeserialization: false });
    after(() => ns.cleanup());

    test("unicode values, keys, hash fields and list items round-trip exactly", async () => {
      for (const [i, v] of UNICODE.entries()) {
        const k = ns.key(`uni${i}`);
        assert.equal(await r.set(k, v), "OK");
        assert.equal(await r.get(k), v);
        assert.equal(await raw.get(k), v);
        assert.equal(await r.strlen(k), Buffer.byteLength(v, "utf8"));
      }
      const uk = `${ns.base}ключ🔑中`;
      await r.set(uk, "значение");
      assert.equal(await r.get(uk), "значение");
      assert.deepEqual(await r.keys(`${escapeGlob(ns.base)}ключ*`), [uk]);
      const h = ns.key("unihash");
      await r.hset(h, { "поле😀": "ü", 名前: "値" });
      assert.deepEqual(await r.hgetall(h), { "поле😀": "ü", 名前: "値" });
      const l = ns.key("unilist");
      await r.rpush(l, ...UNICODE);
      assert.deepEqual(await r.lrange(l, 0, -1), UNICODE);
      assert.deepEqual(await raw.lrange(l, 0, -1), UNICODE);
      const z = ns.key("unizset");
      await r.zadd(z, { score: 1, member: "😀" }, { score: 2, member: "ü" });
      assert.deepEqual(await r.zrange(z, 0, -1, { withScores: true }), ["😀", 1, "ü", 2]);
    });

    test("number-like strings: SDK deserialization semantics, and exact strings without it", async () => {
      for (const [i, [stored, expected]] of NUMBER_LIKE.entries()) {
        const k = ns.key(`num${i}`);
        assert.equal(await r.set(k, stored), "OK");
        assert.deepEqual(await r.get(k), expected, `get of ${JSON.stringify(stored)}`);
        assert.equal(await raw.get(k), stored, `raw get of ${JSON.stringify(stored)}`);
      }
      const l = ns.key("numlist");
      const stored = NUMBER_LIKE.map(([s]) => s);
      await r.rpush(l, ...stored);
      assert.deepEqual(await raw.lrange(l, 0, -1), stored);
      assert.deepEqual(await r.lrange(l, 0, -1), NUMBER_LIKE.map(([, e]) => e));
      // a number sent as a JSON number is stored as its decimal text
      const n = ns.key("realnum");
      await r.set(n, 1.25);
      assert.equal(await raw.get(n), "1.25");
      assert.equal(await r.get(n), 1.25);
    });

    test("JSON objects are serialised by the SDK and read back as objects", async () => {
      const obj = {
        name: "restash",
        nested: { list: [1, 2.5, "three", null, true], emoji: "😀", empty: {} },
        count: 42,
      };
      const k = ns.key("json");
      assert.equal(await r.set(k, obj), "OK");
      assert.deepEqual(await r.get(k), obj);
      assert.equal(await raw.get(k), JSON.stringify(obj));
      const h = ns.key("jsonhash");
      await r.hset(h, { doc: obj, arr: [1, "a"] });
      assert.deepEqual(await r.hget(h, "doc"), obj);
      assert.deepEqual(await r.hgetall(h), { doc: obj, arr: [1, "a"] });
      const l = ns.key("jsonlist");
      await r.rpush(l, obj, { b: 2 });
      assert.deepEqual(await r.lrange(l, 0, -1), [obj, { b: 2 }]);
      assert.deepEqual(await r.mget(k, ns.key("none")), [obj, null]);
    });

    test("a 5 MB value round-trips", async () => {
      const unit = "0123456789abcdefghijklmnopqrstuvwxyzü😀\n"; // 43 bytes of UTF-8
      const big = unit.repeat(Math.ceil((5 * 1024 * 1024) / Buffer.byteLength(unit, "utf8")));
      const bytes = Buffer.byteLength(big, "utf8");
      assert.ok(bytes >= 5 * 1024 * 1024);
      const k = ns.key("big");
      assert.equal(await r.set(k, big), "OK");
      assert.equal(await r.strlen(k), bytes);
      const back = await r.get(k);
      assert.equal(typeof back, "string");
      assert.equal(back.length, big.length);
      assert.ok(back === big, "5 MB value differs");
      assert.ok((await raw.get(k)) === big, "5 MB value differs (raw)");
      assert.equal(await raw.getrange(k, 0, 9), "0123456789");
      assert.equal(await raw.getrange(k, bytes - 5, -1), "😀\n");
      await r.del(k);
    });

    test("integers above 2^53 via incrby", async () => {
      const k = ns.key("bigint");
      assert.equal(await r.set(k, "9007199254740990"), "OK");
      // the reply is a JSON number: JavaScript can only hold it approximately
      const res = await r.incrby(k, 5);
      assert.equal(typeof res, "number");
      assert.ok(Math.abs(res - 9007199254740995) <= 2, `incrby gave ${res}`);
      // the stored value is exact; the SDK keeps unsafe integers as strings
      assert.equal(await r.get(k), "9007199254740995");
      assert.equal(await raw.get(k), "9007199254740995");
      // a large argument is sent as a JSON number and must reach Redis digit for digit
      // (2^53 and 2^54 print exactly in JavaScript; 2^60 would not)
      const k2 = ns.key("bigint2");
      await r.set(k2, "0");
      assert.equal(await r.incrby(k2, 2 ** 53), 2 ** 53);
      assert.equal(await raw.get(k2), "9007199254740992");
      assert.equal(await r.incrby(k2, 2 ** 53), 2 ** 54);
      assert.equal(await raw.get(k2), "18014398509481984");
      assert.ok(Math.abs((await r.incrby(k2, 3)) - 18014398509481987) <= 4);
      assert.equal(await raw.get(k2), "18014398509481987");
      assert.equal(await r.get(k2), "18014398509481987");
      assert.equal(await r.decrby(k2, 2 ** 54), 3);
      assert.equal(await r.incrby(k2, -(2 ** 54)), 3 - 2 ** 54);
      assert.equal(await raw.get(k2), "-18014398509481981");
      const k3 = ns.key("bigfloat");
      // sent as the JSON number 1e+21; Redis answers in plain decimal notation
      assert.equal(Number(await r.incrbyfloat(k3, 1e21)), 1e21);
      assert.equal(await raw.get(k3), "1000000000000000000000");
    });
  });
}
