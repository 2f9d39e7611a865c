"""Profiles restash under one load shape with `perf record` (cpu-clock samples and
DWARF call graphs: this machine's VM exposes no hardware counters) and prints
where its CPU time goes per request (see perf_categories.py).

    bench/profile [get_json|get_path|set|pipeline10|pipeline100|unloaded] [seconds]

Servers on CPU 1, wrk on CPU 0, as in bench/run. Writes
bench/results/profile-<shape>-<time>.txt (the breakdown and perf's top functions).
"""

import datetime
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import harness
import loads

SHAPES = {
    "get_json": ("restash_get_json.lua", 50, None),
    "get_path": ("restash_get_path.lua", 50, None),
    "set": ("restash_set_json.lua", 50, None),
    "pipeline10": ("restash_pipeline.lua", 50, 10),
    "pipeline100": ("restash_pipeline.lua", 50, 100),
    "unloaded": ("restash_get_json.lua", 1, None),
}


def main(argv):
    shape = argv[1] if len(argv) > 1 else "get_json"
    seconds = int(argv[2]) if len(argv) > 2 else 5
    binary, results = argv[3], argv[4]
    script, connections, per = SHAPES[shape]
    workdir = tempfile.mkdtemp(prefix="restash-profile-")
    token = "bench-" + secrets.token_hex(16)
    redis = harness.start_redis(shutil.which("redis-server"), 1, workdir)
    restash = None
    try:
        harness.redis_command(redis.port, "SET", "bench:get", b"v" * 100)
        restash = harness.start_restash(binary, 1, workdir, redis.port, token, 2)
        loads.wrk(0, script, restash.port, connections, 1, token=token, pipeline=per)  # warm-up
        outcome = {}

        def load():
            outcome["run"] = loads.wrk(0, script, restash.port, connections, seconds + 2,
                                       token=token, pipeline=per)

        thread = threading.Thread(target=load)
        thread.start()
        time.sleep(1)
        data = os.path.join(workdir, "perf.data")
        cpu_before = restash.cpu()
        started = time.monotonic()
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999",
                        "--call-graph", "dwarf,16384", "-p", str(restash.pid), "-o", data,
                        "--", "sleep", str(seconds)], check=True)
        elapsed = time.monotonic() - started
        cpu = restash.cpu() - cpu_before
        thread.join()
        run = outcome["run"]
        # Requests during the sampled window, from the run's average rate.
        requests = run["rps"] * elapsed
        per_request = cpu * 1e6 / requests
        script_out = subprocess.run(
            ["perf", "script", "-i", data, "-F", "comm,tid,ip,sym"],
            capture_output=True, text=True, check=True).stdout
        here = os.path.dirname(os.path.abspath(__file__))
        breakdown = subprocess.run(
            [sys.executable, os.path.join(here, "perf_categories.py"), f"{per_request:.2f}"],
            input=script_out, capture_output=True, text=True, check=True).stdout
        top = subprocess.run(
            ["perf", "report", "-i", data, "--no-children", "--sort", "sym", "--stdio",
             "-g", "none", "--percent-limit", "0.5"],
            capture_output=True, text=True, check=True).stdout
        top = "\n".join(l for l in top.splitlines() if "%" in l and not l.startswith("#"))
        header = (f"restash profile, shape {shape}: {run['rps']:.0f} req/s "
                  f"({run['rps'] * (per or 1):.0f} commands/s) on {connections} connection(s), "
                  f"{per_request:.1f} µs CPU per request while sampled (perf adds some); "
                  f"load average {open('/proc/loadavg').read().split()[:3]}")
        text = f"{header}\n\n{breakdown}\nTop functions (self):\n{top}\n"
        os.makedirs(results, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = os.path.join(results, f"profile-{shape}-{stamp}.txt")
        with open(path, "w") as f:
            f.write(text)
        print(text)
        print(f"written to {path}")
    finally:
        if restash:
            restash.stop()
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv)
