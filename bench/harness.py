"""Processes under test: Redis, webdis and restash, pinned to the server CPU.

Every server runs under `taskset -c <cpu>` (taskset execs, so the pid we hold is
the server's own), logs into the session's temporary folder, and is stopped with
SIGTERM (then SIGKILL) when the session ends.
"""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A server did not start or a load generator failed."""


def free_port():
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, timeout=30.0):
    """Waits until something accepts on 127.0.0.1:port; fails if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"process {proc.args} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listens on port {port} after {timeout} s")


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may contain spaces: split after its ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def memory_kib(pid):
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def thread_names(pid):
    """Names of a process's threads."""
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return sorted(names)


class Server:
    """One pinned server process."""

    def __init__(self, name, cmd, port, cpu, workdir, env=None):
        self.name = name
        self.port = port
        log = open(os.path.join(workdir, f"{name}.log"), "ab")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(cpu)] + cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=workdir,
        )
        log.close()
        wait_for_port(port, self.proc)

    @property
    def pid(self):
        """The server's pid."""
        return self.proc.pid

    def cpu(self):
        """CPU seconds used so far."""
        return cpu_seconds(self.pid)

    def memory(self):
        """VmRSS and VmHWM in KiB."""
        return memory_kib(self.pid)

    def stop(self):
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_redis(binary, cpu, workdir):
    """A private Redis without persistence."""
    port = free_port()
    cmd = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", workdir, "--maxclients", "20000",
    ]
    return Server("redis", cmd, port, cpu, workdir)


def start_webdis(binary, cpu, workdir, redis_port, threads, connections):
    """webdis with its JSON config in the temp dir. Its `pool_size` counts
    connections per thread, so `connections` is split across the threads."""
    port = free_port()
    config = {
        "redis_host": "127.0.0.1",
        "redis_port": redis_port,
        "redis_auth": None,
        "http_host": "127.0.0.1",
        "http_port": port,
        "threads": threads,
        "pool_size": max(1, connections // threads),
        "daemonize": False,
        "database": 0,
        "acl": [{"disabled": ["DEBUG"]}],
        "verbosity": 1,
        "logfile": os.path.join(workdir, "webdis-own.log"),
    }
    path = os.path.join(workdir, "webdis.json")
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    return Server("webdis", [binary, path], port, cpu, workdir)


NGINX_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/nginx-body;
  keepalive_requests 100000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      default_type application/json;
      return 200 '{body}';
    }}
  }}
}}
"""


def start_nginx(binary, cpu, workdir, body):
    """nginx as one process answering every request with the fixed `body`: no
    Redis, no parsing beyond HTTP. Run at the same fixed rates as the gateways,
    it shows what the load generator and this machine cost on their own."""
    port = free_port()
    path = os.path.join(workdir, "nginx.conf")
    with open(path, "w") as f:
        f.write(NGINX_CONFIG.format(workdir=workdir, port=port, body=body))
    return Server("nginx", [binary, "-c", path, "-p", workdir], port, cpu, workdir)


def start_restash(binary, cpu, workdir, redis_port, token, worker_threads, extra_env=None):
    """restash with `worker_threads` tokio workers (TOKIO_WORKER_THREADS, read by
    `#[tokio::main]`) and its defaults otherwise (`extra_env` overrides)."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "RESTASH_LISTEN": f"127.0.0.1:{port}",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}",
        "RESTASH_TOKEN": token,
        "TOKIO_WORKER_THREADS": str(worker_threads),
    }
    env.update(extra_env or {})
    server = Server("restash", [binary], port, cpu, workdir, env=env)
    # Ready means Redis answered (the command table is loaded at start-up).
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise BenchError("restash did not become ready")
        time.sleep(0.1)


def start_floor(binary, cpu, workdir, worker_threads):
    """The HTTP stack's floor (`bench/floor.rs`): hyper on tokio with
    `worker_threads` workers, answering every request with a fixed 113-byte JSON
    body; no routing, middleware, authentication or Redis."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "FLOOR_LISTEN": f"127.0.0.1:{port}",
        "TOKIO_WORKER_THREADS": str(worker_threads),
    }
    return Server("hyper", [binary], port, cpu, workdir, env=env)


def redis_command(port, *args):
    """Sends one command to Redis and returns its raw reply (enough for the
    bench's SET and CLIENT LIST; not a general RESP parser)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        arg = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"".join(parts))
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        header, _, rest = data.partition(b"\r\n")
        if header.startswith(b"$"):
            length = int(header[1:])
            while len(rest) < length:
                rest += s.recv(65536)
            return rest[:length]
        return header


def redis_clients(redis_port):
    """Clients connected to Redis, not counting the one asking."""
    listing = redis_command(redis_port, "CLIENT", "LIST")
    return len([line for line in listing.split(b"\n") if line.strip()]) - 1
