"""Load generators, pinned to the load CPU: wrk (closed loop, Lua scripts in
bench/lua), oha (open loop at a fixed rate, latency-corrected) and
redis-benchmark. Each returns a dict of figures; latencies are in microseconds.
"""

import json
import os
import re
import subprocess

from harness import BenchError

LUA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lua")


def _run(cmd, env=None, timeout=None):
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(cmd[:6])}… exited with {done.returncode}: {done.stderr.strip()[:500]}"
        )
    return done.stdout


def wrk(cpu, script, port, connections, duration, token=None, pipeline=None):
    """One wrk run (one thread) with a script from bench/lua."""
    env = dict(os.environ, BENCH_LUA_DIR=LUA_DIR)
    if token:
        env["BENCH_TOKEN"] = token
    if pipeline:
        env["BENCH_PIPELINE"] = str(pipeline)
    cmd = [
        "taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}",
        f"-d{duration}s", "--timeout", "5s",
        "-s", os.path.join(LUA_DIR, script), f"http://127.0.0.1:{port}",
    ]
    out = _run(cmd, env=env, timeout=duration + 60)
    line = next((l for l in out.splitlines() if l.startswith("BENCH_JSON ")), None)
    if line is None:
        raise BenchError(f"wrk printed no BENCH_JSON line:\n{out[-1000:]}")
    raw = json.loads(line[len("BENCH_JSON "):])
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw["errors"].values())
    lat = raw["latency_us"]
    return {
        "tool": "wrk",
        "requests": raw["requests"],
        "seconds": seconds,
        "rps": raw["requests"] / seconds,
        "errors": errors,
        "error_detail": raw["errors"],
        "p50_us": lat["p50"],
        "p90_us": lat["p90"],
        "p99_us": lat["p99"],
        "p999_us": lat["p999"],
        "mean_us": lat["mean"],
        "max_us": lat["max"],
        "percentiles_us": [[float(p), v] for p, v in raw["percentiles_us"]],
    }


def redis_benchmark(cpu, port, clients, pipeline, requests):
    """redis-benchmark GET of the 100-byte value `bench:get`."""
    cmd = [
        "taskset", "-c", str(cpu), "redis-benchmark", "-h", "127.0.0.1",
        "-p", str(port), "-c", str(clients), "-n", str(requests),
        "-P", str(pipeline), "--precision", "3", "GET", "bench:get",
    ]
    out = _run(cmd, timeout=600).replace("\r", "\n")
    throughput = re.search(r"throughput summary: ([\d.]+) requests per second", out)
    summary = re.search(
        r"avg\s+min\s+p50\s+p95\s+p99\s+max\s*\n\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)"
        r"\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)",
        out,
    )
    seconds = re.search(r"requests completed in ([\d.]+) seconds", out)
    if not (throughput and summary and seconds):
        raise BenchError(f"cannot parse redis-benchmark output:\n{out[-1500:]}")
    avg, _min, p50, _p95, p99, mx = (float(x) * 1000 for x in summary.groups())
    percentiles = [
        [float(p), float(ms) * 1000]
        for p, ms in re.findall(r"^([\d.]+)% <= ([\d.]+) milliseconds", out, re.M)
    ]
    return {
        "tool": "redis-benchmark",
        "requests": requests,
        "seconds": float(seconds.group(1)),
        "rps": float(throughput.group(1)),
        "errors": 0,
        "p50_us": p50,
        "p99_us": p99,
        "mean_us": avg,
        "max_us": mx,
        # The "by percentile" part only (the cumulative part repeats 100%).
        "percentiles_us": _monotone(percentiles),
    }


def _monotone(points):
    """Keeps the first run of increasing percentiles."""
    out = []
    for p, v in points:
        if out and p <= out[-1][0]:
            break
        out.append([p, v])
    return out


def oha(cpu, url, rate, duration, connections, method="GET", body=None, headers=()):
    """One open-loop oha run at `rate` requests/s with latency correction (each
    latency counts from the moment the request was due, not when it was sent)."""
    cmd = [
        "taskset", "-c", str(cpu), "oha", "--no-tui", "--output-format", "json",
        "-z", f"{duration}s", "-q", str(rate), "--latency-correction",
        "-c", str(connections), "-m", method,
    ]
    for h in headers:
        cmd += ["-H", h]
    if body is not None:
        cmd += ["-d", body]
    cmd.append(url)
    out = _run(cmd, timeout=duration + 60)
    data = json.loads(out)
    summary = data["summary"]
    pct = data["latencyPercentiles"]
    statuses = data.get("statusCodeDistribution", {})
    ok = sum(n for code, n in statuses.items() if code.startswith("2"))
    total = sum(statuses.values())
    # Requests still in flight when the duration ends are aborted: not errors.
    errors = (total - ok) + sum(
        n for what, n in data.get("errorDistribution", {}).items()
        if what != "aborted due to deadline"
    )
    seconds = summary["total"]

    def us(key):
        value = pct.get(key)
        return None if value is None else value * 1e6

    percentiles = []
    for key, value in pct.items():
        if value is not None and key.startswith("p"):
            percentiles.append([float(key[1:]), value * 1e6])
    percentiles.sort()
    return {
        "tool": "oha",
        "requests": total,
        "seconds": seconds,
        "rps": summary["requestsPerSec"],
        "target_rps": rate,
        "errors": errors,
        "p50_us": us("p50"),
        "p90_us": us("p90"),
        "p99_us": us("p99"),
        "p999_us": us("p99.9"),
        "mean_us": summary["average"] * 1e6 if summary.get("average") else None,
        "max_us": summary["slowest"] * 1e6 if summary.get("slowest") else None,
        "percentiles_us": percentiles,
    }
