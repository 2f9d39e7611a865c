// Tokens: the read-only token can read but not write (NOPERM), a wrong token is refused with a
// JSON error the SDK can parse.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Redis } from "@upstash/redis";
import { RO_TOKEN, TOKEN, URL, namespace, rejection } from "./helpers.mjs";

describe("read-only token", () => {
  const ns = namespace("auth");
  const rw = new Redis({ url: URL, token: TOKEN });
  const key = ns.key("ro");
  after(() => ns.cleanup());

  before(async () => {
    assert.ok(RO_TOKEN, "RESTASH_READONLY_TOKEN must be set");
    assert.equal(await rw.set(key, "readable"), "OK");
    assert.equal(await rw.hset(ns.key("roh"), { f: "v" }), 1);
  });

  for (const [name, opts] of [
    ["default options (auto-pipelining, base64)", {}],
    ["no auto-pipelining", { enableAutoPipelining: false }],
    ["base64 off", { responseEncoding: false }],
  ]) {
    test(`${name}: get works, set rejects with NOPERM`, async () => {
      const ro = new Redis({ url: URL, token: RO_TOKEN, ...opts });
      assert.equal(await ro.get(key), "readable");
      assert.equal(await ro.exists(key), 1);
      assert.equal(await ro.ping(), "PONG");
      const err = await rejection(() => ro.set(key, "changed"));
      assert.match(String(err.message), /NOPERM/);
      const err2 = await rejection(() => ro.del(key));
      assert.match(String(err2.message), /NOPERM/);
      assert.equal(await rw.get(key), "readable");
    });
  }

  test("a read-only pipeline: reads succeed, the write item carries NOPERM", async () => {
    const ro = new Redis({ url: URL, token: RO_TOKEN });
    const res = await ro.pipeline().get(key).set(key, "changed").strlen(key).exec({ keepErrors: true });
    assert.deepEqual(res[0], { result: "readable", error: undefined });
    assert.equal(res[1].result, undefined);
    assert.match(String(res[1].error), /NOPERM/);
    assert.deepEqual(res[2], { result: 8, error: undefined });
    assert.equal(await rw.get(key), "readable");
  });

  test("evalRo is allowed with the read-only token, eval is not", async () => {
    const ro = new Redis({ url: URL, token: RO_TOKEN });
    assert.equal(await ro.evalRo("return redis.call('GET', KEYS[1])", [key], []), "readable");
    const err = await rejection(() => ro.eval("return redis.call('SET', KEYS[1], 'x')", [key], []));
    assert.match(String(err.message), /NOPERM/);
    assert.equal(await rw.get(key), "readable");
  });

  test("a wrong token is refused with a JSON error (UpstashError, WRONGPASS)", async () => {
    for (const opts of [{}, { enableAutoPipelining: false }]) {
      const bad = new Redis({ url: URL, token: `${TOKEN}-wrong`, ...opts });
      const err = await rejection(() => bad.get(key));
      assert.equal(err.name, "UpstashError", `${err.name}: ${err.message}`);
      assert.match(String(err.message), /WRONGPASS/);
    }
  });
});
