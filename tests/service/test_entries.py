"""The column-wise fast path against `parse_tick`, entry by entry: same ticks, same reasons;
and the loop's C scan of reply bytes against hiredis and the list path."""

import random

import numpy as np
import pytest
import redis

from models.ticks import MAX_TS_MS
from service.entries import RawEntry, TickerCache, parse_entries, parse_one
from service.redis_io import Link, packed

TICKERS = ["AAPL", "brk.b", " msft ", "T00001", "X_1-2.Z", "A" * 16, "", "A" * 17, "A B",
           "ÄPPLE", "a\x00", "A" * 2048, "tab\t", "١٢"]
NUMBERS = ["1", "1.5", "0", "-0", "-1", "1e3", "1E-3", "1_000", " 12 ", "\t5\n", "+7", ".5",
           "5.", "nan", "NaN", "-nan", "inf", "-Infinity", "infinity", "1e309", "0x10", "١٢",
           "\uff11\uff12", "1" * 65, "9" * 64, "abc", "", "1.0.0", "--1", "1e-400", "4.9e-324",
           "1e12", "1.0000001e12", "1e-9", "9.99e-10", "123.456789012345678", "1767225600000",
           "1767225600000.0", "1.7e12", "1.5", "-5", str(MAX_TS_MS), str(MAX_TS_MS + 1),
           "9007199254740993", "1e16", "7 7", "1__0", "_1"]
RAW_BYTES = [b"\xff\xfe", b"1\xff", b"\xc3\x28", b"\xe2\x82", b"\x00"]
FIELDS = ["ticker", "price", "volume", "ts"]


def random_value(rng: random.Random, field: str) -> bytes:
    if rng.random() < 0.04:
        return rng.choice(RAW_BYTES)
    pool = TICKERS if field == "ticker" and rng.random() < 0.8 else NUMBERS
    return rng.choice(pool).encode()


def random_entry(rng: random.Random, i: int) -> RawEntry:
    entry_id = f"{1767225600000 + i}-{i % 3}".encode()
    roll = rng.random()
    if roll < 0.03:
        return entry_id, None  # deleted while pending
    if roll < 0.6:  # the producers' own layouts: valid values, most of the time
        names = rng.choice([FIELDS, FIELDS[:3], FIELDS[:2], ["ts", "ticker", "price"]])
        values = {"ticker": rng.choice(["AAPL", "msft", "T00001"]).encode(),
                  "price": rng.choice([b"101.5", b"0.25", b"1e3"]),
                  "volume": rng.choice([b"0", b"300", b"7.5"]),
                  "ts": str(1767225600000 + rng.randrange(10**6)).encode()}
        if rng.random() < 0.3:  # one value off the beaten track
            field = rng.choice(names)
            values[field] = random_value(rng, field)
    else:  # any layout: missing, repeated, extra or undecodable field names
        names = rng.sample(FIELDS, rng.randint(0, 4)) + rng.choice(
            [[], [], ["extra"], ["price"], ["ticker"], ["\udcff"]])
        values = {n: random_value(rng, n) for n in names}
    flat: list[bytes] = []
    for name in names:
        key = name.encode("utf-8", "surrogateescape")
        flat += [key, values.get(name, random_value(rng, name))]
    return entry_id, flat or None


def test_fast_path_agrees_with_parse_tick_on_fuzzed_entries() -> None:
    rng = random.Random(0)
    cache = TickerCache()
    reasons: set[str] = set()
    fast_vouched = 0
    for batch in range(300):
        entries = [random_entry(rng, 64 * batch + i) for i in range(rng.randint(1, 64))]
        got = parse_entries(entries, cache)
        expected = [parse_one(e) for e in entries]
        rejected_at = [i for i, _ in got.rejected]
        assert rejected_at == sorted(rejected_at)  # in stream order, like the valid ones
        assert dict(got.rejected) == {i: r for i, r in enumerate(expected) if isinstance(r, str)}
        valid = [(i, r) for i, r in enumerate(expected) if not isinstance(r, str)]
        assert got.index == [i for i, _ in valid]
        assert list(zip(got.ticker, got.price.tolist(), got.volume.tolist(),
                        got.ts_ms.tolist(), strict=True)) == [r for _, r in valid]
        assert got.ts_ms.dtype == np.int64
        reasons.update(r for r in expected if isinstance(r, str))
        fast_vouched += len(valid)
    assert reasons == {"missing_field", "bad_ticker", "bad_price", "bad_volume", "bad_ts",
                       "bad_encoding", "deleted"}
    assert fast_vouched > 3000


@pytest.mark.parametrize(("entry", "expected"), [
    ((b"5-0", [b"ticker", b"aapl", b"price", b"10"]), ("AAPL", 10.0, 0.0, 5)),  # ts from ID
    ((b"5-0", [b"price", b"1", b"price", b"2", b"ticker", b"A"]), ("A", 2.0, 0.0, 5)),
    ((b"5-0", None), "deleted"),
    ((b"5-0", [b"ticker", b"\xff", b"price", b"1"]), "bad_encoding"),
    ((b"5-0", [b"ticker", b"A", b"price", b"1", b"note", b"\xff"]), ("A", 1.0, 0.0, 5)),
    ((b"5-0", [b"ticker", b"A", b"price", b" 2_0 "]), ("A", 20.0, 0.0, 5)),
])
def test_one_entry_the_slow_way(entry: RawEntry, expected: object) -> None:
    """The reference itself: the last of repeated fields wins (as redis-py's dict did), any
    undecodable byte in a tick field rejects the entry (extra fields are ignored), an entry
    deleted while pending says so."""
    assert parse_one(entry) == expected
    parsed = parse_entries([entry], TickerCache())
    if isinstance(expected, str):
        assert parsed.rejected == [(0, expected)]
    else:
        assert (parsed.ticker[0], parsed.price[0], parsed.volume[0],
                parsed.ts_ms[0]) == expected


def test_ticker_cache_stays_bounded() -> None:
    cache = TickerCache(max_size=3)
    assert cache.lookup([b"a", b"b", b"c", b"d", b"not valid!"]) == ["A", "B", "C", "D", None]
    assert len(cache._names) <= 3


@pytest.mark.parametrize("protocol", [2, 3])
def test_read_batches_of_real_replies_agree_with_hiredis_and_the_list_path(
        redis_url: str, protocol: int) -> None:
    """The loop's C scan of Redis's own reply bytes (XREAD and XRANGE, RESP2 and RESP3)
    against hiredis's objects of the same reply: the same entries, and parse_entries finds
    the same ticks and reasons on both."""
    client = redis.Redis.from_url(redis_url, protocol=protocol)
    rng = random.Random(protocol)
    for i in range(2000):
        entry_id, flat = random_entry(rng, i)
        if flat is not None:  # (XADD cannot make a deleted entry)
            client.xadd("s", dict(zip(flat[0::2], flat[1::2], strict=True)), id=entry_id)
    link = Link(client)
    hiredis_conn = client.connection_pool.get_connection()
    try:
        for command, xread in [(("XREAD", "COUNT", 5000, "STREAMS", "s", "0-0"), True),
                               (("XRANGE", "s", "-", "+", "COUNT", 700), False),
                               (("XREAD", "COUNT", 10, "STREAMS", "s", "$"), True),
                               (("XRANGE", "s", "+", "-"), False)]:
            link.send(packed(command), 1)
            batch = link.read_batch(xread)
            hiredis_conn.send_command(*command)
            reply = hiredis_conn.read_response()
            if xread and reply:  # RESP3: {stream: entries}, RESP2: [[stream, entries]]
                reply = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
            entries = [(e_id, list(fields)) for e_id, fields in reply or []]
            assert [(e_id, list(fields)) for e_id, fields in batch] == entries
            assert batch.ids == [e_id for e_id, _ in entries]
            got, expected = parse_entries(batch, TickerCache()), parse_entries(entries,
                                                                               TickerCache())
            assert (got.index, got.ticker, got.rejected) == (expected.index, expected.ticker,
                                                             expected.rejected)
            for column in ("price", "volume", "ts_ms"):
                assert np.array_equal(getattr(got, column), getattr(expected, column))
            assert batch[1:3].ids == batch.ids[1:3]
    finally:
        client.connection_pool.release(hiredis_conn)
        link.close()
    assert len(batch) == 0 and len(entries) == 0
