-- Shared by every wrk script in this folder: reads the bench settings from the
-- environment and prints one machine-readable line when the run ends.
--
--   BENCH_TOKEN     bearer token for restash (unset for webdis)
--   BENCH_PIPELINE  commands per /pipeline request (pipeline.lua only)
--
-- The scripts set wrk.method, wrk.path, wrk.body and wrk.headers once, so wrk
-- sends a fixed request without calling Lua per request (no request() hook).

local common = {}

-- A 100-byte value (the issue's value size).
common.value = string.rep("v", 100)

-- Sets the bearer token from BENCH_TOKEN.
function common.bearer()
   local token = os.getenv("BENCH_TOKEN")
   if token == nil or token == "" then
      error("BENCH_TOKEN is not set")
   end
   wrk.headers["Authorization"] = "Bearer " .. token
end

-- Percentiles printed for the latency charts (HdrHistogram style).
local percentiles = {
   1, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 92.5, 95, 96.875, 97.5,
   98.4375, 99, 99.21875, 99.5, 99.609375, 99.8, 99.9, 99.95, 99.99,
}

-- wrk's done() hook: one line `BENCH_JSON {...}` with counts and latencies in µs.
function common.done(summary, latency, requests)
   local e = summary.errors
   local parts = {}
   for _, p in ipairs(percentiles) do
      parts[#parts + 1] = string.format('["%s",%d]', tostring(p), latency:percentile(p))
   end
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f,' ..
      '"p50":%d,"p90":%d,"p99":%d,"p999":%d},"percentiles_us":[%s]}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.max, latency.stdev,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), table.concat(parts, ",")))
end

return common
