"""Latency: from XADD of a tick to its prediction being visible at GET /v1/predictions/{t}.

A steady feed runs at the target rate; on top, a probe XADDs one tick at a time, notes
the stream ID Redis gave it, and reads the ticker's route until the served `stream_id`
reaches it (a later tick of the ticker implies this one was applied: the loop applies in
stream order). Probes are spaced at random, so they do not phase-lock with the loop.

Three probes, under the same feed:
- `after`: one GET with `?after=<the ID>`: the service answers once it serves that entry
  (read-your-writes, what a producer that wants its prediction does);
- `poll`: plain GETs every 0.2 ms until one shows the tick (each a round trip; the first
  often arrives while the loop is still stepping the tick);
- `floor`: the same XADD (to a stream no one reads) and one GET of the bare FastAPI app
  (bench/bare_app.py): what the machine's Redis fsync and one HTTP round trip cost with no
  model and no loop, the baseline the other two are compared with.
"""

from __future__ import annotations

import http.client
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import redis

from bench.feeder import Feeder
from bench.service import Server, get_json
from service.records import parse_id

Probe = Literal["after", "poll", "floor"]
POLL_S = 0.0002  # between polls of one probe: the figure's resolution is ~one GET
PROBE_TIMEOUT_S = 10.0
PROBE_GAP_S = (0.005, 0.03)
AFTER_WAIT_S = 5  # the most the route waits (its `wait` limit)


@dataclass(frozen=True)
class Latency:
    probe: Probe
    p50_ms: float
    p99_ms: float
    max_ms: float
    xadd_p50_ms: float  # the XADD alone (its fsync with appendfsync always)
    probes: int
    rate: float  # ticks/s actually fed (feed + probes)


def probe_once(client: redis.Redis, conn: http.client.HTTPConnection, port: int,
               stream: str, ticker: str, probe: Probe) -> tuple[float, float]:
    """(seconds from XADD to the tick's prediction being served, seconds of the XADD)."""
    t0 = time.perf_counter()
    entry_id = client.xadd(stream, {"ticker": ticker, "price": "100.0", "volume": "1"})
    xadd_s = time.perf_counter() - t0
    if probe == "floor":
        get_json(port, f"/v1/predictions/{ticker}", conn)
        return time.perf_counter() - t0, xadd_s
    target = parse_id(entry_id.decode())
    path = f"/v1/predictions/{ticker}"
    if probe == "after":
        path += f"?after={entry_id.decode()}&wait={AFTER_WAIT_S}"
    deadline = t0 + PROBE_TIMEOUT_S
    while True:
        body = get_json(port, path, conn)
        if "stream_id" in body and parse_id(body["stream_id"]) >= target:
            return time.perf_counter() - t0, xadd_s
        if time.perf_counter() > deadline:
            raise TimeoutError(f"probe {entry_id!r} not served within {PROBE_TIMEOUT_S}s")
        time.sleep(POLL_S)


def measure(server: Server, redis_port: int, stream: str, n_tickers: int, rate: float,
            seconds: float, seed: int = 0, probe: Probe = "after",
            floor_app: Server | None = None) -> Latency:
    """`probe` against `server` while `stream` is fed at `rate`; for `floor`, the probe's
    XADDs go to a stream of their own and its GETs to `floor_app`."""
    rng = random.Random(seed)
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    target: Server = server
    probe_stream = stream
    if probe == "floor":
        if floor_app is None:
            raise ValueError("the floor probe needs the bare app (floor_app)")
        target, probe_stream = floor_app, f"{stream}:floor"
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=10)
    probe_rate = 1.0 / np.mean(PROBE_GAP_S)
    feeder = Feeder(redis_port, stream, n_tickers, max(rate - probe_rate, 1.0), seed).start()
    taken: list[tuple[float, float]] = []
    t_start = time.monotonic()
    try:
        while time.monotonic() - t_start < seconds:
            ticker = f"T{rng.randrange(n_tickers):05d}"
            taken.append(probe_once(client, conn, target.port, probe_stream, ticker, probe))
            time.sleep(rng.uniform(*PROBE_GAP_S))
    finally:
        sent = feeder.stop()
        elapsed = time.monotonic() - t_start
        conn.close()
        if probe == "floor":
            client.delete(probe_stream)
        client.close()
    ms = np.array(taken) * 1e3
    return Latency(probe, float(np.percentile(ms[:, 0], 50)), float(np.percentile(ms[:, 0], 99)),
                   float(ms[:, 0].max()), float(np.percentile(ms[:, 1], 50)), len(ms),
                   (sent + len(ms)) / elapsed)


def measure_all(server: Server, floor_app: Server, redis_port: int, stream: str,
                n_tickers: int, rate: float, seconds: float, rounds: int,
                say: Callable[[str], None]) -> dict[Probe, list[Latency]]:
    """Every probe, `rounds` times, interleaved (floor, after, poll in each round), so
    the machine's drift over the run touches all three alike."""
    out: dict[Probe, list[Latency]] = {}
    for r in range(rounds):
        for probe in ("floor", "after", "poll"):
            lat = measure(server, redis_port, stream, n_tickers, rate, seconds, seed=r,
                          probe=probe, floor_app=floor_app)
            out.setdefault(probe, []).append(lat)
            say(f"[latency {r + 1}/{rounds}] {probe}: p50 {lat.p50_ms:.2f} ms, p99 "
                f"{lat.p99_ms:.2f} ms, max {lat.max_ms:.2f} ms (XADD p50 "
                f"{lat.xadd_p50_ms:.2f} ms) over {lat.probes} probes at {lat.rate:,.0f} "
                "ticks/s")
    return out
