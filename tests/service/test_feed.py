"""Feed pacing against the wall clock, on a real Redis."""

from __future__ import annotations

import threading
import time

import numpy as np
import redis

from models.ticks import TickTable
from service.feed import feed_replay, feed_synthetic


def test_synthetic_rate_paces_the_sends(redis_client: redis.Redis) -> None:
    t0 = time.monotonic()
    sent = feed_synthetic(redis_client, "ticks", tickers=2, rate=200, count=100, echo=print)
    elapsed = time.monotonic() - t0
    assert sent == 100 and redis_client.xlen("ticks") == 100
    assert 0.45 <= elapsed < 3.0  # 100 ticks at 200/s is half a second, not at once


def test_replay_speed_scales_the_recorded_gaps(redis_client: redis.Redis) -> None:
    ts = np.array([0, 500, 1000, 2000], np.int64)  # 2 s of recorded time
    table = TickTable(np.array(["A"] * 4), ts, np.ones(4), np.zeros(4))
    t0 = time.monotonic()
    assert feed_replay(redis_client, "ticks", table, speed=4.0, echo=print) == 4
    assert 0.45 <= time.monotonic() - t0 < 2.0  # 2 s at 4x is half a second
    assert [f[b"ts"] for _, f in redis_client.xrange("ticks")] == [b"0", b"500", b"1000", b"2000"]


def test_stop_ends_an_endless_feed(redis_client: redis.Redis) -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    sent = feed_synthetic(redis_client, "ticks", tickers=5, rate=100, stop=stop, echo=print)
    assert 10 <= sent <= 60 and redis_client.xlen("ticks") == sent
