"""Value fidelity through upstash-redis: unicode, number-like strings, a 5 MB value, big integers."""

from conftest import escape_glob

UNICODE = [
    "😀🎉 party",
    "中文字符 日本語 한국어",
    "e\u0301 (combining acute) a\u0308 o\u0303",
    "ü",
    "Ünïcödé ß",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓀀",
    'tab\tnew\nline "quotes" \\ backslash',
    "test",  # valid base64 on its own: must not be decoded twice
    "abcd",
]

NUMBER_LIKE = ["123", "1e3", "007", "-0.5", "1.50", "12345678901234567890", "", "true", "null"]


async def test_unicode(r, k):
    for i, v in enumerate(UNICODE):
        key = k(f"uni{i}")
        assert await r.set(key, v) is True
        assert await r.get(key) == v
        assert await r.strlen(key) == len(v.encode("utf-8"))
    uk = f"{k.base}ключ🔑中"
    k.made.append(uk)
    await r.set(uk, "значение")
    assert await r.get(uk) == "значение"
    assert await r.keys(escape_glob(k.base) + "ключ*") == [uk]
    h = k("unihash")
    await r.hset(h, values={"поле😀": "ü", "名前": "値"})
    assert await r.hgetall(h) == {"поле😀": "ü", "名前": "値"}
    lst = k("unilist")
    await r.rpush(lst, *UNICODE)
    assert await r.lrange(lst, 0, -1) == UNICODE
    z = k("unizset")
    await r.zadd(z, {"😀": 1, "ü": 2})
    assert await r.zrange(z, 0, -1, withscores=True) == [("😀", 1.0), ("ü", 2.0)]


async def test_number_like_strings_stay_strings(r, k):
    for i, v in enumerate(NUMBER_LIKE):
        key = k(f"num{i}")
        assert await r.set(key, v) is True
        assert await r.get(key) == v
    lst = k("numlist")
    await r.rpush(lst, *NUMBER_LIKE)
    assert await r.lrange(lst, 0, -1) == NUMBER_LIKE
    assert await r.mget(*(k.made[: len(NUMBER_LIKE)])) == NUMBER_LIKE


async def test_five_megabyte_value(r, k):
    unit = "0123456789abcdefghijklmnopqrstuvwxyzü😀\n"
    big = unit * (5 * 1024 * 1024 // len(unit.encode("utf-8")) + 1)
    size = len(big.encode("utf-8"))
    assert size >= 5 * 1024 * 1024
    key = k("big")
    assert await r.set(key, big) is True
    assert await r.strlen(key) == size
    back = await r.get(key)
    assert len(back) == len(big)
    assert back == big
    assert await r.getrange(key, size - 5, -1) == "😀\n"
    await r.delete(key)


async def test_integers_above_2_pow_53(r, k):
    key = k("bigint")
    assert await r.set(key, "9007199254740990") is True
    assert await r.incrby(key, 5) == 9007199254740995
    assert await r.get(key) == "9007199254740995"
    k2 = k("bigint2")
    assert await r.incrby(k2, 2**60 + 1) == 2**60 + 1
    assert await r.get(k2) == str(2**60 + 1)
    assert await r.incrby(k2, 2**62) == 2**62 + 2**60 + 1
    assert await r.decrby(k2, 2**63 - 1) == 2**62 + 2**60 + 1 - (2**63 - 1)
    k3 = k("bigfloat")
    assert await r.incrbyfloat(k3, 1e21) == 1e21
    assert await r.get(k3) == "1000000000000000000000"
