"""Which shard a ticker belongs to, the names a shard's keys get, and the shard count's
record: contracts that producers in other languages and existing deployments rely on."""

import zlib

import numpy as np
import pytest
import redis

from service.config import Settings
from service.entries import TickerCache, parse_entries
from service.records import StateError
from service.shards import Routing, check_shard_count, shard_of, shards_key

pytestmark = pytest.mark.integration


def test_shard_of_is_crc32_of_the_upper_case_ticker_mod_shards() -> None:
    # pinned: a producer in another language computes exactly these
    assert [shard_of(t, 8) for t in ("AAPL", "MSFT", "BRK.B", "SYN0001")] == [
        zlib.crc32(t.encode()) % 8 for t in ("AAPL", "MSFT", "BRK.B", "SYN0001")]
    # gzip's own trailer for "AAPL" holds the same CRC32: 0xB665575C; mod 8 = 4
    assert zlib.crc32(b"AAPL") == 0xB665575C and shard_of("AAPL", 8) == 4
    assert shard_of("aapl", 8) == shard_of("AAPL", 8)
    assert shard_of("AAPL", 1) == 0


def test_routing_sends_each_ticker_to_its_shard_stream_in_order() -> None:
    route = Routing("ticks", 4)
    tickers = ["AAPL", "MSFT", "AAPL", "IBM", "msft"]
    split = route.split(tickers)
    assert sorted(i for where in split.values() for i in where) == list(range(5))
    for stream, where in split.items():
        assert where == sorted(where)
        assert {f"ticks:{{{shard_of(tickers[i], 4)}}}" for i in where} == {stream}
    assert Routing("ticks").stream_of("AAPL") == "ticks"  # one shard: the stream as it is
    assert route.streams() == ["ticks:{0}", "ticks:{1}", "ticks:{2}", "ticks:{3}"]


def test_a_shards_settings_tag_every_stream_and_key_with_its_slot() -> None:
    one = Settings(shards=4).for_shard(3)
    assert (one.stream, one.dead_stream, one.predictions_stream) == (
        "ticks:{3}", "ticks:dead:{3}", "predictions:{3}")
    assert one.key_prefix == "tickstream:default:{3}:"
    assert one.model_copy(update={"port": 1}).key_prefix == one.key_prefix
    assert Settings().key_prefix == "tickstream:default:"  # unsharded: as before
    with pytest.raises(ValueError):
        Settings(shards=4).for_shard(4)


def test_a_shards_engine_dead_letters_ticks_and_controls_of_other_shards() -> None:
    mine = next(t for t in ("A", "B", "C", "D", "E") if shard_of(t, 2) == 0)
    other = next(t for t in ("A", "B", "C", "D", "E") if shard_of(t, 2) == 1)
    entries = [(b"1-0", [b"ticker", mine.encode(), b"price", b"1"]),
               (b"1-1", [b"ticker", other.lower().encode(), b"price", b"1"]),
               (b"1-2", [b"control", b"reset", b"ticker", other.encode()]),
               (b"1-3", [b"ticker", other.encode(), b"price", b"x"])]
    parsed = parse_entries(entries, TickerCache(shard=Settings(shards=2).for_shard(0).shard))
    assert parsed.ticker == [mine]
    assert parsed.rejected == [(1, "wrong_shard"), (2, "wrong_shard"), (3, "bad_price")]
    unsharded = parse_entries(entries, TickerCache())
    assert len(unsharded.ticker) == 2 and len(unsharded.controls) == 1
    np.testing.assert_array_equal(unsharded.price, [1.0, 1.0])


def test_the_shard_count_is_fixed_once_recorded(redis_client: redis.Redis) -> None:
    check_shard_count(redis_client, "m", 1, ["tickstream:m:snapshot"])  # nothing recorded
    assert redis_client.get(shards_key("m")) is None
    check_shard_count(redis_client, "m", 8, ["tickstream:m:snapshot"])
    assert redis_client.get(shards_key("m")) == b"8"
    check_shard_count(redis_client, "m", 8, [])
    for other in (1, 4):
        with pytest.raises(StateError, match="SHARDS=8, this engine has SHARDS="):
            check_shard_count(redis_client, "m", other, [])
    redis_client.set("tickstream:n:snapshot", b"x")  # an unsharded state exists
    with pytest.raises(StateError, match="created with SHARDS=1"):
        check_shard_count(redis_client, "n", 2, ["tickstream:n:snapshot"])
    check_shard_count(redis_client, "n", 1, ["tickstream:n:snapshot"])
