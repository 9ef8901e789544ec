"""The whole service as a user runs it: real uvicorn, real Redis, real SIGKILL.

The oracle is always Keras itself (a batch-size-1 model per ticker over that ticker's
valid ticks, read back from the stream), and exactly-once is checked by counting: one
`predictions` stream entry per applied tick, one dead letter per bad entry.
"""

import random
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from harness import (
    assert_served_equals_keras,
    market_ticks,
    valid_ticks_in_stream,
    xadd_ticks,
)

from service.embedded_redis import find_redis_server
from service.prediction_stream import stream_predictions

pytestmark = pytest.mark.recovery

BAD_ENTRIES: list[dict[str, bytes | str]] = [
    {"price": "10"},  # no ticker
    {"ticker": "SYN0001"},  # no price
    {"ticker": "SYN0001", "price": "ten"},
    {"ticker": "SYN0002", "price": "nan"},
    {"ticker": "SYN0002", "price": "inf"},
    {"ticker": "SYN0003", "price": "-4"},
    {"ticker": "SYN0003", "price": "0"},
    {"ticker": "SYN0004", "price": "5", "volume": "-inf"},
    {"ticker": "X" * 2048, "price": "5"},
    {"ticker": b"\xff\xfe\x00garbage", "price": b"\x80\x81"},
    {"ticker": "SYN0005", "price": "5", "ts": "1"},  # far older than its previous tick
]


def feed_chunks(n_chunks: int, seed: int, n_ticks: int = 6000):
    ticks = market_ticks(24, n_ticks, seed)
    return [ticks.take(idx) for idx in np.array_split(np.arange(len(ticks)), n_chunks)]


def post_ticks(service, chunk) -> None:
    body = [{"ticker": t.ticker, "price": t.price, "volume": t.volume, "ts": t.ts_ms}
            for t in chunk.ticks()]
    response = service.http.post("/v1/ticks", json=body)
    assert response.status_code == 202, response.text


def redis_cli_xadd(url_port: int, chunk) -> None:
    cli = Path(find_redis_server()).with_name("redis-cli")
    assert cli.is_file(), "redis-cli ships beside redis-server"
    for t in chunk.ticks():
        subprocess.run([cli, "-p", str(url_port), "XADD", "ticks", "*", "ticker", t.ticker,
                        "price", repr(t.price), "ts", str(t.ts_ms)], check=True,
                       capture_output=True)


def assert_exactly_once(client: redis.Redis, n_valid: int) -> None:
    n_bad = client.xlen("ticks") - n_valid
    assert_each_tick_published_once(client, n_valid)
    assert client.xlen("ticks:dead") == n_bad, "a bad entry was dead-lettered twice or lost"
    reasons = {f[b"reason"] for _, f in client.xrange("ticks:dead")}
    assert {b"missing_field", b"bad_price", b"bad_ticker", b"out_of_order"} <= reasons
    assert all(b"source_id" in f for _, f in client.xrange("ticks:dead"))


def test_online_equals_offline_end_to_end(service_factory, redis_proc, artifact_dir):
    client = redis.Redis.from_url(redis_proc.url)
    service = service_factory(batch_count="200")
    service.start()
    chunks = feed_chunks(10, seed=11)
    for i, chunk in enumerate(chunks):
        if i % 3 == 1:
            post_ticks(service, chunk)
        elif i == 5:
            redis_cli_xadd(redis_proc.port, chunk.take(np.arange(30)))
            xadd_ticks(client, chunk.take(np.arange(30, len(chunk))))
        else:
            xadd_ticks(client, chunk)
        if i == 4:
            for fields in BAD_ENTRIES:
                client.xadd("ticks", fields)
    valid = valid_ticks_in_stream(client)
    assert len(valid) >= 5000 and len(valid.tickers()) >= 20

    served = service.wait_applied(len(valid))
    assert_served_equals_keras(served, artifact_dir, valid)
    assert_exactly_once(client, len(valid))
    one = service.http.get(f"/v1/predictions/{valid.tickers()[0].lower()}").json()
    assert one["steps"] == int((valid.ticker == valid.tickers()[0]).sum())
    assert service.http.get("/v1/predictions/NOPE").status_code == 404


def test_sigkill_at_random_moments_loses_and_doubles_nothing(service_factory, redis_proc,
                                                             artifact_dir):
    rng = random.Random(3)
    client = redis.Redis.from_url(redis_proc.url)
    service = service_factory(batch_count="50")  # many small batches: many commits
    chunks = feed_chunks(8, seed=12, n_ticks=8000)
    replayed = 0  # restarts that recomputed outputs already written: kills past a snapshot
    service.start()
    for i, chunk in enumerate(chunks):
        xadd_ticks(client, chunk)
        if i == 2:
            for fields in BAD_ENTRIES:
                client.xadd("ticks", fields)
        time.sleep(rng.uniform(0.0, 0.3))  # while the backlog drains: read, step, commit
        service.kill()
        service.env["TICKSTREAM_SNAPSHOT_EVERY_S"] = f"{rng.uniform(0.05, 1.0):.2f}"
        service.start()
        replayed += service.wait_ready()["replayed"] > 0
    valid = valid_ticks_in_stream(client)
    served = service.wait_applied(len(valid))
    assert service.starts - 1 >= 5
    print(f"\n{replayed} of {service.starts - 1} kills landed between a snapshot and commits")
    assert replayed >= 2, f"only {replayed} kills landed after commits past a snapshot"
    assert_served_equals_keras(served, artifact_dir, valid)
    assert_exactly_once(client, len(valid))


def test_redis_restart_keeps_reads_up_and_ends_exact(service_factory, redis_proc, artifact_dir):
    client = redis.Redis.from_url(redis_proc.url)
    service = service_factory(batch_count="100")
    service.start()
    first, second = feed_chunks(2, seed=13)
    xadd_ticks(client, first)
    before = service.wait_applied(len(first))

    redis_proc.kill()
    deadline = time.monotonic() + 30
    while service.http.get("/readyz").status_code == 200:
        assert time.monotonic() < deadline, "/readyz stayed ready with Redis down"
        time.sleep(0.1)
    during = service.http.get("/v1/predictions")
    assert during.status_code == 200
    assert during.json()["predictions"].keys() == before.keys()

    redis_proc.restart()
    client = redis.Redis.from_url(redis_proc.url)
    xadd_ticks(client, second)
    valid = valid_ticks_in_stream(client)
    served = service.wait_applied(len(valid))  # waits for /readyz 200 as well
    assert service.proc.poll() is None, "the service must ride out a Redis restart"
    assert_served_equals_keras(served, artifact_dir, valid)
    assert_exactly_once_no_bad(client, len(valid))


def assert_each_tick_published_once(client: redis.Redis, n_valid: int) -> None:
    """The predictions stream holds one prediction per valid tick, each ticker's numbered
    1, 2, 3, ... in order: a tick applied twice or skipped would break the count."""
    published = stream_predictions(client.xrange("predictions"))
    assert len(published) == n_valid, "a tick was applied twice or skipped"
    by_ticker: dict[str, list[int]] = {}
    for p in published:
        by_ticker.setdefault(p.ticker, []).append(p.steps)
    for ticker, steps in by_ticker.items():
        assert steps == list(range(1, len(steps) + 1)), ticker


def assert_exactly_once_no_bad(client: redis.Redis, n_valid: int) -> None:
    assert_each_tick_published_once(client, n_valid)
    assert client.xlen("ticks:dead") == 0
