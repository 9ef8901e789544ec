"""The stream is the log: whatever kills the engine or Redis, and whenever snapshots fell,
the end state is the one an uninterrupted run over the same stream reaches, and every
output is written once. A paused engine that lost its lease writes nothing."""

import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from harness import (
    assert_served_equals_keras,
    feed_through_kills,
    market_ticks,
    valid_ticks_in_stream,
    xadd_ticks,
)
from test_end_to_end import BAD_ENTRIES, assert_each_tick_published_once

from models.artifact import load_artifact
from service.config import Settings
from service.ingest import Engine
from service.layout import Layout
from service.prediction_stream import stream_predictions
from service.snapshots import SnapshotData, SnapshotStore

pytestmark = pytest.mark.recovery

# Not bit-exact: the numpy stepper's float32 sums for a row run in another order when other
# rows share its matmul (other batch cuts), moving the last bits (~1e-8 after 200 ticks).
REL = 1e-6
ROW_ATOL = 1e-7


def prediction_atol(artifact_dir: Path) -> float:
    """How far a prediction may move while its row's h stays within (REL, ROW_ATOL) of the
    uninterrupted run's: it is the head's dot product with h (|h| < 1), times the target's
    std. Relative to the prediction itself there is no bound: near 0 its terms cancel (on an
    AMD EPYC, 1.2e-5 relative for a prediction of -9e-4, 1.3e-6 of the largest)."""
    artifact = load_artifact(artifact_dir)
    head = artifact.stepper(1).head_w
    return float(np.abs(head).sum() * (ROW_ATOL + REL) * np.abs(artifact.meta.target_std))


def final_snapshot(url: str, artifact_dir, name: str = "default") -> SnapshotData:
    artifact = load_artifact(artifact_dir)
    store = SnapshotStore(redis.Redis.from_url(url), Layout.from_settings(Settings(name=name)),
                          b"", None)
    data = store.load(artifact.stepper(1).row_state_size, artifact.meta.model_version)
    assert data is not None
    return data


def uninterrupted(url: str, artifact_dir) -> tuple[SnapshotData, redis.Redis]:
    """One engine that never stops, over the same stream, under its own keys."""
    client = redis.Redis.from_url(url)
    last = client.xrevrange("ticks", count=1)[0][0].decode()
    engine = Engine(Settings(name="whole", group="whole", predictions_stream="p-whole",
                             dead_stream="d-whole", predictions_retention_s=0,
                             batch_count=500, initial_rows=4, tick_retention="none",
                             learn=False),
                    load_artifact(artifact_dir), url)
    engine.start()
    try:
        deadline = time.monotonic() + 120
        while engine.snapshot.stream_id != last or not engine.ready:
            assert time.monotonic() < deadline, engine.status()
            time.sleep(0.05)
        return engine.capture(), client
    finally:
        engine.stop()


def test_kills_of_the_engine_and_of_redis_end_as_an_uninterrupted_run(
        service_factory, redis_proc, artifact_dir):
    service = service_factory(batch_count="50")
    midway = [*BAD_ENTRIES, {"control": "reset", "ticker": "SYN0003"}]
    client, replayed = feed_through_kills(service, redis_proc, market_ticks(24, 9000, seed=21),
                                          8, midway)
    valid = valid_ticks_in_stream(client)
    served = service.wait_applied(len(valid))
    service.stop()  # SIGTERM: a last snapshot, at the end of the stream
    assert service.starts - 1 >= 10
    print(f"\n{replayed} of {service.starts - 1} restarts replayed entries past their snapshot")
    assert replayed >= 3, "too few kills landed between a snapshot and later commits"

    # exactly once: one prediction per valid tick, one dead letter per bad entry
    assert_each_tick_published_once(client, len(valid))
    assert client.xlen("ticks:dead") == len(BAD_ENTRIES)
    # the reset control entry was applied, so Keras alone is no oracle for SYN0003 here
    served.pop("SYN0003")
    valid = valid.take(np.flatnonzero(valid.ticker != "SYN0003"))
    assert_served_equals_keras(served, artifact_dir, valid)

    # the whole state and every published prediction as an uninterrupted run's
    killed = final_snapshot(redis_proc.url, artifact_dir)
    whole, client = uninterrupted(redis_proc.url, artifact_dir)
    assert killed.tickers == whole.tickers and killed.cursor == whole.cursor
    assert (killed.steps == whole.steps).all()
    assert (killed.last_price == whole.last_price).all()
    assert (killed.last_ts == whole.last_ts).all()
    np.testing.assert_allclose(killed.rows, whole.rows, rtol=REL, atol=ROW_ATOL)
    mine = stream_predictions(client.xrange("predictions"))
    theirs = stream_predictions(client.xrange("p-whole"))
    assert [(p.ticker, p.steps, p.stream_id) for p in mine] == [
        (p.ticker, p.steps, p.stream_id) for p in theirs]
    expected = np.array([p.prediction for p in theirs])
    np.testing.assert_allclose([p.prediction for p in mine], expected, rtol=REL,
                               atol=prediction_atol(artifact_dir))
    assert client.xlen("d-whole") == len(BAD_ENTRIES)


def test_a_paused_engine_past_its_lease_is_fenced_off(service_factory, redis_proc,
                                                      artifact_dir):
    """SIGSTOP the owner past its lease, let a second engine take over and commit, then
    SIGCONT the first: its next write is refused inside Redis (its fenced commit, or, if
    nothing was in flight at the pause, the WATCHed renewal it makes before reading again),
    it stands by, and nothing is doubled or lost."""
    client = redis.Redis.from_url(redis_proc.url)
    first = service_factory(lease_ttl_s="2")
    first.start()
    ticks = market_ticks(16, 8000, seed=22)
    chunks = [ticks.take(i) for i in np.array_split(np.arange(len(ticks)), 400)]
    feeding = threading.Thread(target=lambda: [  # a steady producer: the owner is busy
        (xadd_ticks(redis.Redis.from_url(redis_proc.url), c), time.sleep(0.01))
        for c in chunks])
    feeding.start()
    time.sleep(0.5)
    first.proc.send_signal(signal.SIGSTOP)  # paused mid-work, past its lease's TTL
    try:
        second = service_factory(lease_ttl_s="2")
        second.start()
        feeding.join()
        valid = valid_ticks_in_stream(client)
        served = second.wait_applied(len(valid))  # took over after the TTL, replayed, live
    finally:
        first.proc.send_signal(signal.SIGCONT)
        feeding.join()
    deadline = time.monotonic() + 30
    while "standby" not in (first.http.get("/readyz").json()["last_error"] or ""):
        assert time.monotonic() < deadline, first.log_tail()
        time.sleep(0.1)
    assert first.http.get("/readyz").status_code == 503
    # refused inside Redis: by its fenced commit (COMMIT_LUA's LEASELOST: a busy engine
    # renews its lease with its commits, so nothing checked the lease before the write),
    # or by the renewal's WATCH when the pause caught it with no commit in flight
    log = first.log_tail()
    assert ("owner is held by another engine; standing by" in log
            or "another engine holds tickstream:default:owner" in log), log
    assert_each_tick_published_once(client, len(valid))
    assert_served_equals_keras(served, artifact_dir, valid)
    assert second.http.get("/readyz").json()["ready"] is True
