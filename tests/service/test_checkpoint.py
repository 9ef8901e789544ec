"""The persisted layout: bit-exact codecs, refusal of foreign bytes, one atomic commit."""

import pickle
import struct

import numpy as np
import pytest
import redis

from service import checkpoint
from service.checkpoint import (
    HEADER,
    MAGIC,
    VERSION,
    Changes,
    CheckpointError,
    DeadLetter,
    Layout,
    commit,
    decode_last,
    decode_prediction,
    decode_row,
    encode_last,
    encode_predictions,
    encode_rows,
    load,
    parse_id,
)
from service.config import Settings
from service.prediction_stream import entry_fields, stream_predictions
from service.snapshot import Prediction

N_FLOATS = 6


def random_bits(k: int, n: int, seed: int = 0) -> np.ndarray:
    """float32 of random bit patterns: NaN payloads, -0.0, subnormals, infinities."""
    bits = np.random.default_rng(seed).integers(0, 2**32, (k, n), dtype=np.uint64)
    return bits.astype(np.uint32).view(np.float32)


def test_row_codec_round_trips_every_bit_pattern() -> None:
    packed = random_bits(50, N_FLOATS)
    packed[0, :3] = [-0.0, np.float32(1e-45), np.inf]
    blobs = encode_rows(packed)
    assert len(blobs) == 50
    back = np.array([decode_row(b, N_FLOATS) for b in blobs])
    assert back.dtype == np.float32
    assert np.array_equal(back.view(np.uint32), packed.view(np.uint32))


def test_row_blob_is_header_then_little_endian_float32() -> None:
    packed = np.array([[1.0, -2.5, 3.25]], np.float32)
    (blob,) = encode_rows(packed)
    assert blob[:4] == MAGIC
    assert HEADER.unpack_from(blob) == (MAGIC, VERSION, 3)
    assert blob[HEADER.size :] == struct.pack("<3f", 1.0, -2.5, 3.25)


def good_blob() -> bytes:
    return encode_rows(np.ones((1, N_FLOATS), np.float32))[0]


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "shorter than its header"),
        (b"TSR", "shorter than its header"),
        (pickle.dumps(np.ones(N_FLOATS, np.float32)), "not ours"),
        (np.ones(N_FLOATS, "<f4").tobytes(), "not ours"),
        (HEADER.pack(MAGIC, VERSION + 1, N_FLOATS) + bytes(4 * N_FLOATS), "format v2"),
        (HEADER.pack(MAGIC, VERSION, N_FLOATS + 1) + bytes(4 * N_FLOATS + 4), "model needs 6"),
        (good_blob()[:-1], "model needs 6"),
        (good_blob() + b"\0", "model needs 6"),
    ],
)
def test_foreign_or_damaged_row_bytes_are_refused(blob: bytes, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        decode_row(blob, N_FLOATS)


@pytest.mark.parametrize(("price", "ts"), [(123.456789012345, 1767225600123), (0.0, 0),
                                           (5e-324, 2**53)])
def test_last_tick_codec_round_trips_exactly(price: float, ts: int) -> None:
    (blob,) = encode_last(np.array([price]), np.array([ts]))
    assert decode_last(blob) == (price, ts)
    assert decode_last(f"{price!r} {ts}".encode()) == (price, ts)  # earlier versions' text


def test_prediction_codec_round_trips_exactly() -> None:
    written = [Prediction("A", 0.1 + 0.2, float("inf"), 5e-324, 2**53, "1767225600000-12", 7,
                          "v1"), Prediction("BB", -1e-300, 1.0, 2.0, 0, "1-0", 1, "v1")]
    blobs = encode_predictions(written)
    assert [decode_prediction(p.ticker, b, "v1") for p, b in zip(written, blobs, strict=True)
            ] == written
    assert decode_prediction("BB", written[1].to_json().encode(), "v1") == written[1]  # JSON


@pytest.mark.parametrize("text", [b"", b"1.0", b"1.0 2 3", b"abc 5", b"nan 5", b"-1.0 5",
                                  b"1.0 2.5"])
def test_bad_last_tick_is_refused(text: bytes) -> None:
    with pytest.raises(CheckpointError):
        decode_last(text)


def test_stream_ids_order_as_the_stream_does() -> None:
    assert parse_id("1700000000000-10") > parse_id("1700000000000-9")
    assert parse_id("1700000000001-0") > parse_id("1700000000000-99")
    assert parse_id("5") == (5, 0)


# ---- against a real redis-server


def layout(**overrides: object) -> Layout:
    return Layout.from_settings(Settings(name="unit", **overrides))


def prediction(ticker: str, steps: int) -> Prediction:
    return Prediction(ticker, 1e-4, 100.01, 100.0, 1767225600000, "1-0", steps, "v1")


@pytest.mark.integration
def test_commit_then_load_gives_back_the_same_state(redis_client: redis.Redis) -> None:
    lay = layout()
    redis_client.xgroup_create(lay.stream, lay.group, "0", mkstream=True)
    ids = [redis_client.xadd(lay.stream, {"ticker": "A", "price": "1"}) for _ in range(3)]
    redis_client.xreadgroup(lay.group, "c", {lay.stream: ">"})
    state = random_bits(2, N_FLOATS, seed=1)
    changes = Changes(
        rows=np.array([1, 0]), state=state, last_price=np.array([2.5, 100.125]),
        last_ts=np.array([7, 8]), added={"A": 0, "B": 1}, cursor=ids[-1].decode(),
        latest=[prediction("A", 3), prediction("B", 1)], dead=[DeadLetter({b"x": b"\xff"},
        "bad_encoding", ids[0].decode())], ack=ids,
        published=entry_fields("v1", ids[-1].decode(), ["B", "A"], [b"1-0", b"1-0"],
                               np.array([1767225600000] * 2), np.array([1, 3]),
                               np.array([1e-4] * 2), np.array([100.01] * 2),
                               np.array([100.0] * 2)),
    )
    commit(redis_client, lay, "v1", changes)

    r = load(redis_client, lay, N_FLOATS, "v1")
    assert r.rows == {"A": 0, "B": 1} and r.cursor == ids[-1].decode()
    by_row = dict(zip(r.state_rows.tolist(), r.state, strict=True))
    assert np.array_equal(by_row[1].view(np.uint32), state[0].view(np.uint32))
    assert np.array_equal(by_row[0].view(np.uint32), state[1].view(np.uint32))
    assert dict(zip(r.last_rows.tolist(), zip(r.last_price.tolist(), r.last_ts.tolist(),
                                              strict=True), strict=True)) == {1: (2.5, 7),
                                                                              0: (100.125, 8)}
    assert r.predictions == {"A": prediction("A", 3), "B": prediction("B", 1)}
    assert redis_client.xpending(lay.stream, lay.group)["pending"] == 0
    ((_, dead),) = redis_client.xrange(lay.dead_stream)
    assert dead == {b"x": b"\xff", b"reason": b"bad_encoding", b"source_id": ids[0]}
    # one predictions-stream entry for the batch, each prediction as it was made
    ((_, pub),) = entries = redis_client.xrange(lay.predictions_stream)
    assert pub[b"stream_id"] == ids[-1] and pub[b"count"] == b"2" and pub[b"ticker"] == b"B A"
    assert stream_predictions(entries) == [prediction("B", 1), prediction("A", 3)]


@pytest.mark.integration
def test_a_failing_command_leaves_redis_as_it_was(redis_client: redis.Redis,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """MULTI/EXEC: a command refused when queued (wrong arity) aborts the whole batch."""
    lay = layout()
    bad = Changes(rows=np.array([0]), state=np.ones((1, N_FLOATS), np.float32),
                  last_price=np.array([1.0]), last_ts=np.array([1]), added={"A": 0},
                  cursor="5-0", ack=[b"5-0"])
    real_commands = checkpoint.commands

    def with_a_broken_command(*args: object) -> list:
        return [*real_commands(*args), ("SET", lay.cursor)]  # missing value: EXECABORT

    monkeypatch.setattr(checkpoint, "commands", with_a_broken_command)
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        commit(redis_client, lay, "v1", bad)
    assert redis_client.keys("tickstream:unit:*") == []


@pytest.mark.integration
def test_state_of_another_model_is_not_resumed(redis_client: redis.Redis) -> None:
    lay = layout()
    commit(redis_client, lay, "old-model", Changes(
        rows=np.array([0]), state=np.ones((1, N_FLOATS), np.float32),
        last_price=np.array([1.0]), last_ts=np.array([1]), added={"A": 0}))
    assert load(redis_client, lay, N_FLOATS, "old-model").rows == {"A": 0}
    with pytest.raises(CheckpointError, match="written by model old-model"):
        load(redis_client, lay, N_FLOATS, "new-model")
    with pytest.raises(CheckpointError, match="needs 7"):
        load(redis_client, lay, N_FLOATS + 1, "old-model")


@pytest.mark.integration
@pytest.mark.parametrize(
    ("key", "field", "value", "message"),
    [
        ("state", "0", pickle.dumps([0.0] * N_FLOATS), "not ours"),
        ("state", "1", good_blob(), "beyond its 1 tickers"),
        ("last", "-1", b"1.0 5", "beyond its 1 tickers"),
        ("last", "0", b"\x80\x04K\x01.", "not 'price ts_ms'"),
        ("predictions", "B", Prediction("B", 0, 1, 1, 1, "1-0", 1, "v1").to_json(), "beyond"),
        ("predictions", "A", b"{}", "unreadable"),
        ("predictions", "A", b"TSP1" + bytes(40), "unreadable"),
        ("predictions", "A", b"TSP1" + bytes(9), "unreadable"),
        ("rows", "B", b"one", "unreadable"),
    ],
)
def test_garbage_in_the_checkpoint_is_refused(redis_client: redis.Redis, key: str, field: str,
                                              value: bytes | str, message: str) -> None:
    lay = layout()
    redis_client.hset(lay.rows, "A", 0)
    redis_client.hset(getattr(lay, key), field, value)
    with pytest.raises(CheckpointError, match=message):
        load(redis_client, lay, N_FLOATS, "v1")
