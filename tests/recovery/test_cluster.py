"""Shards on a real 3-master Redis Cluster: several engines, one SIGKILLed, one added.

The end state must be what one uninterrupted engine per ticker would give: every ticker's
steps and prediction equal batch-size-1 Keras (learning off), every valid tick's output
in its shard's predictions stream exactly once and every bad entry's dead letter once,
whichever engine produced them.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from harness import (
    TICKSTREAM,
    ServiceProcess,
    assert_served_equals_keras,
    market_ticks,
    xadd_ticks,
)

from bench.cluster import RedisClusterProcesses
from models.ticks import TickTable
from service.prediction_stream import stream_predictions
from service.shards import Routing, shard_of, shard_stream

SHARDS = 8
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    with RedisClusterProcesses(tmp_path_factory.mktemp("cluster")) as c:
        yield c


@pytest.fixture
def cluster_url(cluster: RedisClusterProcesses) -> Iterator[str]:
    yield cluster.url
    cluster.flush()


@pytest.fixture
def engines() -> Iterator[list[ServiceProcess]]:
    """Every engine a test makes is stopped at its end, pass or fail."""
    made: list[ServiceProcess] = []
    yield made
    for engine in made:
        engine.stop()


def _engine(made: list[ServiceProcess], tmp_path: Path, url: str, artifact_dir: Path,
            name: str) -> ServiceProcess:
    workdir = tmp_path / name
    workdir.mkdir()
    made.append(ServiceProcess(workdir, {
        "TICKSTREAM_REDIS_URL": url, "TICKSTREAM_MODEL_DIR": str(artifact_dir),
        "TICKSTREAM_SHARDS": str(SHARDS), "TICKSTREAM_LEARN": "false",
        "TICKSTREAM_INITIAL_ROWS": "4", "TICKSTREAM_PREDICTIONS_RETENTION_S": "0",
        "TICKSTREAM_LEASE_TTL_S": "3", "TICKSTREAM_SNAPSHOT_EVERY_S": "0.5"}))
    return made[-1]


def _owners(engine: ServiceProcess) -> dict[int, str | None]:
    return {s["shard"]: s["owner"] for s in engine.http.get("/v1/shards").json()["shards"]}


def _wait(what: str, check, timeout: float = 90.0) -> float:
    """Seconds until `check()` holds."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what}: not after {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - t0


def _here(engine: ServiceProcess) -> int:
    return sum(s["here"] for s in engine.http.get("/v1/shards").json()["shards"])


def _bad_entries(client: redis.RedisCluster) -> dict[tuple[int, str], str]:
    """One bad entry per reason, each in a shard stream: (shard, ID) -> expected reason."""
    wrong = next(t for t in (f"W{i}" for i in range(100)) if shard_of(t, SHARDS) != 2)
    sent = {
        0: ({"ticker": "ZZ", "price": "nan"}, "bad_price"),
        2: ({"ticker": wrong, "price": "10"}, "wrong_shard"),
        5: ({"control": "explode", "ticker": "A"}, "bad_control"),
    }
    return {(s, client.xadd(shard_stream("ticks", s), fields).decode()): reason
            for s, (fields, reason) in sent.items()}


def read_sse(url: str, last_id: str, limit: int | None, quiet_s: float = 2.0
             ) -> list[tuple[str, dict]]:
    """(event id, data) of /v1/stream's events after `last_id`: `limit` of them, or all
    until none came for `quiet_s`."""
    events: list[tuple[str, dict]] = []
    event_id, deadline = "", time.monotonic() + quiet_s
    with httpx.stream("GET", f"{url}/v1/stream", headers={"Last-Event-ID": last_id},
                      timeout=10) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                events.append((event_id, json.loads(line[6:])))
                deadline = time.monotonic() + quiet_s
            if len(events) == limit or time.monotonic() > deadline:
                break
    return events


def _valid(ticks: TickTable) -> TickTable:
    return ticks  # every tick market_ticks makes is valid and in order per ticker


def test_engines_share_shards_survive_a_kill_and_take_in_a_newcomer(
        tmp_path: Path, cluster_url: str, artifact_dir: Path,
        engines: list[ServiceProcess]) -> None:
    client = redis.RedisCluster.from_url(cluster_url)
    a = _engine(engines, tmp_path, cluster_url, artifact_dir, "a")
    b = _engine(engines, tmp_path, cluster_url, artifact_dir, "b")
    a.start()
    a.wait_ready()
    b.start()
    b.wait_ready()
    joined = _wait("two engines share the shards", lambda: _here(a) == _here(b) == 4)

    ticks = market_ticks(24, 8000, seed=11)
    routing = Routing("ticks", SHARDS)
    c_joined = threading.Event()

    def feed() -> None:  # a steady synthetic feed, 100 ticks every 0.1 s, routed by shard;
        # its last quarter only once C has joined, so C joins while ticks flow
        for i, index in enumerate(np.array_split(np.arange(len(ticks)), 80)):
            if i == 60:
                c_joined.wait(120)
            part = ticks.take(index)
            for stream, where in routing.split(part.ticker.tolist()).items():
                xadd_ticks(client, part.take(np.array(where)), stream)
            time.sleep(0.1)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    bad = _bad_entries(client)
    time.sleep(1.5)
    b.kill()  # mid-run, mid-feed: its shards' leases are left behind
    took_over = _wait("A runs every shard", lambda: _here(a) == SHARDS)
    c = _engine(engines, tmp_path, cluster_url, artifact_dir, "c")
    c.start()
    moved = _wait("C gets its share", lambda: _here(c) == 4 and _here(a) == 4)
    c_joined.set()
    feeder.join()

    served = a.wait_applied(len(ticks))
    c.wait_ready()
    print(f"\nhandover: join of B {joined:.2f}s, death of B -> A runs all {took_over:.2f}s, "
          f"join of C -> its share {moved:.2f}s")
    assert_served_equals_keras(served, artifact_dir, _valid(ticks))
    # any engine answers for any ticker, its own shards from memory, others from Redis
    for ticker in ticks.tickers():
        from_a, from_c = (e.http.get(f"/v1/predictions/{ticker}").json() for e in (a, c))
        assert from_a["prediction"] == from_c["prediction"], ticker
        assert {from_a["served_from"], from_c["served_from"]} == {"memory", "redis"}

    # exactly once: each valid tick's output once, in its shard's predictions stream (IDs
    # are per stream: two shards' streams may hand out the same one)
    outputs: Counter[tuple[int, str]] = Counter()
    dead: dict[tuple[int, str], str] = {}
    for s in range(SHARDS):
        entries = client.xrange(shard_stream("predictions", s))
        outputs.update((s, p.stream_id) for p in stream_predictions(entries))
        for _, fields in client.xrange(shard_stream("ticks:dead", s)):
            source = (s, fields[b"source_id"].decode())
            assert source not in dead, f"dead letter of {source} written twice"
            dead[source] = fields[b"reason"].decode()
    assert max(outputs.values()) == 1, "an output was written twice"
    tick_ids = {(s, i.decode()) for s in range(SHARDS)
                for i, _ in client.xrange(shard_stream("ticks", s))}
    assert set(outputs) == tick_ids - set(bad)
    assert dead == bad
    owners = _owners(a)
    assert None not in owners.values() and len(set(owners.values())) == 2
    # the SSE stream follows every shard: from the start, cut after 40 events and resumed
    # with the last event's id (every shard's position), each tick's prediction once
    url = f"http://127.0.0.1:{c.port}"
    first = read_sse(url, "0:0-0", limit=40)
    rest = read_sse(url, first[-1][0], limit=None)
    seen = Counter((data["shard"], data["id"]) for _, data in first + rest)
    assert len(first) == 40 and max(seen.values()) == 1
    assert sum(len(data["predictions"]) for _, data in first + rest) == len(ticks)
    status = subprocess.run([TICKSTREAM, "status", "--url", f"http://127.0.0.1:{a.port}"],
                            capture_output=True, text=True, timeout=120)
    assert "run here, 2 engines live" in status.stdout, status.stdout + status.stderr
