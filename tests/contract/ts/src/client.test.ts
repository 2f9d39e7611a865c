// A client generated from openapi/openapi.yaml (openapi-typescript + openapi-fetch), compiled
// with tsc and run against a live restash by tests/it/contract.rs.
import assert from "node:assert/strict";
import { test } from "node:test";

import createClient from "openapi-fetch";

import type { paths } from "../generated/restash.js";

const baseUrl = process.env.RESTASH_URL ?? "http://127.0.0.1:8079";
const token = process.env.RESTASH_TOKEN ?? "";
const prefix = `ts:${Date.now().toString(36)}:`;

const client = createClient<paths>({
  baseUrl,
  headers: { Authorization: `Bearer ${token}` },
});
const anonymous = createClient<paths>({ baseUrl });

test("POST / runs one command", async () => {
  const set = await client.POST("/", { body: ["SET", `${prefix}k`, "hello", "EX", 100] });
  assert.equal(set.response.status, 200);
  assert.deepEqual(set.data, { result: "OK" });
  assert.ok(set.response.headers.get("upstash-sync-token"));

  const get = await client.POST("/", { body: ["GET", `${prefix}k`] });
  assert.deepEqual(get.data, { result: "hello" });

  const base64 = await client.POST("/", {
    body: ["GET", `${prefix}k`],
    params: { header: { "Upstash-Encoding": "base64" } },
  });
  assert.deepEqual(base64.data, { result: Buffer.from("hello").toString("base64") });
});

test("errors are typed", async () => {
  const wrong = await client.POST("/", { body: ["INCR", `${prefix}k`] });
  assert.equal(wrong.response.status, 400);
  assert.match(wrong.error?.error ?? "", /not an integer/);

  const unauthorized = await anonymous.POST("/", { body: ["PING"] });
  assert.equal(unauthorized.response.status, 401);
  assert.equal(unauthorized.error?.error, "WRONGPASS invalid or missing auth token");
});

test("pipeline and multi-exec answer one item per command", async () => {
  const pipeline = await client.POST("/pipeline", {
    body: [["SET", `${prefix}n`, 1], ["INCR", `${prefix}n`], ["NOSUCHCOMMAND"]],
  });
  assert.equal(pipeline.response.status, 200);
  // The 200 answer is JSON, or RESP2 bytes with Upstash-Response-Format: resp2.
  const items = (pipeline.data ?? []) as Array<{ result?: unknown; error?: string }>;
  assert.deepEqual(items[0], { result: "OK" });
  assert.deepEqual(items[1], { result: 2 });
  assert.equal(typeof items[2]?.error, "string");

  const transaction = await client.POST("/multi-exec", {
    body: [["INCR", `${prefix}n`], ["GET", `${prefix}n`]],
  });
  assert.deepEqual(transaction.data, [{ result: 3 }, { result: "3" }]);
});

test("path-style commands", async () => {
  const get = await client.GET("/{command}/{arguments}", {
    params: { path: { command: "get", arguments: `${prefix}k` } },
  });
  assert.deepEqual(get.data, { result: "hello" });

  const size = await client.GET("/{command}", { params: { path: { command: "dbsize" } } });
  assert.equal(typeof (size.data as { result: unknown } | undefined)?.result, "number");
});

test("probes and documents need no token", async () => {
  const health = await anonymous.GET("/healthz");
  assert.deepEqual(health.data, { status: "ok" });
  const ready = await anonymous.GET("/readyz");
  assert.deepEqual(ready.data, { status: "ready" });
  const metrics = await anonymous.GET("/metrics", { parseAs: "text" });
  assert.match(metrics.data ?? "", /restash_http_requests_total/);
});

test("cache API, when served", async (t) => {
  const key = `${prefix}entry`;
  const miss = await client.GET("/cache/{namespace}/{key}", {
    params: { path: { namespace: "ts", key } },
  });
  if (!miss.response.headers.get("x-cache")) {
    t.skip("the cache API is not served by this build");
    return;
  }
  assert.equal(miss.response.status, 404);
  assert.equal(miss.response.headers.get("x-cache"), "MISS");
  const put = await client.PUT("/cache/{namespace}/{key}", {
    params: { path: { namespace: "ts", key }, query: { ttl: 60 } },
    body: "cached bytes",
    bodySerializer: (body) => body as string,
    headers: { "Content-Type": "text/plain" },
  });
  assert.equal(put.response.status, 200);
  assert.equal(put.data?.stored, true);
  const hit = await client.GET("/cache/{namespace}/{key}", {
    params: { path: { namespace: "ts", key } },
    parseAs: "text",
  });
  assert.equal(hit.response.headers.get("x-cache"), "HIT");
  assert.equal(hit.data, "cached bytes");
  const removed = await client.DELETE("/cache/{namespace}/{key}", {
    params: { path: { namespace: "ts", key } },
  });
  assert.deepEqual(removed.data, { removed: 1 });
});
