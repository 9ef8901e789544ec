"""The per-batch commit against a real redis-server: all outputs or none, and only while
the lease is ours (checked inside Redis, in the same call)."""

import numpy as np
import pytest
import redis

from service.commit import COMMIT_LUA, MAX_DEAD_FIELDS, DeadLetter, Outputs, commit_command
from service.config import Settings
from service.layout import Layout
from service.lease import Lease, LeaseLost
from service.prediction_stream import entry_fields, stream_predictions
from service.records import decode_prediction
from service.redis_io import Link
from service.snapshot import Prediction

pytestmark = pytest.mark.integration


def prediction(ticker: str, steps: int) -> Prediction:
    return Prediction(ticker, 1e-4, 100.01, 100.0, 1767225600000, "1-0", steps, "v1")


def send(client: redis.Redis, command: bytes) -> object:
    link = Link(client)
    try:
        link.send(command, 1)
        return link.read()
    finally:
        link.close()


def outputs(n_latest: int = 2) -> Outputs:
    latest = [prediction(f"T{i}", i + 1) for i in range(n_latest)]
    return Outputs(
        cursor="9-0", latest=latest, evicted=["GONE"],
        published=[entry_fields("v1", "9-0", ["B", "A"], [b"1-0", b"1-0"],
                                np.array([1767225600000] * 2), np.array([1, 3]),
                                np.array([1e-4] * 2), np.array([100.01] * 2),
                                np.array([100.0] * 2))],
        dead=[DeadLetter({b"x": b"\xff"}, "bad_encoding", "3-0")], applied=2)


@pytest.fixture
def lease(redis_client: redis.Redis) -> Lease:
    held = Lease(redis_client, Layout.from_settings(Settings()).owner, 10.0)
    assert held.acquire()
    return held


def test_one_call_writes_every_output_and_the_cursor(redis_client: redis.Redis,
                                                      lease: Lease) -> None:
    lay = Layout.from_settings(Settings())
    redis_client.hset(lay.predictions, "GONE", b"old")
    sha = redis_client.script_load(COMMIT_LUA)
    # thousands of records: more arguments than Lua's unpack() takes at once
    assert send(redis_client, commit_command(lay, sha, lease.token, 60_000, outputs(5000))) == 1

    assert redis_client.get(lay.output_cursor) == b"9-0"
    assert redis_client.pttl(lay.owner) > 10_000  # renewed to 60 s by the commit
    stored = redis_client.hgetall(lay.predictions)
    assert len(stored) == 5000 and b"GONE" not in stored
    assert decode_prediction("T7", stored[b"T7"], "v1") == prediction("T7", 8)
    ((_, dead),) = redis_client.xrange(lay.dead_stream)
    assert dead == {b"x": b"\xff", b"reason": b"bad_encoding", b"source_id": b"3-0"}
    ((_, pub),) = entries = redis_client.xrange(lay.predictions_stream)
    assert pub[b"stream_id"] == b"9-0" and pub[b"ticker"] == b"B A"
    assert [p.steps for p in stream_predictions(entries)] == [1, 3]


def test_a_commit_without_the_lease_writes_nothing(redis_client: redis.Redis,
                                                   lease: Lease) -> None:
    lay = Layout.from_settings(Settings())
    sha = redis_client.script_load(COMMIT_LUA)
    redis_client.set(lay.owner, b"another-engine")  # it took over while we were paused
    with pytest.raises(redis.ResponseError, match=r"^LEASELOST"):
        send(redis_client, commit_command(lay, sha, lease.token, 60_000, outputs()))
    assert redis_client.keys("*") == [lay.owner.encode()]


def test_lease_lost_is_raised_as_such(redis_client: redis.Redis) -> None:
    from service.commit import raise_if_lease_lost

    with pytest.raises(LeaseLost):
        raise_if_lease_lost(redis.ResponseError("LEASELOST tickstream:x:owner is held"))
    raise_if_lease_lost(redis.ResponseError("OOM command not allowed"))  # not ours: no-op


def test_a_dead_letter_keeps_at_most_its_first_fields() -> None:
    many = {f"f{i}".encode(): b"v" for i in range(10_000)}
    entry = DeadLetter(many, "missing_field", "1-0").entry()
    assert len(entry) == 2 * (MAX_DEAD_FIELDS + 2)
    assert entry[-4:] == [b"reason", b"missing_field", b"source_id", b"1-0"]
