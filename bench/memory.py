"""Memory of the running service: resident set after N tickers, and its growth under load."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis

from bench.feeder import Feeder
from bench.service import Resident, Server, serves_through, wait_for
from bench.traffic import fill, tick_fields
from service.reader import last_id

DRAIN_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Growth:
    start_kb: int  # RSS once warmed up
    end_kb: int
    max_kb: int
    seconds: float
    rate: float  # ticks/s fed
    samples: list[tuple[float, int]] = field(default_factory=list)  # (s, RSS KiB)

    @property
    def growth_pct(self) -> float:
        return 100.0 * (self.end_kb - self.start_kb) / self.start_kb


def rss_after(server: Server, client: redis.Redis, port: int, stream: str, n_tickers: int,
              n_ticks: int) -> Resident:
    """Feed `n_ticks` over `n_tickers`, wait until the service applied them all; then its
    resident memory."""
    fill(client, port, stream, tick_fields("uniform", n_tickers, n_ticks, seed=n_tickers))
    last = last_id(client, stream)
    wait_for(lambda: serves_through(server, last), "the service to drain", DRAIN_TIMEOUT_S,
             every_s=0.2)
    return server.rss_kb()


def rss_growth(server: Server, port: int, stream: str, n_tickers: int, rate: float,
               seconds: float, warmup_s: float, every_s: float) -> Growth:
    """RSS every `every_s` while feeding `rate` ticks/s; growth counts from `warmup_s`."""
    feeder = Feeder(port, stream, n_tickers, rate, seed=7).start()
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    try:
        while (now := time.monotonic() - t0) < seconds:
            samples.append((now, server.rss_kb()[0]))
            time.sleep(every_s)
    finally:
        sent = feeder.stop()
    samples.append((time.monotonic() - t0, server.rss_kb()[0]))
    warm = [kb for s, kb in samples if s >= warmup_s]
    return Growth(warm[0], warm[-1], max(kb for _, kb in samples), samples[-1][0],
                  sent / samples[-1][0], samples)
