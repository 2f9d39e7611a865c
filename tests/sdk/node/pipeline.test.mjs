// pipeline(), multi() and auto-pipelining through @upstash/redis, with both encodings.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { clientConfigs, namespace, recordCommands, rejection } from "./helpers.mjs";

for (const config of clientConfigs()) {
  describe(`pipelines and transactions, ${config.name}`, () => {
    const ns = namespace(config.name.startsWith("default") ? "pipe-b64" : "pipe-raw");
    const r = config.make();
    after(() => ns.cleanup());

    test("pipeline().exec() returns one result per command, in order", async () => {
      const [k, h, l] = [ns.key("p"), ns.key("ph"), ns.key("pl")];
      const p = r.pipeline();
      p.set(k, "1").incr(k).incrby(k, 40).get(k);
      p.hset(h, { field: "value" }).hgetall(h);
      p.rpush(l, "abcd", "test").lrange(l, 0, -1);
      p.type(k).ping().echo("hello").exists(k, ns.key("nope"));
      assert.equal(p.length(), 12);
      assert.deepEqual(await p.exec(), [
        "OK", 2, 42, 42,
        1, { field: "value" },
        2, ["abcd", "test"],
        "string", "PONG", "hello", 1,
      ]);
    });

    test("pipeline exec({ keepErrors: true }): the other results come back and the failing item carries an error", async () => {
      const k = ns.key("pe");
      const p = r.pipeline();
      p.set(k, "not a number");
      p.incr(k);
      p.get(k);
      p.lpush(k, "x");
      p.strlen(k);
      const res = await p.exec({ keepErrors: true });
      assert.equal(res.length, 5);
      assert.deepEqual(res[0], { result: "OK", error: undefined });
      assert.equal(res[1].result, undefined);
      assert.match(res[1].error, /^ERR value is not an integer or out of range/);
      assert.deepEqual(res[2], { result: "not a number", error: undefined });
      assert.equal(res[3].result, undefined);
      assert.match(res[3].error, /^WRONGTYPE /);
      assert.deepEqual(res[4], { result: 12, error: undefined });
    });

    test("pipeline exec() without keepErrors rejects naming the failing command", async () => {
      const k = ns.key("pe2");
      const p = r.pipeline();
      p.set(k, "text");
      p.incr(k);
      const err = await rejection(() => p.exec());
      assert.match(String(err.message), /Command 2 \[ incr \] failed: ERR value is not an integer/);
      assert.equal(await r.get(k), "text");
    });

    test("multi() runs a transaction and returns results per item", async () => {
      const [k, s] = [ns.key("tx"), ns.key("txs")];
      const tx = r.multi();
      tx.set(k, "a");
      tx.append(k, "bc");
      tx.get(k);
      tx.sadd(s, "x", "y");
      tx.scard(s);
      tx.del(s);
      assert.deepEqual(await tx.exec(), ["OK", 3, "abc", 2, 2, 1]);
      assert.equal(await r.get(k), "abc");
    });

    test("multi() with a runtime error: the other commands still run, the failing item carries an error", async () => {
      const k = ns.key("txe");
      const tx = r.multi();
      tx.set(k, "word");
      tx.incr(k);
      tx.append(k, "s");
      tx.get(k);
      const res = await tx.exec({ keepErrors: true });
      assert.equal(res.length, 4);
      assert.deepEqual(res[0], { result: "OK", error: undefined });
      assert.match(res[1].error, /ERR value is not an integer or out of range/);
      assert.deepEqual(res[2], { result: 5, error: undefined });
      assert.deepEqual(res[3], { result: "words", error: undefined });
    });

    test("1,000 concurrent auto-pipelined set/get", async () => {
      const c = config.make();
      const log = recordCommands(c);
      const keys = Array.from({ length: 1000 }, (_, i) => ns.key(`auto${i}`));
      const value = (i) => (i % 3 === 0 ? `value-${i}-ü` : i % 3 === 1 ? { i, tag: "obj" } : `v${i}`);
      const setResults = await Promise.all(keys.map((k, i) => c.set(k, value(i))));
      assert.deepEqual(setResults, keys.map(() => "OK"));
      const got = await Promise.all(keys.map((k) => c.get(k)));
      for (let i = 0; i < keys.length; i++) {
        assert.deepEqual(got[i], value(i), `value ${i}`);
      }
      const incrs = await Promise.all(keys.slice(0, 200).map((k, i) => c.incrby(`${k}:n`, i)));
      assert.deepEqual(incrs, keys.slice(0, 200).map((_, i) => i));
      // both clients auto-pipeline (the SDK default): 2,200 commands in a few /pipeline requests
      assert.deepEqual([...new Set(log.map((e) => e.path))], ["pipeline"]);
      assert.ok(c.pipelineCounter <= 10, `pipelines: ${c.pipelineCounter}`);
      assert.equal(log.length, 2200);
      assert.ok(log.every((e) => e.error === undefined || e.error === null));
    });
  });
}
