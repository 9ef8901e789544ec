"""Producers for the tick stream: a live synthetic market, or recorded ticks replayed in ts order.

Both pace themselves against the wall clock and send whatever is due in one pipelined
XADD round trip, so a high rate costs a few round trips per second, not one per tick.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from models.synthetic import SyntheticMarket
from models.ticks import Tick, TickTable
from service.shards import Routing
from service.topology import AnyRedis

CHUNK = 1000  # ticks per pipelined round trip
MAX_SLEEP_S = 0.1  # so a stop request is seen promptly


def tick_fields(tick: Tick, with_ts: bool) -> dict[str, str]:
    """A tick as the stream entry's fields, as every producer here writes them.

    Without `with_ts` the entry has no `ts`: the stream ID's time is the tick's time,
    which Redis keeps increasing even if the wall clock steps back.
    """
    fields = {"ticker": tick.ticker, "price": repr(tick.price), "volume": repr(tick.volume)}
    if with_ts:
        fields["ts"] = str(tick.ts_ms)
    return fields


def xadd_table(client: AnyRedis, stream: str | Routing, table: TickTable,
               with_ts: bool) -> None:
    """Append every tick of `table`, in order, in one round trip (per Redis Cluster node):
    each to its ticker's shard stream when `stream` is a sharded Routing."""
    stream_of = (stream if isinstance(stream, Routing) else Routing(stream)).stream_of
    pipe = client.pipeline(transaction=False)
    for tick in table.ticks():
        pipe.xadd(stream_of(tick.ticker), tick_fields(tick, with_ts))
    pipe.execute()


class Progress:
    """Prints how many ticks went out, at most every `every_s` seconds."""

    def __init__(self, label: str, echo: Callable[[str], None], every_s: float) -> None:
        self.label, self.echo, self.every_s = label, echo, every_s
        self.sent = 0
        self.start = self.last = time.monotonic()

    def add(self, n: int) -> None:
        self.sent += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self.echo(self.line())

    def line(self) -> str:
        rate = self.sent / max(time.monotonic() - self.start, 1e-9)
        return f"{self.label}: {self.sent:,} ticks sent ({rate:,.0f}/s)"


def feed_synthetic(
    client: AnyRedis,
    stream: str | Routing,
    tickers: int,
    rate: float,
    count: int | None = None,
    seed: int = 0,
    stop: threading.Event | None = None,
    echo: Callable[[str], None] = print,
    every_s: float = 5.0,
    regime_every: int | None = None,
) -> int:
    """Send `rate` ticks/s (0: as fast as possible) until `count` are sent or `stop` is set.

    `regime_every`: the market's coefficients change every that many ticks (None: never).
    """
    stop = stop or threading.Event()
    market = SyntheticMarket(tickers, seed, regime_every=regime_every)
    progress = Progress(f"synthetic {tickers} tickers", echo, every_s)
    while not stop.is_set() and (count is None or progress.sent < count):
        elapsed = time.monotonic() - progress.start
        due = CHUNK if rate == 0 else min(CHUNK, int(elapsed * rate) - progress.sent)
        if count is not None:
            due = min(due, count - progress.sent)
        if due <= 0:
            stop.wait(min(MAX_SLEEP_S, (progress.sent + 1) / rate - elapsed))
            continue
        xadd_table(client, stream, market.ticks(due), with_ts=False)
        progress.add(due)
    echo(progress.line())
    return progress.sent


def feed_replay(
    client: AnyRedis,
    stream: str | Routing,
    table: TickTable,
    speed: float,
    stop: threading.Event | None = None,
    echo: Callable[[str], None] = print,
    label: str = "replay",
    every_s: float = 5.0,
) -> int:
    """Replay `table` (ts order) `speed` times as fast as it happened (0: at once)."""
    stop = stop or threading.Event()
    offset_s = (table.ts_ms - table.ts_ms[0]) / 1000.0 / speed if speed else np.zeros(len(table))
    progress = Progress(label, echo, every_s)
    while not stop.is_set() and progress.sent < len(table):
        elapsed = time.monotonic() - progress.start
        due = min(int(np.searchsorted(offset_s, elapsed, side="right")), progress.sent + CHUNK)
        if due <= progress.sent:
            stop.wait(min(MAX_SLEEP_S, offset_s[progress.sent] - elapsed))
            continue
        xadd_table(client, stream, table.take(np.arange(progress.sent, due)), with_ts=True)
        progress.add(due - progress.sent)
    echo(progress.line())
    return progress.sent
