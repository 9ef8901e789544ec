"""What the log design adds, in process against a real redis-server: control entries,
retention and refusing a gap, the migration of the per-batch checkpoint layout."""

from pathlib import Path

import numpy as np
import pytest
import redis
from test_ingest import (  # the same model, ticks and oracle as the ingest tests
    artifact,  # noqa: F401  (fixture)
    artifact_dir,  # noqa: F401  (fixture)
    assert_matches_keras,
    interleaved,
    rows_of,
    wait_caught_up,
    wait_for,
    xadd_ticks,
)

from models.artifact import Artifact
from service.records import StateError, encode_last, encode_predictions, encode_rows
from service.snapshot import Prediction

pytestmark = pytest.mark.integration
PREFIX = "tickstream:default:"


def test_a_reset_anywhere_in_a_batch_applies_at_its_place_in_the_stream(
        start_engine, redis_client: redis.Redis) -> None:
    """One batch holding ticks, a reset and more ticks ends as three batches would."""
    ticks = interleaved(4, 200, seed=1)
    xadd_ticks(redis_client, ticks.take(np.arange(100)))
    redis_client.xadd("ticks", {"control": "reset", "ticker": "syn0001"})
    redis_client.xadd("ticks", {"control": "explode", "ticker": "SYN0001"})  # unknown action
    redis_client.xadd("ticks", {"control": "reset"})  # no ticker
    last = xadd_ticks(redis_client, ticks.take(np.arange(100, 200)))[-1]
    whole = start_engine(batch_count=1000)  # all 203 entries in one batch
    wait_caught_up(whole, last)
    bits = rows_of(whole)
    whole.stop()
    redis_client.delete(*redis_client.keys(PREFIX + "*"), "predictions", "ticks:dead")
    one_by_one = start_engine(batch_count=1)
    wait_caught_up(one_by_one, last)
    assert {t: np.frombuffer(b, np.float32) for t, b in rows_of(one_by_one).items()}.keys() \
        == bits.keys()
    for ticker, b in rows_of(one_by_one).items():
        np.testing.assert_allclose(np.frombuffer(b, np.float32),
                                   np.frombuffer(bits[ticker], np.float32), rtol=1e-6,
                                   atol=1e-7, err_msg=ticker)
    reasons = [f[b"reason"] for _, f in redis_client.xrange("ticks:dead")]
    assert reasons == [b"bad_control", b"bad_control"]
    assert one_by_one.snapshot.predictions["SYN0001"].steps == int(
        (ticks.ticker == "SYN0001").sum())  # a reset keeps the step count


def test_retention_trims_behind_the_snapshot_and_a_gap_is_refused(
        start_engine, redis_client: redis.Redis) -> None:
    ticks = interleaved(3, 300, seed=2)
    engine = start_engine(tick_retention="0", snapshot_every_s=0.05)
    last = xadd_ticks(redis_client, ticks)[-1]
    wait_caught_up(engine, last)
    wait_for(lambda: redis_client.xlen("ticks") == 0, "the stream trimmed to the snapshot")
    engine.stop()
    # someone else trims entries the snapshot never covered: a restart must say so
    xadd_ticks(redis_client, ticks.take(np.arange(5)))  # ts out of order: dead letters
    redis_client.xtrim("ticks", maxlen=2, approximate=False)
    with pytest.raises(StateError, match="3 entries of ticks after the snapshot"):
        start_engine()
    going_on = start_engine(accept_gap=True)
    wait_for(lambda: going_on.ready, "ready")
    assert going_on.counters().gap_entries == 3


def test_the_per_batch_checkpoint_layout_is_converted_once(
        start_engine, redis_client: redis.Redis, artifact: Artifact,  # noqa: F811
        artifact_dir: Path) -> None:  # noqa: F811
    """State as the previous version left it (rows, state, last, cursor hashes) resumes:
    the ticks after its cursor continue from its rows, nothing before is redone."""
    ticks = interleaved(5, 400, seed=3)
    xadd_ticks(redis_client, ticks.take(np.arange(200)))
    # the state the old version would have held after 200 ticks, from a run under other keys
    old = start_engine(name="old", group="old", predictions_stream="p-old",
                       dead_stream="d-old", tick_retention="none")
    wait_for(lambda: old.ready, "the first 200 ticks applied")
    data = old.capture()
    old.stop()
    version = artifact.meta.model_version
    rows = [str(i).encode() for i in range(len(data.tickers))]
    redis_client.hset(PREFIX + "rows", mapping={t: i for i, t in enumerate(data.tickers)})
    redis_client.hset(PREFIX + "state", mapping=dict(zip(rows, encode_rows(data.rows),
                                                         strict=True)))
    redis_client.hset(PREFIX + "last", mapping=dict(zip(
        rows, encode_last(data.last_price, data.last_ts), strict=True)))
    latest = [Prediction(t, 0.0, 1.0, 1.0, 1, data.cursor, int(s), version)
              for t, s in zip(data.tickers, data.steps, strict=True)]
    redis_client.hset(PREFIX + "predictions", mapping=dict(zip(
        data.tickers, encode_predictions(latest), strict=True)))
    redis_client.set(PREFIX + "cursor", data.cursor)
    redis_client.set(PREFIX + "model", version)

    ids = xadd_ticks(redis_client, ticks.take(np.arange(200, 400)))
    engine = start_engine(batch_count=64)
    wait_caught_up(engine, ids[-1])
    assert not redis_client.exists(*(PREFIX + k for k in ("rows", "state", "last", "cursor")))
    assert_matches_keras(engine.snapshot, ticks, artifact_dir, artifact)
    assert engine.counters().applied == 200  # nothing before the old cursor redone
