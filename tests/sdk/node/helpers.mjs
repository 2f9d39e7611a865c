// Shared set-up for the @upstash/redis and @upstash/ratelimit compatibility tests.
//
// The gateway under test is read from the environment (the Rust harness sets these):
//   UPSTASH_REDIS_REST_URL    e.g. http://127.0.0.1:18079
//   UPSTASH_REDIS_REST_TOKEN  the standard token
//   RESTASH_READONLY_TOKEN    the read-only token
//   RESTASH_TEST_PREFIX       every key created here starts with it (random if unset)
//
// Keys are only ever deleted one by one, never by FLUSHDB/FLUSHALL: other suites may share the
// same Redis.
import { createHash, randomBytes } from "node:crypto";
import { Redis } from "@upstash/redis";

export const URL = process.env.UPSTASH_REDIS_REST_URL;
export const TOKEN = process.env.UPSTASH_REDIS_REST_TOKEN;
export const RO_TOKEN = process.env.RESTASH_READONLY_TOKEN;
export const PREFIX =
  process.env.RESTASH_TEST_PREFIX || `restash-sdk-test:${randomBytes(6).toString("hex")}:`;

if (!URL || !TOKEN) {
  throw new Error(
    "UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN must point at a running restash gateway",
  );
}

/** The two client configurations every command test runs with. */
export function clientConfigs() {
  return [
    {
      name: "default options (auto-pipelining, base64)",
      make: (extra = {}) => new Redis({ url: URL, token: TOKEN, ...extra }),
    },
    {
      name: "responseEncoding: false (base64 off)",
      make: (extra = {}) => new Redis({ url: URL, token: TOKEN, responseEncoding: false, ...extra }),
    },
  ];
}

/** A client for housekeeping: no auto-pipelining, no deserialization. */
export function plainClient() {
  return new Redis({
    url: URL,
    token: TOKEN,
    enableAutoPipelining: false,
    automaticDeserialization: false,
  });
}

export function sha1(text) {
  return createHash("sha1").update(text, "utf8").digest("hex");
}

export function escapeGlob(s) {
  return s.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A key namespace unique to one test file run: `${PREFIX}node:<label>:<random>:`.
 * `cleanup()` deletes every key in it (SCAN MATCH + DEL), nothing else.
 */
export function namespace(label) {
  const base = `${PREFIX}node:${label}:${randomBytes(4).toString("hex")}:`;
  let n = 0;
  return {
    base,
    key: (name = "k") => `${base}${name}:${n++}`,
    pattern: `${escapeGlob(base)}*`,
    async cleanup() {
      const r = plainClient();
      let cursor = "0";
      const found = [];
      do {
        const [next, keys] = await r.scan(cursor, { match: `${escapeGlob(base)}*`, count: 1000 });
        cursor = String(next);
        found.push(...keys);
      } while (cursor !== "0");
      for (let i = 0; i < found.length; i += 500) {
        await r.del(...found.slice(i, i + 500));
      }
      return found.length;
    },
  };
}

/** Runs `fn` and returns the error it rejects with (fails if it resolves). */
export async function rejection(fn) {
  try {
    const value = await fn();
    throw Object.assign(new Error(`expected a rejection, got ${JSON.stringify(value)}`), {
      notRejected: true,
    });
  } catch (e) {
    if (e && e.notRejected) throw e;
    return e;
  }
}

/**
 * Records every command the SDK sends and what came back, by wrapping the HTTP client with the
 * SDK's own middleware hook (`redis.use`). Entries: { path, cmd: [...], result, error }.
 */
export function recordCommands(redis) {
  const log = [];
  redis.use(async (req, next) => {
    const path = (req.path ?? []).join("/");
    let res;
    try {
      res = await next(req);
    } catch (e) {
      log.push({ path, cmd: req.body, result: undefined, error: String(e?.message ?? e) });
      throw e;
    }
    if (Array.isArray(res)) {
      req.body.forEach((cmd, i) => log.push({ path, cmd, result: res[i]?.result, error: res[i]?.error }));
    } else {
      log.push({ path, cmd: req.body, result: res?.result, error: res?.error });
    }
    return res;
  });
  return log;
}
