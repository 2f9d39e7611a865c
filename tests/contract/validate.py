"""Sends a representative request for every endpoint and every documented status to a live
restash, and validates each response against openapi/openapi.yaml with schemathesis' checks
(status code documented, content type documented, required headers present, body schema).

Run by tests/it/contract.rs, which starts restash and passes:
  RESTASH_URL           a gateway with Redis up (command timeout 500 ms, request timeout 1 s,
                        body limit RESTASH_MAX_BODY_BYTES)
  RESTASH_DOWN_URL      a gateway whose Redis is down
  RESTASH_TOKEN, RESTASH_READONLY_TOKEN, REDIS_PORT, RESTASH_MAX_BODY_BYTES
  RESTASH_LIMITED_TOKEN a JWT allowed one request per 100 s
"""

import os
import socket
import subprocess
import sys
import time
import uuid
from http.client import HTTPResponse
from pathlib import Path
from urllib.parse import urlsplit

import requests
import schemathesis
from schemathesis.core.transport import Response
from schemathesis.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = schemathesis.openapi.from_path(str(ROOT / "openapi" / "openapi.yaml"))
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

URL = os.environ["RESTASH_URL"]
DOWN_URL = os.environ["RESTASH_DOWN_URL"]
TOKEN = os.environ["RESTASH_TOKEN"]
READONLY = os.environ["RESTASH_READONLY_TOKEN"]
LIMITED = os.environ["RESTASH_LIMITED_TOKEN"]
REDIS_PORT = os.environ["REDIS_PORT"]
MAX_BODY = int(os.environ["RESTASH_MAX_BODY_BYTES"])
P = f"contract:{uuid.uuid4().hex[:8]}:"

passed = []
failed = []
skipped = []
seen = set()


def auth(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def check(template, method, response, status, name=None, path_parameters=None):
    """Validates `response` as an answer of the operation `method template`."""
    label = name or f"{method} {template} -> {status}"
    seen.add((template, method.upper(), response.status_code))
    try:
        assert response.status_code == status, (
            f"expected {status}, got {response.status_code}: {response.text[:300]!r}"
        )
        operation = SCHEMA[template][method.upper()]
        case = operation.Case(path_parameters=path_parameters or {})
        case.validate_response(response, checks=CHECKS)
        passed.append(label)
    except (Exception, BaseExceptionGroup) as error:  # noqa: BLE001 - report all, then fail
        failed.append(f"{label}: {error}")


def send(method, path, base=URL, **kwargs):
    kwargs.setdefault("timeout", 10)
    return requests.request(method, base + path, **kwargs)


def raw_slow_body(base, path, headers):
    """Sends headers and half a body, then waits for restash to give up (408)."""
    parts = urlsplit(base)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n["
    sock.sendall(head.encode())
    raw = HTTPResponse(sock)
    raw.begin()
    body = raw.read()
    headers_by_name = {}
    for name, value in raw.getheaders():
        headers_by_name.setdefault(name.lower(), []).append(value)
    response = Response(
        status_code=raw.status,
        headers=headers_by_name,
        content=body,
        request=requests.Request("POST", base + path, headers=headers).prepare(),
        elapsed=0.0,
        verify=False,
    )
    sock.close()
    return response


def commands():
    k = P + "k"
    check("/", "post", send("POST", "/", json=["SET", k, "v"], headers=auth()), 200)
    check("/", "post", send("POST", "/", json=["GET", k], headers={**auth(), "Upstash-Encoding": "base64"}), 200, "base64")
    check("/", "post", send("POST", "/", json=["GET", k], headers={**auth(), "Upstash-Response-Format": "resp2"}), 200, "resp2")
    check("/", "post", send("POST", "/", json=["INCR", k], headers=auth()), 400, "Redis error")
    check("/", "post", send("POST", "/", data=b"not json", headers=auth()), 400, "malformed")
    check("/", "post", send("POST", "/", json=["SUBSCRIBE", "x"], headers=auth()), 400, "refused")
    check("/", "post", send("POST", "/", json=["PING"]), 401)
    check("/", "post", send("POST", "/", json=["PING"], params={"_token": TOKEN}), 200, "query token")
    check("/", "post", send("POST", "/", json=["SET", k, "w"], headers=auth(READONLY)), 403)
    check("/", "post", send("POST", "/", data=b"[" + b" " * MAX_BODY + b"]", headers=auth()), 413)
    check("/", "post", send("POST", "/", json=["HSET", P + "h", "f", "v"], headers=auth()), 200)
    check("/", "post", send("POST", "/", json=["HGETALL", P + "h"], headers=auth()), 200, "array result")
    check("/", "post", send("POST", "/", json=["GET", P + "missing"], headers=auth()), 200, "null result")

    pipeline = [["SET", k, "1"], ["INCR", k], ["FOO"], ["GET", k]]
    check("/pipeline", "post", send("POST", "/pipeline", json=pipeline, headers=auth()), 200)
    check("/pipeline", "post", send("POST", "/pipeline", json=pipeline, headers={**auth(), "Upstash-Response-Format": "resp2"}), 200, "pipeline resp2")
    check("/pipeline", "post", send("POST", "/pipeline", json=[["SET", k, "x"]], headers=auth(READONLY)), 200, "pipeline read-only item")
    check("/pipeline", "post", send("POST", "/pipeline", json={"a": 1}, headers=auth()), 400)
    check("/pipeline", "post", send("POST", "/pipeline", json=[]), 401)

    check("/multi-exec", "post", send("POST", "/multi-exec", json=[["SET", k, "1"], ["INCR", k]], headers=auth()), 200)
    check("/multi-exec", "post", send("POST", "/multi-exec", json=[["SET", k]], headers=auth()), 400, "EXECABORT")
    check("/multi-exec", "post", send("POST", "/multi-exec", json=[["GET", k]], headers={**auth(), "Upstash-Response-Format": "resp2"}), 400, "multi-exec resp2")
    check("/multi-exec", "post", send("POST", "/multi-exec", json=[["SET", k, "1"]], headers=auth(READONLY)), 403)

    args = {"command": "get", "arguments": k}
    check("/{command}/{arguments}", "get", send("GET", f"/get/{k}", headers=auth()), 200, path_parameters=args)
    check("/{command}/{arguments}", "get", send("GET", f"/set/{k}/v", params={"EX": "100"}, headers=auth()), 200, "path with query", path_parameters=args)
    check("/{command}/{arguments}", "head", send("HEAD", f"/get/{k}", headers=auth()), 200, path_parameters=args)
    check("/{command}/{arguments}", "post", send("POST", f"/set/{k}", data=b"body value", headers=auth()), 200, path_parameters=args)
    check("/{command}/{arguments}", "put", send("PUT", f"/set/{k}", data=b"body value", headers=auth()), 200, path_parameters=args)
    check("/{command}/{arguments}", "get", send("GET", f"/incr/{k}", headers=auth()), 400, path_parameters=args)
    check("/{command}/{arguments}", "get", send("GET", f"/get/{k}"), 401, path_parameters=args)
    check("/{command}/{arguments}", "post", send("POST", f"/set/{k}", data=b"v", headers=auth(READONLY)), 403, path_parameters=args)
    check("/{command}", "get", send("GET", "/dbsize", headers=auth()), 200, path_parameters={"command": "dbsize"})
    check("/{command}", "post", send("POST", "/echo", data=b"hi", headers=auth()), 200, path_parameters={"command": "echo"})


def operations():
    check("/healthz", "get", send("GET", "/healthz"), 200)
    check("/readyz", "get", send("GET", "/readyz"), 200)
    check("/metrics", "get", send("GET", "/metrics"), 200)
    check("/openapi.yaml", "get", send("GET", "/openapi.yaml"), 200)


def failures():
    # Redis down: 503 everywhere Redis is needed.
    check("/", "post", send("POST", "/", base=DOWN_URL, json=["PING"], headers=auth()), 503)
    check("/pipeline", "post", send("POST", "/pipeline", base=DOWN_URL, json=[["PING"]], headers=auth()), 503)
    check("/multi-exec", "post", send("POST", "/multi-exec", base=DOWN_URL, json=[["PING"]], headers=auth()), 503)
    check("/readyz", "get", send("GET", "/readyz", base=DOWN_URL), 503)
    check("/healthz", "get", send("GET", "/healthz", base=DOWN_URL), 200, "healthz without Redis")
    # Redis stalled past the command timeout: 504.
    subprocess.run(["redis-cli", "-p", REDIS_PORT, "CLIENT", "PAUSE", "1200", "ALL"], check=True, capture_output=True)
    check("/", "post", send("POST", "/", json=["GET", P + "k"], headers=auth()), 504)
    time.sleep(1.3)
    # A token over its rate limit: 429 with Retry-After.
    send("POST", "/", json=["PING"], headers=auth(LIMITED))
    check("/", "post", send("POST", "/", json=["PING"], headers=auth(LIMITED)), 429)
    check("/pipeline", "post", send("POST", "/pipeline", json=[["PING"]], headers=auth(LIMITED)), 429)
    # A body that never finishes: 408.
    check("/", "post", raw_slow_body(URL, "/", auth()), 408)


def cache():
    probe = send("GET", "/cache/contract/probe", headers=auth())
    if "x-cache" not in probe.headers:
        skipped.append("cache API (not served by this build)")
        return
    ns = "contract"
    key = P + "entry"
    item = {"namespace": ns, "key": key}
    put = lambda **kw: send("PUT", f"/cache/{ns}/{key}", headers={**auth(), **kw.pop("headers", {})}, **kw)  # noqa: E731
    check("/cache/{namespace}/{key}", "get", send("GET", f"/cache/{ns}/{key}", headers=auth()), 404, "cache miss", item)
    response = put(params={"ttl": "60", "tags": "contract"}, data=b'{"v":1}', headers={"Content-Type": "application/json"})
    check("/cache/{namespace}/{key}", "put", response, 200, "cache put", item)
    hit = send("GET", f"/cache/{ns}/{key}", headers=auth())
    check("/cache/{namespace}/{key}", "get", hit, 200, "cache hit", item)
    etag = hit.headers.get("etag", "")
    check("/cache/{namespace}/{key}", "get", send("GET", f"/cache/{ns}/{key}", headers={**auth(), "If-None-Match": etag}), 304, "cache 304", item)
    check("/cache/{namespace}/{key}", "get", send("GET", f"/cache/{ns}/{key}", params={"lease": "abc"}, headers=auth()), 400, "cache bad lease", item)
    check("/cache/{namespace}/{key}", "put", put(params={"ttl": "60"}, data=b"x", headers={"Authorization": f"Bearer {READONLY}"}), 403, "cache put read-only", item)
    check("/cache/{namespace}/{key}", "delete", send("DELETE", f"/cache/{ns}/{key}", headers=auth()), 200, "cache delete", item)
    miss = send("GET", f"/cache/{ns}/{key}", params={"lease": "10"}, headers=auth())
    check("/cache/{namespace}/{key}", "get", miss, 404, "cache miss with lease", item)
    lease = miss.headers.get("x-cache-lease", "")
    send("DELETE", f"/cache/{ns}/{key}", headers=auth())
    check("/cache/{namespace}/{key}", "put", put(params={"ttl": "60"}, data=b"late", headers={"X-Cache-Lease": lease}), 409, "cache stale fill", item)
    check("/cache/{namespace}/invalidate", "post", send("POST", f"/cache/{ns}/invalidate", json={"tags": ["contract"]}, headers=auth()), 200, "invalidate tags", {"namespace": ns})
    check("/cache/{namespace}/invalidate", "post", send("POST", f"/cache/{ns}/invalidate", json={"prefix": P}, headers=auth()), 200, "invalidate prefix", {"namespace": ns})
    check("/cache/{namespace}/invalidate", "post", send("POST", f"/cache/{ns}/invalidate", json={"nope": 1}, headers=auth()), 400, "invalidate malformed", {"namespace": ns})
    check("/cache/{namespace}", "get", send("GET", f"/cache/{ns}", headers=auth()), 200, "cache stats", {"namespace": ns})
    bypass = send("GET", f"/cache/{ns}/{key}", base=DOWN_URL, headers=auth())
    check("/cache/{namespace}/{key}", "get", bypass, 404, "cache bypass", item)
    if bypass.headers.get("x-cache") != "BYPASS":
        failed.append(f"cache bypass: X-Cache is {bypass.headers.get('x-cache')!r}")


def streams():
    for template, path, params in [
        ("/subscribe/{channel}", f"/subscribe/{P}chan", {"channel": P + "chan"}),
        ("/psubscribe/{pattern}", f"/psubscribe/{P}*", {"pattern": P + "*"}),
        ("/ssubscribe/{channel}", f"/ssubscribe/{P}chan", {"channel": P + "chan"}),
        ("/monitor", "/monitor", {}),
    ]:
        try:
            response = requests.get(URL + path, headers=auth(), stream=True, timeout=5)
        except requests.RequestException as error:
            failed.append(f"GET {path}: {error}")
            continue
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            first = next(response.iter_lines(), b"")
            response.close()
            if not first.startswith(b"data:"):
                failed.append(f"GET {path}: first line {first!r}")
            # Validate status, content type and headers (the body is a stream).
            response._content = b""
            check(template, "get", response, 200, f"GET {path}", params)
        elif response.status_code == 404 and "no such endpoint" in response.text:
            skipped.append(f"{path} (not served by this build)")
        else:
            check(template, "get", response, 200, f"GET {path}", params)
        unauthorized = requests.get(URL + path, timeout=5)
        check(template, "get", unauthorized, 401, f"GET {path} without token", params)
    empty = send("GET", "/ssubscribe/", headers=auth())
    check("/ssubscribe/{channel}", "get", empty, 400, "GET /ssubscribe/ (empty channel)", {"channel": "x"})


def main():
    commands()
    operations()
    cache()
    streams()
    failures()
    for label in skipped:
        print(f"skipped: {label}")
    for label in failed:
        print(f"FAILED: {label}")
    print(f"operations and statuses covered: {len(seen)}")
    print(f"{len(passed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
