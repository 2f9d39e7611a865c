"""restash next to webdis and redis-benchmark, in one session (issue 7).

Run it through `bench/run` (which installs the tools and builds restash).
Servers (Redis, webdis, restash, and two floors answering a constant: nginx, and
hyper on tokio as restash uses them, `bench/floor.rs`) run on the server CPU, load
generators on the load CPU. Every round restarts webdis and restash, measures memory idle and with
many open connections, then runs every shape once, alternating which of webdis
and restash goes first. The report takes min / median / max over rounds of every
figure and of every ratio taken within a round.
"""

import argparse
import datetime
import http.client
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import harness
import loads
import report

SERVER_CPU = 1
LOAD_CPU = 0
VALUE = b"v" * 100
RESTASH_WORKERS = 2
WEBDIS_THREADS = 2
WEBDIS_REDIS_CONNECTIONS = 4


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 round, 1 s per run, 1,000 held connections")
    p.add_argument("--repeats", type=int, help="rounds (default 3)")
    p.add_argument("--duration", type=float, help="seconds per run (default 10)")
    p.add_argument("--connections", type=int, default=50, help="load connections (50)")
    p.add_argument("--hold", type=int, help="idle connections for the memory figure (5000)")
    p.add_argument("--rates", default="5000,15000", help="fixed rates, requests/s")
    p.add_argument("--restash", required=True, help="restash release binary")
    p.add_argument("--floor", help="bench/floor.rs release binary (hyper answering a constant)")
    p.add_argument("--results", required=True, help="folder for the result files")
    p.add_argument("--note", default="", help="free text stored with the results")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = args.repeats or 1
        args.duration = args.duration or 1
        args.hold = args.hold or 1000
    args.repeats = args.repeats or 3
    args.duration = args.duration or 10
    args.hold = args.hold or 5000
    args.rates = [int(r) for r in args.rates.split(",") if r]
    return args


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def cpu_busy(cpu):
    """Busy and total jiffies of one CPU from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                return sum(v[:8]) - idle, sum(v[:8])
    return 0, 1


def _count(names):
    counts = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts


def children_cpu():
    """CPU seconds of finished child processes (the load generators)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def request(port, method, path, token=None, body=None, headers=None):
    """One request; returns (status, headers, body). (Not urllib: webdis 0.1.9 hangs
    on a POST whose body arrives after headers carrying `Connection: close`.)"""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


class Session:
    """Servers, measurements and the list of run records."""

    def __init__(self, args):
        self.args = args
        self.workdir = tempfile.mkdtemp(prefix="restash-bench-")
        self.token = "bench-" + secrets.token_hex(16)
        self.runs = []
        self.notes = []
        self.meta = {}
        self.redis = None
        self.restash = None
        self.webdis = None
        self.nginx = None
        self.hyper = None
        self.rb_estimate = {}
        self.cache = None

    # ---- servers -------------------------------------------------------

    def start_redis(self):
        self.redis = harness.start_redis(shutil.which("redis-server"), SERVER_CPU, self.workdir)
        harness.redis_command(self.redis.port, "SET", "bench:get", VALUE)

    def start_gateways(self):
        before = harness.redis_clients(self.redis.port)
        self.webdis = harness.start_webdis(
            shutil.which("webdis"), SERVER_CPU, self.workdir, self.redis.port,
            threads=WEBDIS_THREADS, connections=WEBDIS_REDIS_CONNECTIONS)
        for _ in range(50):
            request(self.webdis.port, "GET", "/GET/bench:get")
        webdis_conns = harness.redis_clients(self.redis.port) - before
        before = harness.redis_clients(self.redis.port)
        self.restash = harness.start_restash(
            self.args.restash, SERVER_CPU, self.workdir, self.redis.port, self.token,
            worker_threads=RESTASH_WORKERS)
        restash_conns = harness.redis_clients(self.redis.port) - before
        self.nginx = harness.start_nginx(
            shutil.which("nginx") or "/usr/sbin/nginx", SERVER_CPU, self.workdir,
            '{"result":"' + VALUE.decode() + '"}')
        if self.args.floor:
            self.hyper = harness.start_floor(self.args.floor, SERVER_CPU, self.workdir,
                                             RESTASH_WORKERS)
        self.meta.setdefault("webdis_redis_connections", webdis_conns)
        self.meta.setdefault("restash_redis_connections", restash_conns)
        self.meta.setdefault("restash_threads", _count(harness.thread_names(self.restash.pid)))
        self.meta.setdefault("webdis_threads", _count(harness.thread_names(self.webdis.pid)))

    def stop_gateways(self):
        for server in (self.restash, self.webdis, self.nginx, self.hyper):
            if server:
                server.stop()
        self.restash = self.webdis = self.nginx = self.hyper = None

    def stop_all(self):
        self.stop_gateways()
        if self.redis:
            self.redis.stop()

    def check_answers(self):
        """Every shape's request answers the 100-byte value (or OK) before any load."""
        v = VALUE.decode()
        checks = [
            (self.restash.port, "POST", "/", b'["GET","bench:get"]', v),
            (self.restash.port, "GET", "/get/bench:get", None, v),
            (self.restash.port, "POST", "/pipeline", b'[["GET","bench:get"]]', v),
            (self.restash.port, "POST", "/", b'["SET","bench:set","' + VALUE + b'"]', "OK"),
            (self.webdis.port, "GET", "/GET/bench:get", None, v),
            (self.webdis.port, "GET", "/get/bench:get", None, v),
            (self.webdis.port, "POST", "/", b"SET/bench:set/" + VALUE, "OK"),
        ]
        for port, method, path, body, expect in checks:
            token = self.token if port == self.restash.port else None
            status, _, answer = request(port, method, path, token, body)
            if status != 200 or expect.encode() not in answer:
                raise harness.BenchError(
                    f"{method} {path} on port {port} answered {status}: {answer[:200]!r}")

    def probe_cache(self):
        """True when the cache-aside API answers a hit for a stored entry."""
        status, _, body = request(
            self.restash.port, "PUT", "/cache/bench/item?ttl=86400", self.token, VALUE,
            {"Content-Type": "application/octet-stream"})
        if status != 200:
            self.notes.append(
                f"cache-aside shape skipped: PUT /cache/bench/item answered {status} "
                f"{body[:120]!r}")
            return False
        status, headers, body = request(self.restash.port, "GET", "/cache/bench/item", self.token)
        x_cache = {k.lower(): v for k, v in headers.items()}.get("x-cache")
        if status != 200 or x_cache != "HIT" or body != VALUE:
            self.notes.append(
                f"cache-aside shape skipped: GET answered {status}, X-Cache {x_cache}")
            return False
        return True

    # ---- measurements ----------------------------------------------------

    def servers(self):
        servers = {"restash": self.restash, "webdis": self.webdis, "redis": self.redis}
        if self.nginx:
            servers["nginx"] = self.nginx
        if self.hyper:
            servers["hyper"] = self.hyper
        return servers

    def floors(self):
        """The servers that answer a constant: what the generator, the VM and (for
        hyper) restash's HTTP stack cost without any gateway work."""
        return [name for name in ("nginx", "hyper") if name in self.servers()]

    def measured(self, rnd, shape, target, fn, per=1):
        """Runs `fn`, with CPU deltas of every server and of the server CPU."""
        cpus = {name: s.cpu() for name, s in self.servers().items()}
        busy0, total0 = cpu_busy(SERVER_CPU)
        load_busy0, load_total0 = cpu_busy(LOAD_CPU)
        children0 = children_cpu()
        started_load = loadavg()
        result = fn()
        busy1, total1 = cpu_busy(SERVER_CPU)
        load_busy1, load_total1 = cpu_busy(LOAD_CPU)
        generator = children_cpu() - children0
        deltas = {name: s.cpu() - cpus[name] for name, s in self.servers().items()}
        requests = max(result["requests"], 1)
        record = dict(result)
        record.update(round=rnd, shape=shape, target=target, loadavg=started_load,
                      commands_per_request=per)
        record["commands_per_s"] = result["rps"] * per
        for name, seconds in deltas.items():
            record[f"{name}_cpu_us_per_req"] = seconds * 1e6 / requests
        if target in deltas:
            record["cpu_us_per_req"] = record[f"{target}_cpu_us_per_req"]
        # Share of the server CPU used by processes that are not ours.
        jiffies = max(total1 - total0, 1)
        ours = sum(deltas.values()) * harness.CLK_TCK
        record["foreign_server_cpu_pct"] = max(0.0, (busy1 - busy0 - ours) * 100 / jiffies)
        # The same on the load CPU, less the load generator's own CPU time.
        load_jiffies = max(load_total1 - load_total0, 1)
        record["generator_cpu_pct"] = generator * harness.CLK_TCK * 100 / load_jiffies
        record["foreign_load_cpu_pct"] = max(
            0.0, (load_busy1 - load_busy0 - generator * harness.CLK_TCK) * 100 / load_jiffies)
        self.runs.append(record)
        tag = f"{shape}/{target}"
        lat = f"p50 {record.get('p50_us') or 0:.0f} µs p99 {record.get('p99_us') or 0:.0f} µs"
        cpu = record.get("cpu_us_per_req")
        print(f"  r{rnd} {tag:<34} {record['rps']:>10.0f} req/s  {lat}"
              + (f"  cpu {cpu:.1f} µs/req" if cpu is not None else "")
              + (f"  ERRORS {record['errors']}" if record["errors"] else ""), flush=True)
        return record

    def wrk(self, rnd, shape, target, script, connections=None, per=1):
        """`target` is restash, webdis, or a floor (nginx, hyper: sent restash's
        request, token and all, which they answer with their constant)."""
        server = target if target in ("nginx", "hyper") else (
            "restash" if target.startswith("restash") else "webdis")
        port = self.servers()[server].port
        token = self.token if server != "webdis" else None
        return self.measured(rnd, shape, server, lambda: loads.wrk(
            LOAD_CPU, script, port, connections or self.args.connections,
            self.args.duration, token=token, pipeline=per if per > 1 else None), per)

    def redis_benchmark(self, rnd, shape, clients, pipeline):
        key = (clients, pipeline)
        if key not in self.rb_estimate:
            # Calibrate (and warm up): a short run tells how many requests fill the duration.
            probe = loads.redis_benchmark(LOAD_CPU, self.redis.port, clients, pipeline,
                                          20_000 if clients > 1 else 2_000)
            self.rb_estimate[key] = probe["rps"]
        n = max(1000, int(self.rb_estimate[key] * self.args.duration))
        record = self.measured(rnd, shape, "redis", lambda: loads.redis_benchmark(
            LOAD_CPU, self.redis.port, clients, pipeline, n))
        self.rb_estimate[key] = record["rps"]
        return record

    def oha(self, rnd, shape, target, rate):
        if target == "restash":
            url = f"http://127.0.0.1:{self.restash.port}/"
            kw = dict(method="POST", body='["GET","bench:get"]',
                      headers=[f"Authorization: Bearer {self.token}",
                               "Content-Type: application/json"])
        elif target in ("nginx", "hyper"):
            url = f"http://127.0.0.1:{self.servers()[target].port}/"
            kw = {}
        else:
            url = f"http://127.0.0.1:{self.webdis.port}/GET/bench:get"
            kw = {}
        return self.measured(rnd, shape, target, lambda: loads.oha(
            LOAD_CPU, url, rate, self.args.duration, self.args.connections, **kw))

    def memory(self, rnd, target, server, path, token):
        """Peak RSS idle, then with `hold` open connections."""
        request(server.port, "GET", path, token)
        time.sleep(1)
        idle = server.memory()
        holder = subprocess.Popen(
            ["taskset", "-c", str(LOAD_CPU), sys.executable,
             os.path.join(os.path.dirname(os.path.abspath(__file__)), "hold.py"),
             str(server.port), str(self.args.hold), path] + ([token] if token else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = holder.stdout.readline().split()
        time.sleep(1)
        held = server.memory()
        holder.stdin.close()
        holder.wait(timeout=60)
        opened = int(line[1]) if len(line) > 1 else 0
        answered = int(line[2]) if len(line) > 2 else 0
        record = {
            "round": rnd, "shape": "memory", "target": target, "tool": "hold.py",
            "idle_hwm_mb": idle["VmHWM"] * 1024 / 1e6,
            "idle_rss_mb": idle["VmRSS"] * 1024 / 1e6,
            "held_hwm_mb": held["VmHWM"] * 1024 / 1e6,
            "held_rss_mb": held["VmRSS"] * 1024 / 1e6,
            "held_connections": opened, "held_answered": answered,
            "requested_connections": self.args.hold, "loadavg": loadavg(),
        }
        self.runs.append(record)
        print(f"  r{rnd} memory/{target:<27} idle peak {record['idle_hwm_mb']:.1f} MB, "
              f"{opened} connections ({answered} answered 2xx): peak "
              f"{record['held_hwm_mb']:.1f} MB", flush=True)

    # ---- one round -------------------------------------------------------

    def round(self, rnd):
        args = self.args
        print(f"round {rnd}/{args.repeats} (load average {loadavg()})", flush=True)
        self.start_gateways()
        if rnd == 1:
            self.check_answers()
            self.cache = self.probe_cache()
        elif self.cache:
            self.cache = self.probe_cache()
        first_restash = rnd % 2 == 1

        def pair(restash_fn, webdis_fn):
            for fn in ((restash_fn, webdis_fn) if first_restash else (webdis_fn, restash_fn)):
                fn()

        # Memory before any load, so that "idle" is a fresh process.
        pair(lambda: self.memory(rnd, "restash", self.restash, "/get/bench:get", self.token),
             lambda: self.memory(rnd, "webdis", self.webdis, "/GET/bench:get", None))
        # Warm-up (not recorded).
        loads.wrk(LOAD_CPU, "restash_get_json.lua", self.restash.port, args.connections,
                  1, token=self.token)
        loads.wrk(LOAD_CPU, "webdis_get.lua", self.webdis.port, args.connections, 1)

        shapes = [
            ("get_json", "restash_get_json.lua", "webdis_get.lua"),
            ("get_path", "restash_get_path.lua", "webdis_get_path.lua"),
            ("set", "restash_set_json.lua", "webdis_set.lua"),
        ]
        for shape, restash_script, webdis_script in shapes:
            pair(lambda: self.wrk(rnd, shape, "restash", restash_script),
                 lambda: self.wrk(rnd, shape, "webdis", webdis_script))
            if shape == "get_json":
                self.redis_benchmark(rnd, "get_json", clients=args.connections, pipeline=1)
                for floor in self.floors():
                    self.wrk(rnd, "get_json", floor, restash_script)
        for n in (10, 100):
            self.wrk(rnd, f"pipeline{n}", "restash", "restash_pipeline.lua", per=n)
        self.redis_benchmark(rnd, "pipeline_p16", clients=args.connections, pipeline=16)

        # One connection, no other load.
        pair(lambda: (self.wrk(rnd, "unloaded", "restash", "restash_get_json.lua", 1),
                      self.wrk(rnd, "unloaded_path", "restash", "restash_get_path.lua", 1)),
             lambda: self.wrk(rnd, "unloaded", "webdis", "webdis_get.lua", 1))
        self.redis_benchmark(rnd, "unloaded", clients=1, pipeline=1)
        for floor in self.floors():
            self.wrk(rnd, "unloaded", floor, "restash_get_json.lua", 1)

        for rate in args.rates:
            pair(lambda: self.oha(rnd, f"rate{rate}", "restash", rate),
                 lambda: self.oha(rnd, f"rate{rate}", "webdis", rate))
            # The floors: the same generator against servers that do almost nothing.
            for floor in self.floors():
                self.oha(rnd, f"rate{rate}", floor, rate)

        if self.cache:
            self.wrk(rnd, "cache_get", "restash", "restash_cache_get.lua")
        self.stop_gateways()


def versions():
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return None

    return {
        "redis": out(["redis-server", "--version"]),
        "webdis": out(["dpkg-query", "-W", "-f", "${Version}", "webdis"]),
        "wrk": (out(["dpkg-query", "-W", "-f", "${Version}", "wrk"])),
        "oha": out(["oha", "--version"]),
        "nginx": out(["dpkg-query", "-W", "-f", "${Version}", "nginx-light"]),
        "restash_git": out(["git", "-C", os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), "describe", "--always", "--dirty"]),
    }


def main(argv):
    args = parse_args(argv)
    session = Session(args)
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"restash bench: {args.repeats} round(s) of {args.duration:g} s runs, "
          f"servers on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}; temp dir {session.workdir}",
          flush=True)
    load_before = loadavg()
    try:
        session.start_redis()
        for rnd in range(1, args.repeats + 1):
            session.round(rnd)
    finally:
        session.stop_all()
    meta = dict(session.meta)
    meta.update(
        started=started.isoformat(timespec="seconds"),
        finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        loadavg_before=load_before, loadavg_after=loadavg(),
        settings={"repeats": args.repeats, "duration_s": args.duration,
                  "connections": args.connections, "hold": args.hold,
                  "rates": args.rates, "quick": args.quick, "value_bytes": len(VALUE),
                  "server_cpu": SERVER_CPU, "load_cpu": LOAD_CPU,
                  "restash_worker_threads": RESTASH_WORKERS, "webdis_threads": WEBDIS_THREADS},
        versions=versions(), notes=session.notes, note=args.note,
        cpu_model=next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                        if l.startswith("model name")), None),
    )
    os.makedirs(args.results, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
    base = os.path.join(args.results, stamp)
    results = report.build(meta, session.runs)
    with open(base + ".json", "w") as f:
        json.dump(results, f, indent=1)
    markdown = report.markdown(results)
    with open(base + ".md", "w") as f:
        f.write(markdown)
    report.chart(results, base + ".png")
    shutil.rmtree(session.workdir, ignore_errors=True)
    print()
    print(markdown)
    print(f"results: {base}.json, {base}.md, {base}.png")


if __name__ == "__main__":
    main(sys.argv[1:])
