"""Exactly once when a second process starts, an engine is paused past its lease, or the
group is lost: the cases a single well-behaved engine never meets in the other tests."""

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
import redis

from models.artifact import Artifact, ModelMeta, load_artifact, save_artifact
from models.features import FEATURES
from models.lstm import build_model
from models.reference import keras_reference
from models.synthetic import SyntheticMarket
from models.ticks import TickTable
from service.prediction_stream import stream_predictions
from service.records import decode_prediction, parse_id

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keras.utils.set_random_seed(11)
    directory = tmp_path_factory.mktemp("artifact")
    meta = ModelMeta(features=list(FEATURES), feature_mean=[0.0, 6.0, 0.4],
                     feature_std=[0.002, 1.5, 0.5], target_mean=0.0, target_std=1.0,
                     units=[8], look_back=8)
    save_artifact(directory, build_model(4, [8], len(FEATURES)), meta)
    return directory


@pytest.fixture(scope="module")
def artifact(artifact_dir: Path) -> Artifact:
    return load_artifact(artifact_dir)


def xadd(client: redis.Redis, ticks: TickTable) -> bytes:
    pipe = client.pipeline(transaction=False)
    for t in ticks.ticks():
        pipe.xadd("ticks", {"ticker": t.ticker, "price": repr(t.price),
                            "volume": repr(t.volume), "ts": t.ts_ms})
    return pipe.execute()[-1]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def assert_checkpoint_matches_keras(client: redis.Redis, artifact_dir: Path,
                                    ticks: TickTable) -> None:
    """What Redis persisted (and streamed) equals batch-size-1 Keras over each ticker."""
    reference = keras_reference(artifact_dir, ticks)
    served = {k.decode(): v for k, v in client.hgetall("tickstream:default:predictions").items()}
    assert sorted(served) == sorted(reference)
    for ticker, outputs in reference.items():
        p = decode_prediction(ticker, served[ticker], "any")
        assert p.steps == len(outputs), ticker
        assert abs(p.prediction - float(outputs[-1])) < 1e-5, ticker
    published = stream_predictions(client.xrange("predictions"))
    assert len(published) == len(ticks), "a tick was applied twice or skipped"


def test_a_lost_group_loses_nothing_and_comes_back(
        start_engine, redis_client: redis.Redis, artifact_dir: Path) -> None:
    ticks = SyntheticMarket(6, seed=2).ticks(400)
    first, second = ticks.take(np.arange(200)), ticks.take(np.arange(200, 400))
    engine = start_engine(start_from="new")
    last = xadd(redis_client, first)
    wait_for(lambda: engine.snapshot.stream_id == last.decode(), "first half applied")
    engine.stop()
    redis_client.xgroup_destroy("ticks", "tickstream")
    xadd(redis_client, second)  # arrives while no group exists
    engine = start_engine(start_from="new")  # "new" must not skip what the cursor has not seen
    wait_for(lambda: sum(p.steps for p in engine.snapshot.predictions.values()) == 400,
             "all 400 ticks applied")
    assert_checkpoint_matches_keras(redis_client, artifact_dir, ticks)
    engine.stop()  # its last snapshot puts the group back, at the cursor, for operators
    (group,) = redis_client.xinfo_groups("ticks")
    assert group["last-delivered-id"] == redis_client.xrevrange("ticks", count=1)[0][0]


def test_an_undecodable_extra_field_is_ignored(start_engine,
                                               redis_client: redis.Redis) -> None:
    engine = start_engine()
    redis_client.xadd("ticks", {"ticker": "EXTRA", "price": "10", "trace": b"\xff\xfe\x00"})
    wait_for(lambda: "EXTRA" in engine.snapshot.predictions, "the tick applied")
    assert redis_client.xlen("ticks:dead") == 0


def test_a_second_engine_stands_by_until_the_first_lets_go(
        start_engine, redis_client: redis.Redis, artifact_dir: Path) -> None:
    """Two processes on one model (a rolling deploy, or a mistake) never both write: the
    second waits on the lease, then resumes from the checkpoint the first left."""
    ticks = SyntheticMarket(6, seed=3).ticks(600)
    first, second = ticks.take(np.arange(300)), ticks.take(np.arange(300, 600))
    old = start_engine(lease_ttl_s=2.0)
    last = xadd(redis_client, first)
    wait_for(lambda: old.snapshot.stream_id == last.decode(), "first half applied")
    new = start_engine(lease_ttl_s=2.0)
    time.sleep(0.5)
    assert not new.ready and "lease" in (new.status()["last_error"] or "")
    last = xadd(redis_client, second.take(np.arange(150)))
    wait_for(lambda: old.snapshot.stream_id == last.decode(), "the owner keeps applying")
    assert not new.snapshot.predictions  # standing by: nothing restored, nothing applied
    # a GET ?after= on the standby answers at once (nothing will be served there)
    waits = new.published.served
    standing = asyncio.run(asyncio.wait_for(waits.until(parse_id(last.decode()), 30), 5))
    assert standing is False
    old.stop()
    last = xadd(redis_client, second.take(np.arange(150, 300)))
    wait_for(lambda: new.snapshot.stream_id == last.decode() and new.ready,
             "the standby took over")
    # serving again: a GET ?after= an entry yet to come waits for it (a dead letter here,
    # so the rows the checkpoint check compares stay as they are)
    ahead = f"{parse_id(last.decode())[0] + 1}-0"
    threading.Timer(0.2, redis_client.xadd, args=("ticks", {"ticker": "ZZZ", "price": "-1"}),
                    kwargs={"id": ahead}).start()
    assert asyncio.run(waits.until(parse_id(ahead), 10)) is True
    assert_checkpoint_matches_keras(redis_client, artifact_dir, ticks)
