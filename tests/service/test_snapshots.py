"""Snapshots: a bit-exact binary layout, refusal of what must not be resumed, and the
fenced switch that makes a generation current, advances the group and trims the log."""

import dataclasses
import json
import pickle

import numpy as np
import pytest
import redis

from service.config import Settings
from service.layout import Layout
from service.lease import Lease, LeaseLost
from service.records import StateError
from service.snapshots import (
    PIECE_BYTES,
    SnapshotData,
    SnapshotStore,
    decode,
    encode,
    trim_minid,
)

S = 12  # floats per row


def data(k: int = 3, cursor: str | None = "1767225600000-4", seed: int = 0) -> SnapshotData:
    bits = np.random.default_rng(seed).integers(0, 2**32, (k, S), dtype=np.uint64)
    rows = bits.astype(np.uint32).view(np.float32)  # any bit pattern: NaN payloads, -0.0
    return SnapshotData("v1", cursor, 1000 + k, [f"T{i}" for i in range(k)], rows,
                        np.linspace(1, 2, k), np.arange(k, dtype=np.int64) + 7,
                        np.arange(k, dtype=np.int64) * 3)


def raw(fields: dict[str, bytes]) -> dict[bytes, bytes]:
    return {k.encode(): v for k, v in fields.items()}


def assert_same(a: SnapshotData, b: SnapshotData) -> None:
    assert (a.model_version, a.cursor, a.entries_read, a.tickers) == (
        b.model_version, b.cursor, b.entries_read, b.tickers)
    assert a.rows.view(np.uint32).tobytes() == b.rows.view(np.uint32).tobytes()
    for x, y in ((a.last_price, b.last_price), (a.last_ts, b.last_ts), (a.steps, b.steps)):
        assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("k", [0, 1, 3, 30_000])
def test_round_trip_is_bit_exact_in_pieces(k: int) -> None:
    d = data(k)
    fields = encode(d)
    assert all(len(v) <= PIECE_BYTES for f, v in fields.items() if f.startswith("rows:"))
    assert json.loads(fields["header"])["pieces"] == -(-k * S * 4 // PIECE_BYTES)
    assert_same(decode(raw(fields), S, "v1", "here"), d)


def test_named_arrays_round_trip_bit_exact_in_pieces() -> None:
    rng = np.random.default_rng(1)
    arrays = {"learn.weight.0": rng.standard_normal((3, 128)).astype(np.float32),
              "learn.pend_x": rng.standard_normal((600, 16, 30)).astype(np.float32),  # > 1 MiB
              "eval.pred": rng.standard_normal(7), "eval.count": np.arange(7),
              "learn.has_await": rng.random(7) > 0.5, "learn.queue_rows": np.zeros(0, np.int64),
              "learn.opt.0": np.array(12, np.int64)}  # 0-d: an optimizer's iteration count
    fields = encode(dataclasses.replace(data(), arrays=arrays))
    assert "array:learn.pend_x:1" in fields
    assert all(len(v) <= PIECE_BYTES for v in fields.values())
    back = decode(raw(fields), S, "v1", "here").arrays
    assert back.keys() == arrays.keys()
    for name, a in arrays.items():
        assert back[name].dtype == a.dtype and back[name].shape == a.shape
        assert back[name].tobytes() == a.tobytes(), name


def test_arrays_that_could_hold_objects_are_refused() -> None:
    with pytest.raises(ValueError, match="dtype"):
        encode(dataclasses.replace(data(), arrays={"x": np.array(["a"], object)}))


def test_a_v1_snapshot_is_still_read() -> None:
    fields = encode(data())
    header = json.loads(fields["header"])
    del header["arrays"]
    header["format"] = "tickstream.snapshot.v1"
    fields["header"] = json.dumps(header).encode()
    back = decode(raw(fields), S, "v1", "here")
    assert_same(back, data())
    assert back.arrays == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.update(header=pickle.dumps({"format": 1})), "damaged"),
        (lambda f: f.update(tickers=b"T0\nT1\nTX"), "sha256"),
        (lambda f: f.pop("rows:0"), "damaged"),
        (lambda f: f.update(header=f["header"].replace(b".v2", b".v9")), "snapshot.v9"),
    ],
)
def test_damaged_or_foreign_snapshots_are_refused(change, message: str) -> None:
    fields = encode(data())
    change(fields)
    with pytest.raises(StateError, match=message):
        decode(raw(fields), S, "v1", "here")


def test_another_model_or_width_is_refused() -> None:
    fields = raw(encode(data()))
    with pytest.raises(StateError, match="written by model v1"):
        decode(fields, S, "v2", "here")
    with pytest.raises(StateError, match="needs 13"):
        decode(fields, S + 1, "v1", "here")


def test_trim_keeps_the_retention_and_never_passes_the_cursor() -> None:
    assert trim_minid("10000-5", None) is None  # never trim
    assert trim_minid(None, 0) is None  # nothing covered yet
    assert trim_minid("10000-5", 0) == "10000-6"  # all the snapshot covers, no more
    assert trim_minid("10000-5", 3000) == "7000-0"
    assert trim_minid("1000-5", 3000) == "0-0"


# ---- against a real redis-server


@pytest.fixture
def store(redis_client: redis.Redis) -> SnapshotStore:
    lay = Layout.from_settings(Settings(name="unit"))
    lease = Lease(redis_client, lay.owner, 10.0)
    assert lease.acquire()
    s = SnapshotStore(redis_client, lay, lease.token, retention_ms=0)
    s.load_scripts()
    return s


@pytest.mark.integration
def test_write_switches_generations_advances_the_group_and_trims(
        redis_client: redis.Redis, store: SnapshotStore) -> None:
    lay = store.layout
    ids = [redis_client.xadd(lay.stream, {"ticker": "A", "price": "1"}).decode()
           for _ in range(6)]
    assert store.load(S, "v1") is None
    first = store.write(data(cursor=ids[1]))
    assert_same(store.load(S, "v1"), data(cursor=ids[1]))
    assert redis_client.ttl(lay.generation(first.generation)) == -1  # switched in: kept
    second = store.write(data(k=5, cursor=ids[3], seed=1))
    assert_same(store.load(S, "v1"), data(k=5, cursor=ids[3], seed=1))
    assert not redis_client.exists(lay.generation(first.generation))  # the old one dropped
    assert redis_client.hget(lay.snapshot, "cursor").decode() == ids[3]
    assert redis_client.get(lay.model) == b"v1"
    # TICK_RETENTION 0: everything up to the cursor is trimmed, nothing after it
    assert [i.decode() for i, _ in redis_client.xrange(lay.stream)] == ids[4:]
    (group,) = redis_client.xinfo_groups(lay.stream)
    assert group["name"].decode() == lay.group and group["last-delivered-id"].decode() == ids[3]
    assert second.size_bytes > 5 * S * 4


@pytest.mark.integration
def test_a_writer_that_lost_the_lease_switches_nothing(redis_client: redis.Redis,
                                                       store: SnapshotStore) -> None:
    lay = store.layout
    store.write(data(cursor="5-0"))
    redis_client.set(lay.owner, b"another-engine")
    with pytest.raises(LeaseLost):
        store.write(data(k=4, cursor="9-0"))
    assert redis_client.hget(lay.snapshot, "cursor") == b"5-0"
    assert len(redis_client.keys(lay.generation("*"))) == 1  # its pieces cleaned up


@pytest.mark.integration
def test_a_pointer_to_a_missing_generation_is_refused(redis_client: redis.Redis,
                                                      store: SnapshotStore) -> None:
    redis_client.hset(store.layout.snapshot, "generation", "gone")
    with pytest.raises(StateError, match="which is gone"):
        store.load(S, "v1")
