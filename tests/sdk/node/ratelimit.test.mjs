// @upstash/ratelimit through the gateway. Its Lua scripts start with
// `#!lua flags=allow-key-locking` (an Upstash-only flag), so these tests also prove restash
// handles that shebang. ephemeralCache is off and timeout is 0 so every limit() call really
// reaches Redis and no call is let through because of a timeout.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { Ratelimit } from "@upstash/ratelimit";
import { clientConfigs, namespace, recordCommands, sleep } from "./helpers.mjs";

const LIMIT = 5;
const WINDOW_MS = 10_000;

/** Start a fixed or sliding window test early in a window so it does not straddle two windows. */
async function awayFromWindowEdge() {
  const into = Date.now() % WINDOW_MS;
  if (into > WINDOW_MS - 2_500) await sleep(WINDOW_MS - into + 50);
}

const ALGORITHMS = [
  ["fixedWindow", () => Ratelimit.fixedWindow(LIMIT, "10 s")],
  ["slidingWindow", () => Ratelimit.slidingWindow(LIMIT, "10 s")],
  ["tokenBucket", () => Ratelimit.tokenBucket(LIMIT, "10 s", LIMIT)],
];

for (const config of clientConfigs()) {
  describe(`@upstash/ratelimit, ${config.name}`, () => {
    const ns = namespace(config.name.startsWith("default") ? "rl-b64" : "rl-raw");
    after(() => ns.cleanup());

    for (const [name, limiter] of ALGORITHMS) {
      test(`${name}: ${LIMIT} per 10 s, the 6th call is rejected and remaining counts down`, async () => {
        const redis = config.make();
        const log = recordCommands(redis);
        const rl = new Ratelimit({
          redis,
          limiter: limiter(),
          prefix: `${ns.base}${name}`,
          ephemeralCache: false,
          timeout: 0,
          analytics: false,
        });
        await awayFromWindowEdge();
        const id = `user-${Math.random().toString(36).slice(2)}`;
        for (let i = 0; i < LIMIT; i++) {
          const res = await rl.limit(id);
          assert.equal(res.success, true, `call ${i + 1}: ${JSON.stringify(res)}`);
          assert.equal(res.limit, LIMIT);
          assert.equal(res.remaining, LIMIT - 1 - i, `call ${i + 1}: ${JSON.stringify(res)}`);
          assert.equal(res.reason, undefined);
          assert.ok(res.reset > Date.now() - 1000, `reset ${res.reset}`);
        }
        const rejected = await rl.limit(id);
        assert.equal(rejected.success, false, JSON.stringify(rejected));
        assert.equal(rejected.remaining, 0);
        assert.equal(rejected.reason, undefined);
        const again = await rl.limit(id);
        assert.equal(again.success, false);

        // another identifier has its own budget
        const other = await rl.limit(`${id}-other`);
        assert.equal(other.success, true);
        assert.equal(other.remaining, LIMIT - 1);

        const remaining = await rl.getRemaining(id);
        assert.equal(remaining.remaining, 0);
        assert.equal(remaining.limit, LIMIT);

        // it really went through Redis: state lives under the prefix
        const keys = await redis.keys(`${ns.pattern.slice(0, -1)}${name}:${id}*`);
        assert.ok(keys.length >= 1, `no ratelimit keys under the prefix: ${JSON.stringify(keys)}`);

        // every script call either succeeded or was an EVALSHA miss followed by a successful EVAL
        const scriptCalls = log.filter((e) => ["evalsha", "eval"].includes(e.cmd[0]));
        assert.ok(scriptCalls.length >= LIMIT + 4, `only ${scriptCalls.length} script calls`);
        for (const [i, e] of scriptCalls.entries()) {
          if (e.error === undefined) continue;
          assert.equal(e.cmd[0], "evalsha", `${e.cmd[0]} failed: ${e.error}`);
          assert.match(String(e.error), /NOSCRIPT/);
          assert.equal(scriptCalls[i + 1]?.cmd[0], "eval");
          assert.equal(scriptCalls[i + 1]?.error, undefined, `EVAL failed: ${scriptCalls[i + 1]?.error}`);
        }
        // once EVAL has run a script, EVALSHA with the SDK's own hash finds it
        const evals = scriptCalls.filter((e) => e.cmd[0] === "eval").length;
        assert.ok(evals <= 2, `EVAL fell back ${evals} times: the client's SHA1 is not mapped`);
      });
    }

    test("resetUsedTokens gives the budget back", async () => {
      const redis = config.make();
      const rl = new Ratelimit({
        redis,
        limiter: Ratelimit.fixedWindow(2, "10 s"),
        prefix: `${ns.base}reset`,
        ephemeralCache: false,
        timeout: 0,
      });
      await awayFromWindowEdge();
      const id = "reset-user";
      assert.equal((await rl.limit(id)).success, true);
      assert.equal((await rl.limit(id)).success, true);
      assert.equal((await rl.limit(id)).success, false);
      await rl.resetUsedTokens(id);
      const res = await rl.limit(id);
      assert.equal(res.success, true);
      assert.equal(res.remaining, 1);
    });
  });
}
