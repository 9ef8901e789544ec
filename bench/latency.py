"""Latency: from XADD of a tick to its prediction being visible at GET /v1/predictions/{t}.

A steady feed runs at the target rate; on top, a probe XADDs one tick at a time, notes
the stream ID Redis gave it, and polls the ticker's route until the served `stream_id`
reaches it (a later tick of the ticker implies this one was applied: the loop applies in
stream order). Probes are spaced at random, so they do not phase-lock with the loop.
"""

from __future__ import annotations

import http.client
import random
import time
from dataclasses import dataclass

import numpy as np
import redis

from bench.feeder import Feeder
from bench.service import Server, get_json
from service.records import parse_id

POLL_S = 0.0002  # between polls of one probe: the figure's resolution is ~one GET
PROBE_TIMEOUT_S = 10.0
PROBE_GAP_S = (0.005, 0.03)


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p99_ms: float
    max_ms: float
    probes: int
    rate: float  # ticks/s actually fed (feed + probes)


def probe_once(client: redis.Redis, conn: http.client.HTTPConnection, port: int,
               stream: str, ticker: str) -> float:
    """Seconds from XADD to the tick's prediction being served."""
    t0 = time.perf_counter()
    entry_id = client.xadd(stream, {"ticker": ticker, "price": "100.0", "volume": "1"})
    target = parse_id(entry_id.decode())
    deadline = t0 + PROBE_TIMEOUT_S
    while True:
        body = get_json(port, f"/v1/predictions/{ticker}", conn)
        if "stream_id" in body and parse_id(body["stream_id"]) >= target:
            return time.perf_counter() - t0
        if time.perf_counter() > deadline:
            raise TimeoutError(f"probe {entry_id!r} not served within {PROBE_TIMEOUT_S}s")
        time.sleep(POLL_S)


def measure(server: Server, redis_port: int, stream: str, n_tickers: int, rate: float,
            seconds: float, seed: int = 0) -> Latency:
    rng = random.Random(seed)
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    probe_rate = 1.0 / np.mean(PROBE_GAP_S)
    feeder = Feeder(redis_port, stream, n_tickers, max(rate - probe_rate, 1.0), seed).start()
    seconds_taken: list[float] = []
    t_start = time.monotonic()
    try:
        while time.monotonic() - t_start < seconds:
            ticker = f"T{rng.randrange(n_tickers):05d}"
            seconds_taken.append(probe_once(client, conn, server.port, stream, ticker))
            time.sleep(rng.uniform(*PROBE_GAP_S))
    finally:
        sent = feeder.stop()
        elapsed = time.monotonic() - t_start
        conn.close()
        client.close()
    ms = np.array(seconds_taken) * 1e3
    return Latency(float(np.percentile(ms, 50)), float(np.percentile(ms, 99)),
                   float(ms.max()), len(ms), (sent + len(ms)) / elapsed)
