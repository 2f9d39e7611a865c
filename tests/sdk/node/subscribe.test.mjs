// Pub/Sub through @upstash/redis: `subscribe` and `psubscribe` open one Server-Sent Events
// stream per channel or pattern (`/subscribe/<channel>`, `/psubscribe/<pattern>`) and parse
// `data: message,<channel>,<payload>` lines; messages are published with `publish`.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import { clientConfigs, PREFIX } from "./helpers.mjs";

/** Resolves with the first `count` events of `type` on `sub`, or rejects after `ms`. */
function events(sub, type, count, ms = 5000) {
  return new Promise((resolve, reject) => {
    const got = [];
    const timer = setTimeout(
      () => reject(new Error(`expected ${count} '${type}' event(s), got ${JSON.stringify(got)}`)),
      ms,
    );
    sub.on(type, (event) => {
      if (got.length === count) return;
      got.push(event);
      if (got.length === count) {
        clearTimeout(timer);
        resolve(got);
      }
    });
  });
}

const unique = (label) => `${PREFIX}node:${label}:${randomBytes(4).toString("hex")}`;

for (const config of clientConfigs()) {
  describe(`pub/sub over SSE, ${config.name}`, () => {
    test("subscribe receives every message, in order, not base64-encoded", async () => {
      const redis = config.make();
      const channel = unique("chat");
      const sub = redis.subscribe([channel]);
      try {
        const subscribed = events(sub, "subscribe", 1);
        const messages = events(sub, "message", 4);
        const ownChannel = events(sub, `message:${channel}`, 1);
        assert.deepEqual(await subscribed, [1]);
        // The count is of Redis subscribers (restash shares one); on a cluster only the
        // publishing node's own subscribers are counted, so it may be 0 there.
        assert.equal(typeof (await redis.publish(channel, "hello")), "number");
        await redis.publish(channel, { n: 1, text: "a,b" });
        await redis.publish(channel, "with, commas");
        await redis.publish(channel, "ünïcödé 😀");
        assert.deepEqual(await messages, [
          { channel, message: "hello" },
          { channel, message: { n: 1, text: "a,b" } },
          { channel, message: "with, commas" },
          { channel, message: "ünïcödé 😀" },
        ]);
        assert.deepEqual(await ownChannel, [{ channel, message: "hello" }]);
      } finally {
        await sub.unsubscribe();
      }
    });

    test("one subscriber, several channels", async () => {
      const redis = config.make();
      const [a, b] = [unique("a"), unique("b")];
      const sub = redis.subscribe([a, b]);
      try {
        const subscribed = events(sub, "subscribe", 2);
        const messages = events(sub, "message", 2);
        await subscribed;
        assert.deepEqual(sub.getSubscribedChannels(), [a, b]);
        await redis.publish(a, "to a");
        await redis.publish(b, "to b");
        const got = await messages;
        assert.deepEqual(
          got.sort((x, y) => x.channel.localeCompare(y.channel)),
          [
            { channel: a, message: "to a" },
            { channel: b, message: "to b" },
          ].sort((x, y) => x.channel.localeCompare(y.channel)),
        );
      } finally {
        await sub.unsubscribe();
      }
    });

    test("psubscribe receives the pattern, the channel and the message", async () => {
      const redis = config.make();
      const base = unique("user");
      const pattern = `${base}:*`;
      const sub = redis.psubscribe([pattern]);
      try {
        const subscribed = events(sub, "psubscribe", 1);
        const messages = events(sub, "pmessage", 2);
        assert.deepEqual(await subscribed, [1]);
        await redis.publish(`${base}:123`, { name: "Ada" });
        // Not matching the pattern: never delivered.
        await redis.publish(`${base}-other`, { nope: true });
        // (The SDK JSON-parses pattern messages without a fallback: publish JSON.)
        await redis.publish(`${base}:456`, [1, "a,b"]);
        assert.deepEqual(await messages, [
          { pattern, channel: `${base}:123`, message: { name: "Ada" } },
          { pattern, channel: `${base}:456`, message: [1, "a,b"] },
        ]);
      } finally {
        await sub.unsubscribe();
      }
    });
  });
}
