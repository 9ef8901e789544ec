"""A real `tickstream serve` on a private redis-server, fed at a steady rate: the rig of
the long runs (bench.retention, bench.soak), and what they sample of Redis.

The redis-server is started as the service starts its embedded one (AOF on, fsync
always); the feed's XADDs carry no MAXLEN, so only the engine's trimming
(TICKSTREAM_TICK_RETENTION) bounds the tick stream.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.feeder import Feeder
from bench.model import UNITS, untrained_artifact
from bench.service import Server, get_json, tickstream_serve, wait_for
from service.embedded_redis import EmbeddedRedis

STREAM, PREDICTIONS, DEAD = "ticks", "predictions", "ticks:dead"
LAG_SLACK_S = 5.0  # lag may reach one snapshot interval plus this much feed
READY_TIMEOUT_S = 180.0
MiB = 1024 * 1024


@dataclass(frozen=True)
class FedOptions:
    """What the long runs share: the feed, the run's length and the service's settings."""

    minutes: float = 10.0
    rate: float = 10_000.0  # ticks/s
    tickers: int = 1000
    retention_s: int = 120  # TICKSTREAM_TICK_RETENTION
    every_s: float = 10.0  # sampling interval
    snapshot_every_s: float = 5.0  # TICKSTREAM_SNAPSHOT_EVERY_S
    dead_maxlen: int = 100_000  # TICKSTREAM_DEAD_MAXLEN

    @property
    def lag_bound(self) -> int:
        """Entries of lag allowed: one snapshot interval plus LAG_SLACK_S of feed."""
        return round(self.rate * (self.snapshot_every_s + LAG_SLACK_S))

    @property
    def lag_rule(self) -> str:
        return (f"≤ {self.lag_bound:,}: {self.snapshot_every_s:g}s snapshot + "
                f"{LAG_SLACK_S:g}s of feed")

    def env(self) -> dict[str, str]:
        """The serve process's settings: retention, snapshots, the stream names sampled, and
        learning off (its figures predate issue 9's online learning)."""
        return {"TICKSTREAM_LEARN": "false", "TICKSTREAM_TICK_RETENTION": str(self.retention_s),
                "TICKSTREAM_SNAPSHOT_EVERY_S": str(self.snapshot_every_s),
                "TICKSTREAM_DEAD_MAXLEN": str(self.dead_maxlen),
                "TICKSTREAM_PREDICTIONS_STREAM": PREDICTIONS, "TICKSTREAM_DEAD_STREAM": DEAD}


def add_arguments(p: argparse.ArgumentParser, d: FedOptions) -> None:
    """FedOptions' fields as flags, with `d`'s defaults."""
    p.add_argument("--minutes", type=float, default=d.minutes)
    p.add_argument("--rate", type=float, default=d.rate, help="ticks/s fed")
    p.add_argument("--tickers", type=int, default=d.tickers)
    p.add_argument("--retention-s", type=int, default=d.retention_s,
                   help="TICKSTREAM_TICK_RETENTION")
    p.add_argument("--every-s", type=float, default=d.every_s, help="sampling interval")
    p.add_argument("--snapshot-every-s", type=float, default=d.snapshot_every_s,
                   help="TICKSTREAM_SNAPSHOT_EVERY_S")
    p.add_argument("--dead-maxlen", type=int, default=d.dead_maxlen,
                   help="TICKSTREAM_DEAD_MAXLEN")
    p.add_argument("--out", type=Path,
                   help="also write the report (Markdown) here, a plot if any beside it")


def fed_arguments(a: argparse.Namespace) -> dict[str, Any]:
    """FedOptions' fields from parsed flags, as keyword arguments."""
    return {f.name: getattr(a, f.name) for f in dataclasses.fields(FedOptions)}


@dataclass(frozen=True)
class Fed:
    client: redis.Redis
    svc: Server
    feeder: Feeder
    t0: float  # time.monotonic() when the feed started

    def at(self, t_s: float) -> None:
        """Sleep until `t_s` seconds after the feed started."""
        time.sleep(max(0.0, self.t0 + t_s - time.monotonic()))

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def check_alive(self) -> None:
        assert self.svc.proc is not None
        if self.svc.proc.poll() is not None:
            raise RuntimeError(f"tickstream serve exited {self.svc.proc.returncode}: "
                               f"{self.svc.log.read_text()[-2000:]}")


@contextmanager
def stopped_by_sigterm() -> Iterator[None]:
    """A SIGTERM raises SystemExit, so the run still stops its serve and redis-server."""
    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def fed_service(name: str, opts: FedOptions, say: Callable[[str], None]) -> Iterator[Fed]:
    """Serve (ready) and feed `opts.rate` ticks/s over `opts.tickers`, each process private
    to the run and stopped on exit; yields once the feed has started."""
    env, rate, tickers = opts.env(), opts.rate, opts.tickers
    with stopped_by_sigterm(), tempfile.TemporaryDirectory(prefix=f"tickstream-{name}-") as tmp:
        workdir = Path(tmp)
        say(f"[setup] untrained model H={UNITS}; redis-server (AOF, fsync always)")
        model_dir = untrained_artifact(workdir / "model")
        with EmbeddedRedis(workdir / "redis") as server:
            client = redis.Redis.from_url(server.url)
            svc = tickstream_serve(server.url, model_dir, workdir, name, STREAM, env)
            say(f"[setup] tickstream serve with {' '.join(f'{k}={v}' for k, v in env.items())}")
            svc.start()
            try:
                wait_for(lambda: get_json(svc.port, "/readyz").get("ready") is True,
                         "the service to be ready", READY_TIMEOUT_S, every_s=0.2)
                say(f"[feed] {rate:,.0f} ticks/s over {tickers:,} tickers (XADD, no MAXLEN)")
                feeder = Feeder(server.port, STREAM, tickers, rate, maxlen=None)
                fed = Fed(client, svc, feeder, time.monotonic())
                feeder.start()
                try:
                    yield fed
                finally:
                    feeder.stop()
            finally:
                svc.stop()
                client.close()


def sample_times(seconds: float, every_s: float) -> list[float]:
    """0, every_s, 2 every_s, ... and `seconds` itself."""
    return sorted({min(k * every_s, seconds) for k in range(math.ceil(seconds / every_s) + 1)})


@dataclass(frozen=True)
class RedisFigures:
    """Redis memory and where it sits, and the streams' lengths."""

    used_memory: int  # INFO memory, bytes
    dataset: int  # used_memory_dataset: keys and values
    predictions_bytes: int  # MEMORY USAGE of the predictions stream (part of the dataset)
    clients: int  # mem_clients_normal: client query and output buffers
    rewriting: bool  # aof_rewrite_in_progress
    rewrites: int  # aof_rewrites: AOF rewrites since the server started
    ticks: int  # XLEN
    oldest_s: float | None  # age of the tick stream's first entry, by entry-ID time
    predictions: int  # XLEN
    dead: int  # XLEN

    @property
    def other(self) -> int:
        """The rest of used_memory: Redis's own overhead (startup, AOF buffer, dicts)."""
        return self.used_memory - self.dataset - self.clients

    HEADER = ("used_memory (MiB) | dataset | of which predictions | clients | other | "
              "AOF rewrites (running) | XLEN ticks | oldest tick (s)")

    def cells(self) -> str:
        return (f"{self.used_memory / MiB:,.1f} | {self.dataset / MiB:,.1f} | "
                f"{self.predictions_bytes / MiB:,.1f} | {self.clients / MiB:,.2f} | "
                f"{self.other / MiB:,.1f} | {self.rewrites}"
                f"{' (yes)' if self.rewriting else ''} | {self.ticks:,} | {fmt(self.oldest_s)}")


def redis_figures(client: redis.Redis) -> RedisFigures:
    pipe = client.pipeline(transaction=False)
    pipe.info("memory").info("persistence").xlen(STREAM).xlen(PREDICTIONS).xlen(DEAD)
    pipe.xrange(STREAM, count=1).memory_usage(PREDICTIONS, samples=0)  # exact: every node
    memory, persistence, ticks, predictions, dead, first, published = pipe.execute()
    oldest = (time.time() - int(first[0][0].split(b"-")[0]) / 1000) if first else None
    return RedisFigures(memory["used_memory"], memory["used_memory_dataset"], published or 0,
                        memory["mem_clients_normal"], bool(persistence["aof_rewrite_in_progress"]),
                        persistence["aof_rewrites"], ticks, oldest, predictions, dead)


def breakdown(judged: list[RedisFigures]) -> str:
    """Where used_memory sat over `judged`: a line for the verdicts."""
    def span(values: list[int]) -> str:
        return (f"{min(values) / MiB:,.2f}/{max(values) / MiB:,.2f}/"
                f"{statistics.median(values) / MiB:,.2f}")
    rewrites = judged[-1].rewrites - judged[0].rewrites
    running = sum(r.rewriting for r in judged)
    return (f"breakdown (min/max/median MiB): dataset {span([r.dataset for r in judged])} "
            f"(predictions stream {span([r.predictions_bytes for r in judged])}), clients "
            f"{span([r.clients for r in judged])}, other "
            f"{span([r.other for r in judged])}; {rewrites} AOF rewrite(s) in the window, "
            f"running at {running} of {len(judged)} samples")


def flat(values: list[float]) -> tuple[float, float]:
    """(median, worst deviation from it in %) of `values`."""
    median = statistics.median(values)
    return median, max(100 * abs(v - median) / median for v in values)


def table_head(columns: str) -> str:
    """A Markdown table's first two lines, every column right-aligned."""
    return f"| {columns} |\n|{'---:|' * (columns.count('|') + 1)}"


def machine() -> str:
    """Date, cores, CPU model, load average and commit: the head line of a report."""
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    models = [line.split(":", 1)[1].strip() for line in
              Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent).stdout.strip() or "?"
    return (f"Date: {date}; {os.cpu_count()} cores ({models[0] if models else 'CPU unknown'}); "
            f"load average at the end {load}; HEAD {commit}")


def fmt(x: float | None) -> str:
    return "?" if x is None else f"{x:,.0f}"
