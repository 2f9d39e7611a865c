"""Fixtures for the upstash-redis (Python) compatibility tests of restash.

The gateway under test comes from the environment (the Rust harness sets these):
  UPSTASH_REDIS_REST_URL    e.g. http://127.0.0.1:18079
  UPSTASH_REDIS_REST_TOKEN  the standard token
  RESTASH_READONLY_TOKEN    the read-only token
  RESTASH_TEST_PREFIX       every key created here starts with it (random if unset)

Every test is written once as ``async def`` against the ``r`` fixture, which runs it through the
sync ``upstash_redis.Redis`` and the async ``upstash_redis.asyncio.Redis`` clients, each with
base64 response encoding on (the SDK default) and off (``rest_encoding=None``).
Keys are deleted one by one at teardown; the database is never flushed.
"""

import inspect
import os
import uuid

import pytest
from upstash_redis import Redis
from upstash_redis.asyncio import Redis as AsyncRedis

URL = os.environ.get("UPSTASH_REDIS_REST_URL")
TOKEN = os.environ.get("UPSTASH_REDIS_REST_TOKEN")
RO_TOKEN = os.environ.get("RESTASH_READONLY_TOKEN")
PREFIX = os.environ.get("RESTASH_TEST_PREFIX") or f"restash-sdk-test:{uuid.uuid4().hex[:12]}:"

if not URL or not TOKEN:
    raise RuntimeError(
        "UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN must point at a running restash gateway"
    )

CONFIGS = [
    ("sync", "base64"),
    ("sync", None),
    ("async", "base64"),
    ("async", None),
]
CONFIG_IDS = ["sync-base64", "sync-plain", "async-base64", "async-plain"]


def escape_glob(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)


async def _resolve(value):
    if inspect.isawaitable(value):
        return await value
    return value


class UniformPipeline:
    """A pipeline or transaction of either client; ``await p.exec()`` works for both."""

    def __init__(self, pipeline):
        self._p = pipeline

    def __getattr__(self, name):
        attr = getattr(self._p, name)
        if name == "exec":
            async def run(*a, **kw):
                return await _resolve(attr(*a, **kw))

            return run
        if callable(attr):
            def chain(*a, **kw):
                attr(*a, **kw)
                return self

            return chain
        return attr


class Uniform:
    """Wraps a sync or async client so every command can be awaited."""

    def __init__(self, client, kind: str, encoding):
        self.client = client
        self.kind = kind
        self.encoding = encoding

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        async def call(*a, **kw):
            return await _resolve(attr(*a, **kw))

        return call

    def pipeline(self):
        return UniformPipeline(self.client.pipeline())

    def multi(self):
        return UniformPipeline(self.client.multi())

    async def close(self):
        await _resolve(self.client.close())


def make_client(kind: str, encoding, token: str = None):
    token = token or TOKEN
    if kind == "sync":
        return Uniform(Redis(URL, token, rest_encoding=encoding), kind, encoding)
    return Uniform(AsyncRedis(URL, token, rest_encoding=encoding), kind, encoding)


_sync_clients = {}


def _shared_sync_client(encoding):
    # sync clients are reused across tests (creating an httpx client costs ~50 ms);
    # async clients belong to one event loop, so each test makes its own
    if encoding not in _sync_clients:
        _sync_clients[encoding] = make_client("sync", encoding)
    return _sync_clients[encoding]


@pytest.fixture(params=CONFIGS, ids=CONFIG_IDS)
async def r(request):
    kind, encoding = request.param
    if kind == "sync":
        yield _shared_sync_client(encoding)
        return
    client = make_client(kind, encoding)
    yield client
    await client.close()


class Keys:
    """Hands out keys under a namespace unique to one test and deletes them afterwards."""

    def __init__(self, label: str):
        self.base = f"{PREFIX}py:{label}:{uuid.uuid4().hex[:8]}:"
        self.made = []
        self._n = 0

    def __call__(self, name: str = "k") -> str:
        key = f"{self.base}{name}:{self._n}"
        self._n += 1
        self.made.append(key)
        return key

    @property
    def pattern(self) -> str:
        return escape_glob(self.base) + "*"

    def cleanup(self):
        """Deletes every key this test was handed (and any the test appended to ``made``)."""
        c = _shared_sync_client(None).client
        keys = sorted(set(self.made))
        for i in range(0, len(keys), 500):
            c.delete(*keys[i : i + 500])


@pytest.fixture
def k(request):
    keys = Keys(request.node.name.split("[")[0].replace("test_", ""))
    yield keys
    keys.cleanup()
