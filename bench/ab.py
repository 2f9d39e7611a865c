"""A/B of two restash binaries on one load shape, alternating, same Redis.

    python3 bench/ab.py OLD_BINARY NEW_BINARY [--shape get_json|cache_get|…] [--rounds 3]
                        [--duration 5] [--connections 50] [--env KEY=VALUE ...]
                        [--old-env KEY=VALUE ...] [--new-env KEY=VALUE ...]

The same binary twice with `--old-env`/`--new-env` compares two settings.

Servers (Redis, restash) on CPU 1, wrk on CPU 0, TOKIO_WORKER_THREADS=2, a fresh
restash process per run (1 s of warm-up load, not recorded). Prints, per run and as
medians: requests/s, restash CPU µs per request, Redis CPU µs per request and
Redis commands per read (`total_commands_processed` / `total_reads_processed`
from INFO stats: how well restash batches). This is how the figures in
bench/README.md "What each change bought" are taken.
"""

import argparse
import http.client
import os
import statistics
import tempfile

import harness
import loads

SERVER_CPU, LOAD_CPU = 1, 0
TOKEN = "bench-ab-token-0123456789abcdef"
SHAPES = {
    "get_json": ("restash_get_json.lua", 1),
    "get_path": ("restash_get_path.lua", 1),
    "set": ("restash_set_json.lua", 1),
    "pipeline10": ("restash_pipeline.lua", 10),
    "pipeline100": ("restash_pipeline.lua", 100),
    "cache_get": ("restash_cache_get.lua", 1),
}


def store_cache_entry(port):
    """PUTs the 100-byte entry that the cache_get shape reads (a hit)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request(
        "PUT", "/cache/bench/item?ttl=86400", body=b"v" * 100,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"})
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise harness.BenchError(f"PUT /cache/bench/item answered {response.status}")


def redis_stats(port):
    """(commands processed, reads processed) from INFO stats."""
    text = harness.redis_command(port, "INFO", "stats").decode()
    fields = dict(
        line.split(":", 1) for line in text.splitlines() if ":" in line
    )
    return int(fields["total_commands_processed"]), int(fields["total_reads_processed"])


def one_run(binary, redis, workdir, args, env):
    script, per = SHAPES[args.shape]
    server = harness.start_restash(binary, SERVER_CPU, workdir, redis.port, TOKEN, 2, env)
    try:
        if args.shape == "cache_get":
            store_cache_entry(server.port)
        pipeline = per if per > 1 else None
        loads.wrk(LOAD_CPU, script, server.port, args.connections, 1, TOKEN, pipeline)
        cpu0, rcpu0 = server.cpu(), redis.cpu()
        cmds0, reads0 = redis_stats(redis.port)
        result = loads.wrk(
            LOAD_CPU, script, server.port, args.connections, args.duration, TOKEN, pipeline
        )
        cmds1, reads1 = redis_stats(redis.port)
        requests = max(result["requests"], 1)
        return {
            "rps": result["rps"],
            "cmd_per_s": result["rps"] * per,
            "cpu_us": (server.cpu() - cpu0) * 1e6 / requests,
            "redis_cpu_us": (redis.cpu() - rcpu0) * 1e6 / requests,
            "cmds_per_read": (cmds1 - cmds0) / max(reads1 - reads0, 1),
            "p99_us": result["p99_us"],
            "errors": result["errors"],
        }
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--shape", default="get_json", choices=sorted(SHAPES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for restash")
    parser.add_argument("--old-env", action="append", default=[], help="KEY=VALUE, old only")
    parser.add_argument("--new-env", action="append", default=[], help="KEY=VALUE, new only")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    envs = {
        name: {**env, **dict(item.split("=", 1) for item in extra)}
        for name, extra in (("old", args.old_env), ("new", args.new_env))
    }
    with tempfile.TemporaryDirectory(prefix="restash-ab-") as workdir:
        redis = harness.start_redis("redis-server", SERVER_CPU, workdir)
        try:
            harness.redis_command(redis.port, "SET", "bench:get", "v" * 100)
            runs = {"old": [], "new": []}
            for rnd in range(args.rounds):
                order = ("old", "new") if rnd % 2 == 0 else ("new", "old")
                for name in order:
                    binary = getattr(args, name)
                    run = one_run(binary, redis, workdir, args, envs[name])
                    runs[name].append(run)
                    print(
                        f"round {rnd + 1} {name}: {run['rps']:,.0f} req/s "
                        f"({run['cmd_per_s']:,.0f} cmd/s), {run['cpu_us']:.1f} µs CPU/req, "
                        f"Redis {run['redis_cpu_us']:.1f} µs/req, "
                        f"{run['cmds_per_read']:.2f} cmds/read, p99 {run['p99_us']} µs, "
                        f"errors {run['errors']}, load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
            for name in ("old", "new"):
                med = {
                    k: statistics.median(r[k] for r in runs[name])
                    for k in ("rps", "cmd_per_s", "cpu_us", "redis_cpu_us", "cmds_per_read")
                }
                print(
                    f"median {name}: {med['rps']:,.0f} req/s ({med['cmd_per_s']:,.0f} cmd/s), "
                    f"{med['cpu_us']:.1f} µs CPU/req, Redis {med['redis_cpu_us']:.1f} µs/req, "
                    f"{med['cmds_per_read']:.2f} cmds/read"
                )
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
