"""Several shards on one real redis-server, in process: engines split the shards by fair
share, hand them over on a clean stop, and answer for every ticker over HTTP."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from test_ingest import (  # the same model, ticks and oracle as the ingest tests
    artifact,  # noqa: F401  (fixture)
    artifact_dir,  # noqa: F401  (fixture)
    assert_matches_keras,
    interleaved,
    wait_for,
    xadd_ticks,
)

from models.artifact import Artifact
from service.app import create_app
from service.config import Settings
from service.feed import feed_synthetic
from service.prediction_stream import stream_predictions
from service.sharded import ShardedEngine
from service.shards import Routing, shard_of, shard_stream
from service.snapshot import Snapshot

pytestmark = pytest.mark.integration
SHARDS = 4
TICKSTREAM = str(Path(sys.executable).with_name("tickstream"))


def sharded_settings(redis_url: str, **overrides: object) -> Settings:
    return Settings(**{"redis_url": redis_url, "shards": SHARDS, "batch_count": 64,
                       "block_ms": 10, "predictions_retention_s": 0, "learn": False,
                       "lease_ttl_s": 2.0, "api_key": None, **overrides})


@pytest.fixture
def engines() -> Iterator[list[ShardedEngine]]:
    made: list[ShardedEngine] = []
    yield made
    for e in made:
        e.stop()


def start(engines: list[ShardedEngine], redis_url: str, model: Artifact) -> ShardedEngine:
    engine = ShardedEngine(sharded_settings(redis_url), model, redis_url)
    engine.start()
    engines.append(engine)
    return engine


def feed(client: redis.Redis, ticks) -> None:
    for stream, where in Routing("ticks", SHARDS).split(ticks.ticker.tolist()).items():
        xadd_ticks(client, ticks.take(np.array(where)), stream)


def here(engine: ShardedEngine) -> list[int]:
    return engine.status()["shards_here"]


def steps(engine: ShardedEngine) -> int:
    return sum(p.steps for p in engine.snapshot.predictions.values())


def test_two_engines_split_the_shards_and_a_stop_hands_them_over(
        engines, redis_url: str, redis_client: redis.Redis, artifact: Artifact,  # noqa: F811
        artifact_dir: Path) -> None:  # noqa: F811
    ticks = interleaved(12, 1200, seed=3)
    first = start(engines, redis_url, artifact)
    assert here(first) == [0, 1, 2, 3]  # alone: every shard, before serving
    second = start(engines, redis_url, artifact)
    wait_for(lambda: len(here(first)) == len(here(second)) == 2, "a fair share each")
    assert sorted(here(first) + here(second)) == [0, 1, 2, 3]
    feed(redis_client, ticks)
    wait_for(lambda: steps(first) + steps(second) == len(ticks) and first.ready
             and second.ready, "every tick applied")
    both = {**first.snapshot.predictions, **second.snapshot.predictions}
    assert_matches_keras(Snapshot.of(both, 0.0, None), ticks, artifact_dir, artifact)
    for ticker in first.snapshot.predictions:
        assert shard_of(ticker, SHARDS) in here(first), ticker

    first.stop()  # graceful: last snapshot, leases released, beat gone
    engines.remove(first)
    wait_for(lambda: here(second) == [0, 1, 2, 3] and second.ready, "the survivor runs all")
    assert dict(second.snapshot.predictions) == both  # restored, not recomputed differently
    assert second.counters().replayed == 0  # the handover's snapshot left nothing to replay
    outputs = Counter((s, p.stream_id) for s in range(SHARDS) for p in stream_predictions(
        redis_client.xrange(shard_stream("predictions", s))))
    assert sum(outputs.values()) == len(ticks) and max(outputs.values()) == 1


def test_any_engine_answers_for_any_ticker_over_http(
        engines, redis_url: str, redis_client: redis.Redis,
        artifact: Artifact) -> None:  # noqa: F811
    with TestClient(create_app(sharded_settings(redis_url), artifact)) as c:
        other = start(engines, redis_url, artifact)
        wait_for(lambda: len(here(other)) == 2 and c.get("/v1/shards").json()["engines"] == 2
                 and sum(s["here"] for s in c.get("/v1/shards").json()["shards"]) == 2,
                 "two engines, two shards each")
        mine = [s["shard"] for s in c.get("/v1/shards").json()["shards"] if s["here"]]
        tickers = [f"T{i}" for i in range(16)]
        r = c.post("/v1/ticks", json=[{"ticker": t, "price": 10.0 + i, "ts": 1000 + i}
                                      for i, t in enumerate(tickers)])
        assert r.status_code == 202, r.text
        for t, entry_id in zip(tickers, r.json()["ids"], strict=True):  # routed by ticker
            assert redis_client.xrange(shard_stream("ticks", shard_of(t, SHARDS)),
                                       entry_id, entry_id)
        wait_for(lambda: len(c.get("/v1/predictions").json()["predictions"]) == 16
                 and other.ready, "all 16 predicted")
        for t in tickers:
            body = c.get(f"/v1/predictions/{t}").json()
            own = shard_of(t, SHARDS) in mine
            assert body["served_from"] == ("memory" if own else "redis"), t
            if not own:
                assert body["prediction"] == other.snapshot.predictions[t].prediction
        remote = next(t for t in tickers if shard_of(t, SHARDS) not in mine)
        reset = c.post(f"/v1/tickers/{remote}/reset")
        assert reset.status_code == 200 and reset.json()["row"] is None
        assert c.get(f"/v1/predictions/{remote}/history").json()["history"][-1]["steps"] == 1
        local = next(t for t in tickers if shard_of(t, SHARDS) in mine)
        for t in (local, remote):  # read-your-writes: `after` waits for that shard's entry
            entry = redis_client.xadd(shard_stream("ticks", shard_of(t, SHARDS)),
                                      {"ticker": t, "price": "50.0"}).decode()
            body = c.get(f"/v1/predictions/{t}?after={entry}&wait=5").json()
            assert body["stream_id"] == entry and body["last_price"] == 50.0, t
        shards = c.get("/v1/shards").json()["shards"]
        assert [s["stream"] for s in shards] == [f"ticks:{{{s}}}" for s in range(SHARDS)]
        assert sum(s["tickers"] for s in shards) == 16
        assert all(s["cursor"] and s["owner"] for s in shards)
        assert c.get("/readyz").status_code == 200
        metrics = c.get("/metrics").text
        assert "tickstream_shards_here 2.0" in metrics

        # keeping up with a steady feed is ready, though some shard almost always has a
        # commit in flight (the strict `ready` of every shard at one instant is rare)
        stop = threading.Event()
        feeder = threading.Thread(target=feed_synthetic, daemon=True, kwargs={
            "client": redis_client, "stream": Routing("ticks", SHARDS), "tickers": 16,
            "rate": 3000.0, "stop": stop, "echo": lambda _: None})
        feeder.start()
        time.sleep(0.5)
        answers = []
        for _ in range(40):
            answers.append(c.get("/readyz").status_code)
            time.sleep(0.05)
        stop.set()
        feeder.join()
        assert answers.count(200) >= 30, answers


def test_a_read_waiting_on_a_shard_handed_over_meanwhile_gets_the_new_owners_answer(
        engines, redis_url: str, redis_client: redis.Redis,
        artifact: Artifact) -> None:  # noqa: F811
    """GETs with `after` wait on every shard of an engine running all four; a second
    engine joins and takes two; then the awaited entries come. Each GET answers with its
    entry: those of the shards handed over from the new owner's written outputs, not the
    old owner's silence until `wait` runs out."""
    with TestClient(create_app(sharded_settings(redis_url), artifact)) as c:
        wait_for(lambda: c.get("/v1/shards").json()["engines"] == 1
                 and sum(s["here"] for s in c.get("/v1/shards").json()["shards"]) == SHARDS,
                 "one engine running every shard")
        tickers = {}
        for i in range(100):  # one ticker per shard
            tickers.setdefault(shard_of(f"W{i}", SHARDS), f"W{i}")
        now_ms = int(time.time() * 1000)
        entry = {s: f"{now_ms + 60_000}-{s}" for s in tickers}  # ahead of anything fed
        answers: dict[int, dict] = {}
        waiting = [threading.Thread(target=lambda s=s, t=t: answers.__setitem__(s, c.get(
            f"/v1/predictions/{t}?after={entry[s]}&wait=5").json())) for s, t in tickers.items()]
        for w in waiting:
            w.start()
        time.sleep(0.2)
        other = start(engines, redis_url, artifact)
        wait_for(lambda: len(here(other)) == 2, "the newcomer runs two shards")
        assert all(w.is_alive() for w in waiting)  # none answered before its entry came
        sent = time.monotonic()
        for s, t in tickers.items():
            redis_client.xadd(shard_stream("ticks", s), {"ticker": t, "price": "7.5"},
                              id=entry[s])
        for w in waiting:
            w.join(10)
        assert {s: a.get("stream_id") for s, a in answers.items()} == entry, answers
        # woken, not timed out: a GET still waiting on the old owner would answer only
        # when its 5 s ran out (with the same body, read from Redis then)
        assert time.monotonic() - sent < 4.0


def test_learning_on_each_shard_equals_the_offline_replay_of_its_own_stream(
        engines, redis_url: str, redis_client: redis.Redis, artifact: Artifact,  # noqa: F811
        artifact_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """Each shard learns its own weights from its own stream: `tickstream replay
    --from-redis --shard s` over that stream ends with the very learner state (bit for bit)
    and rows (float32 last bits), a wrong-shard entry dead-lettered by both."""
    learn = {"learn": True, "learn_window": 4, "learn_batch": 4, "learn_rate": 0.01,
             "initial_rows": 4}
    engine = ShardedEngine(sharded_settings(redis_url, **learn), artifact, redis_url)
    engine.start()
    engines.append(engine)
    ticks = interleaved(8, 1600, seed=5)
    feed(redis_client, ticks)
    wrong = next(t for t in ("A", "B", "C", "D", "E") if shard_of(t, SHARDS) != 1)
    redis_client.xadd(shard_stream("ticks", 1), {"ticker": wrong, "price": "5"})
    wait_for(lambda: steps(engine) == len(ticks) and engine.ready
             and engine.counters().dead_lettered == {"wrong_shard": 1}, "every tick applied")
    assert engine.model_info()["updates"] >= 20
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in learn.items() if k != "learn"]
    for s in range(SHARDS):
        mine = [t for t in engine.tickers() if shard_of(t, SHARDS) == s]
        if not mine:
            continue
        live = engine.engine_of(mine[0]).capture()
        out, state = tmp_path / f"{s}.csv", tmp_path / f"{s}.npz"
        subprocess.run([TICKSTREAM, "replay", "--from-redis", "--redis-url", redis_url,
                        "--shards", str(SHARDS), "--shard", str(s), "--model-dir",
                        str(artifact_dir), "--learn", *flags, "--batch-count", "700",
                        "--out", str(out), "--state-out", str(state)],
                       check=True, capture_output=True, timeout=300)
        with np.load(state, allow_pickle=False) as arrays:
            replayed = dict(arrays)
        learned = [k for k in live.arrays if k.startswith("learn.")]
        assert learned and int(live.arrays["learn.counts"][0]) > 0, s
        for k in learned:
            np.testing.assert_array_equal(live.arrays[k], replayed[k], err_msg=f"{s}: {k}")
        np.testing.assert_allclose(live.rows, replayed["rows"], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(live.steps, replayed["steps"])
