"""Tokens: the read-only token can read but not write; a wrong token is refused."""

import pytest
from upstash_redis.errors import UpstashError

from conftest import RO_TOKEN, TOKEN, make_client


async def test_read_only_token(r, k):
    assert RO_TOKEN, "RESTASH_READONLY_TOKEN must be set"
    ro = make_client(r.kind, r.encoding, token=RO_TOKEN)
    try:
        await _read_only_checks(r, ro, k)
    finally:
        await ro.close()


async def _read_only_checks(r, ro, k):
    key = k("ro")
    assert await r.set(key, "readable") is True
    assert await ro.get(key) == "readable"
    assert await ro.exists(key) == 1
    assert await ro.strlen(key) == 8
    with pytest.raises(UpstashError, match="NOPERM"):
        await ro.set(key, "changed")
    with pytest.raises(UpstashError, match="NOPERM"):
        await ro.delete(key)
    assert await ro.eval_ro("return redis.call('GET', KEYS[1])", keys=[key]) == "readable"
    with pytest.raises(UpstashError, match="NOPERM"):
        await ro.eval("return redis.call('SET', KEYS[1], 'x')", keys=[key])
    p = ro.pipeline()
    p.get(key)
    p.set(key, "changed")
    with pytest.raises(UpstashError, match="NOPERM"):
        await p.exec()
    assert await r.get(key) == "readable"


async def test_wrong_token(r, k):
    bad = make_client(r.kind, r.encoding, token=f"{TOKEN}-wrong")
    try:
        with pytest.raises(UpstashError, match="WRONGPASS"):
            await bad.get(k("any"))
    finally:
        await bad.close()
