"""A/B of restash variants at a fixed request rate (oha, open loop), alternating, same Redis.

    python3 bench/rate_ab.py NAME:[BIN=/path/to/restash][,KEY=VALUE...] NAME:... \
                             [--rate 15000] [--rounds 4] [--duration 10]

    python3 bench/rate_ab.py old:BIN=/tmp/restash-old new:BIN=/tmp/restash-new
    python3 bench/rate_ab.py two: one:RESTASH_REDIS_CONNECTIONS=1     # same binary, two settings

Each variant is a binary (default: the release build in $CARGO_TARGET_DIR) and extra
environment. Servers (Redis, restash) on CPU 1, oha on CPU 0, TOKIO_WORKER_THREADS=2, a
fresh restash per run, 2 s of warm-up at the same rate (not recorded), GET as `POST /`
JSON on 50 connections. Prints per run and as medians: p50 and p99 latency (oha's
latency correction: from when each request was due), restash and Redis CPU µs per
request, and Redis commands per read (how well restash batches).
"""

import argparse
import os
import statistics
import tempfile

import harness
import loads
from ab import LOAD_CPU, SERVER_CPU, TOKEN, redis_stats

DEFAULT_BINARY = os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/restash-target")),
    "release", "restash")


def parse_variant(text):
    """`name:BIN=path,KEY=VALUE` -> (name, binary, env); values cannot hold commas."""
    name, _, spec = text.partition(":")
    env = dict(item.split("=", 1) for item in spec.split(",") if item)
    return name, env.pop("BIN", DEFAULT_BINARY), env


def one_run(binary, env, redis, workdir, args):
    server = harness.start_restash(binary, SERVER_CPU, workdir, redis.port, TOKEN, 2, env)
    try:
        url = f"http://127.0.0.1:{server.port}/"
        request = dict(method="POST", body='["GET","bench:get"]',
                       headers=[f"Authorization: Bearer {TOKEN}",
                                "Content-Type: application/json"])
        loads.oha(LOAD_CPU, url, args.rate, 2, 50, **request)
        cpu0, redis_cpu0 = server.cpu(), redis.cpu()
        commands0, reads0 = redis_stats(redis.port)
        result = loads.oha(LOAD_CPU, url, args.rate, args.duration, 50, **request)
        commands1, reads1 = redis_stats(redis.port)
        requests = max(result["requests"], 1)
        return {
            "p50_us": result["p50_us"],
            "p99_us": result["p99_us"],
            "cpu_us": (server.cpu() - cpu0) * 1e6 / requests,
            "redis_cpu_us": (redis.cpu() - redis_cpu0) * 1e6 / requests,
            "cmds_per_read": (commands1 - commands0) / max(reads1 - reads0, 1),
            "errors": result["errors"],
        }
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="NAME:[BIN=path][,KEY=VALUE...]")
    parser.add_argument("--rate", type=int, default=15000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variants]
    with tempfile.TemporaryDirectory(prefix="restash-rate-ab-") as workdir:
        redis = harness.start_redis("redis-server", SERVER_CPU, workdir)
        try:
            harness.redis_command(redis.port, "SET", "bench:get", "v" * 100)
            runs = {name: [] for name, _, _ in variants}
            for rnd in range(args.rounds):
                order = variants if rnd % 2 == 0 else list(reversed(variants))
                for name, binary, env in order:
                    run = one_run(binary, env, redis, workdir, args)
                    runs[name].append(run)
                    print(
                        f"round {rnd + 1} {name}: p50 {run['p50_us']:.0f} µs, "
                        f"p99 {run['p99_us']:.0f} µs, {run['cpu_us']:.1f} µs CPU/req, "
                        f"Redis {run['redis_cpu_us']:.1f} µs/req, "
                        f"{run['cmds_per_read']:.2f} cmds/read, errors {run['errors']}, "
                        f"load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
            for name, _, _ in variants:
                med = {k: statistics.median(r[k] for r in runs[name]) for k in runs[name][0]}
                errors = sum(r["errors"] for r in runs[name])
                print(
                    f"median {name}: p50 {med['p50_us']:.0f} µs, p99 {med['p99_us']:.0f} µs, "
                    f"{med['cpu_us']:.1f} µs CPU/req, Redis {med['redis_cpu_us']:.1f} µs/req, "
                    f"{med['cmds_per_read']:.2f} cmds/read, errors {errors} in all"
                )
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
