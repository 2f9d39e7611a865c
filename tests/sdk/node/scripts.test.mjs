// Lua scripting through @upstash/redis: eval, evalsha, scriptLoad, scriptExists, scriptFlush and the
// SDK's Script helper (EVALSHA first, EVAL on NOSCRIPT), including Upstash's
// `#!lua flags=allow-key-locking` shebang that @upstash/ratelimit uses.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { clientConfigs, namespace, recordCommands, rejection, sha1 } from "./helpers.mjs";

const ZERO_SHA = "0".repeat(40);

for (const config of clientConfigs()) {
  describe(`scripts, ${config.name}`, () => {
    const ns = namespace(config.name.startsWith("default") ? "lua-b64" : "lua-raw");
    const r = config.make();
    after(() => ns.cleanup());

    test("eval returns integers, strings, nested tables, status replies and nil", async () => {
      const k = ns.key("ev");
      assert.deepEqual(
        await r.eval("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}", [k], ["hello", "41"]),
        [k, "hello", 42],
      );
      assert.equal(await r.eval("return redis.call('SET', KEYS[1], ARGV[1])", [k], ["stored"]), "OK");
      assert.equal(await r.eval("return redis.call('GET', KEYS[1])", [k], []), "stored");
      assert.equal(await r.get(k), "stored");
      assert.equal(await r.eval("return 'test'", [], []), "test");
      assert.equal(await r.eval("return redis.status_reply('FINE')", [], []), "FINE");
      assert.deepEqual(await r.eval("return {1, 'two', {3, 'four', {'ü😀'}}}", [], []), [1, "two", [3, "four", ["ü😀"]]]);
      assert.equal(await r.eval("return nil", [], []), null);
      assert.equal(await r.eval("return 3.99", [], []), 3); // Lua numbers become integers
      assert.equal(await r.eval("return ARGV[1]", [], [12.5]), 12.5);
      assert.equal(await r.eval("return #ARGV", [], ["a", "b", "c"]), 3);
    });

    test("eval errors come back as errors", async () => {
      const k = ns.key("everr");
      await r.set(k, "text");
      const err = await rejection(() => r.eval("return redis.call('INCR', KEYS[1])", [k], []));
      assert.match(String(err.message), /ERR value is not an integer or out of range/);
      const err2 = await rejection(() => r.eval("return redis.error_reply('MYERR custom failure')", [], []));
      assert.match(String(err2.message), /MYERR custom failure/);
      const err3 = await rejection(() => r.eval("this is not lua", [], []));
      assert.match(String(err3.message), /ERR/);
    });

    test("scriptLoad, scriptExists, evalsha", async () => {
      const k = ns.key("sha");
      const script = `return {KEYS[1], ARGV[1], '${ns.base}'}`;
      const sha = await r.scriptLoad(script);
      assert.equal(sha, sha1(script));
      assert.deepEqual(await r.scriptExists(sha, ZERO_SHA), [1, 0]);
      assert.deepEqual(await r.evalsha(sha, [k], ["arg"]), [k, "arg", ns.base]);
      const err = await rejection(() => r.evalsha(ZERO_SHA, [], []));
      assert.match(String(err.message), /NOSCRIPT/);
    });

    test("createScript().exec falls back from EVALSHA to EVAL on NOSCRIPT after scriptFlush", async () => {
      const c = config.make();
      const log = recordCommands(c);
      const k = ns.key("script");
      const body = `return {ARGV[1], KEYS[1], '${ns.base}helper'}`;
      assert.equal(await c.scriptFlush(), "OK");
      const script = c.createScript(body);
      assert.deepEqual(await script.exec([k], ["first"]), ["first", k, `${ns.base}helper`]);
      assert.equal(script.sha1, sha1(body));
      const evalsha = log.filter((e) => e.cmd[0] === "evalsha");
      const evals = log.filter((e) => e.cmd[0] === "eval");
      assert.equal(evalsha.length, 1);
      assert.match(String(evalsha[0].error), /NOSCRIPT/);
      assert.equal(evals.length, 1);
      assert.equal(evals[0].error, undefined);
      // EVAL cached the script: the next exec is served by EVALSHA alone
      log.length = 0;
      assert.deepEqual(await script.exec([k], ["second"]), ["second", k, `${ns.base}helper`]);
      assert.deepEqual(log.map((e) => [e.cmd[0], e.error]), [["evalsha", undefined]]);
      assert.deepEqual(await c.scriptExists(script.sha1), [1]);
      assert.equal(await script.eval([k], ["third"]).then((x) => x[0]), "third");
      assert.equal(await script.evalsha([k], ["fourth"]).then((x) => x[0]), "fourth");
    });

    test("#!lua flags=allow-key-locking scripts run, and the client's SHA1 works for EVALSHA, SCRIPT LOAD and SCRIPT EXISTS", async () => {
      const c = config.make();
      const log = recordCommands(c);
      const k = ns.key("locking");
      const body = `#!lua flags=allow-key-locking\nlocal v = redis.call('INCR', KEYS[1])\nreturn {v, ARGV[1], '${ns.base}lock'}`;
      const clientSha = sha1(body);
      assert.equal(await c.scriptFlush(), "OK");
      assert.deepEqual(await c.scriptExists(clientSha), [0]);
      assert.deepEqual(await c.eval(body, [k], ["a"]), [1, "a", `${ns.base}lock`]);
      assert.deepEqual(await c.scriptExists(clientSha), [1]);
      assert.deepEqual(await c.evalsha(clientSha, [k], ["b"]), [2, "b", `${ns.base}lock`]);
      assert.equal(await c.scriptFlush(), "OK");
      assert.deepEqual(await c.scriptExists(clientSha), [0]);
      const script = c.createScript(body);
      log.length = 0;
      assert.deepEqual(await script.exec([k], ["c"]), [3, "c", `${ns.base}lock`]);
      assert.deepEqual(log.map((e) => e.cmd[0]), ["evalsha", "eval"]);
      assert.match(String(log[0].error), /NOSCRIPT/);
      log.length = 0;
      assert.deepEqual(await script.exec([k], ["d"]), [4, "d", `${ns.base}lock`]);
      assert.deepEqual(log.map((e) => [e.cmd[0], e.error]), [["evalsha", undefined]]);
      assert.equal(await c.scriptFlush(), "OK");
      assert.equal(await c.scriptLoad(body), clientSha);
      assert.deepEqual(await c.scriptExists(clientSha, ZERO_SHA), [1, 0]);
      assert.deepEqual(await c.evalsha(clientSha, [k], ["e"]), [5, "e", `${ns.base}lock`]);
      assert.equal(await c.get(k), 5);
    });

    test("other shebang flags are kept next to allow-key-locking (no-writes still forbids writes)", async () => {
      const k = ns.key("nowrites");
      await r.set(k, "v");
      const read = `#!lua flags=allow-key-locking,no-writes\nreturn redis.call('GET', KEYS[1])`;
      assert.equal(await r.eval(read, [k], []), "v");
      const write = `#!lua flags=no-writes,allow-key-locking\nreturn redis.call('SET', KEYS[1], 'changed')`;
      const err = await rejection(() => r.eval(write, [k], []));
      assert.match(String(err.message), /Write commands are not allowed from read-only scripts/);
      assert.equal(await r.get(k), "v");
    });
  });
}
