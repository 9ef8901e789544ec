"""Redis memory while the engine trims the tick stream (issue 8).

What it proves is issue 8's acceptance: "a 10-minute run at 10,000 ticks/s with
TICK_RETENTION of 2 minutes keeps Redis used_memory within ±10% after the first retention
window"; the defaults are that run. It starts a private redis-server (AOF on, fsync always:
how the service runs it) and a real `tickstream serve` process with
TICKSTREAM_TICK_RETENTION, TICKSTREAM_SNAPSHOT_EVERY_S and TICKSTREAM_DEAD_MAXLEN, then
feeds it with XADDs that carry no MAXLEN, so only the engine's trimming bounds the stream.
Every --every-s it samples Redis used_memory, XLEN of ticks, predictions and ticks:dead,
the age of the oldest tick, and the service's RSS, lag and ticks applied.

The verdict judges the samples from the end of the first retention window on (retention +
one snapshot interval + a 60 s warm-up, from the feed's start): used_memory stays within
±10% of its median over them, and lag stays bounded (known, and at most one snapshot
interval + LAG_SLACK_S seconds of feed). Exit status 1 if either fails.

Run: `python -m bench.retention [--minutes 10] [--rate 10000] [--tickers 1000]
[--retention-s 120] [--every-s 10] [--out FILE]`.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.feeder import Feeder
from bench.model import UNITS, untrained_artifact
from bench.service import Server, get_json, tickstream_serve, wait_for
from service.embedded_redis import EmbeddedRedis

STREAM, PREDICTIONS, DEAD = "ticks", "predictions", "ticks:dead"
NAME = "retention"
TOLERANCE_PCT = 10.0  # issue 8: used_memory within ±10% of its median
LAG_SLACK_S = 5.0  # lag may reach one snapshot interval plus this much feed
READY_TIMEOUT_S = 180.0
MiB = 1024 * 1024


@dataclass(frozen=True)
class Options:
    minutes: float = 10.0
    rate: float = 10_000.0
    tickers: int = 1000
    retention_s: int = 120
    snapshot_every_s: float = 5.0
    dead_maxlen: int = 100_000
    every_s: float = 10.0
    warmup_s: float = 60.0

    @property
    def window_s(self) -> float:
        """The first retention window: samples from here on are judged."""
        return self.retention_s + self.snapshot_every_s + self.warmup_s

    @property
    def lag_bound(self) -> int:
        return round(self.rate * (self.snapshot_every_s + LAG_SLACK_S))

    def env(self) -> dict[str, str]:
        """The settings of the serve process (issue 8's, and the stream names sampled)."""
        return {"TICKSTREAM_TICK_RETENTION": str(self.retention_s),
                "TICKSTREAM_SNAPSHOT_EVERY_S": str(self.snapshot_every_s),
                "TICKSTREAM_DEAD_MAXLEN": str(self.dead_maxlen),
                "TICKSTREAM_PREDICTIONS_STREAM": PREDICTIONS, "TICKSTREAM_DEAD_STREAM": DEAD}


@dataclass(frozen=True)
class Sample:
    t_s: float  # since the feed started
    sent: int  # ticks fed so far
    applied: int | None  # /readyz `applied`
    lag: int | None  # /readyz `lag` (None: Redis could not tell)
    used_memory: int  # Redis INFO memory, bytes
    ticks: int  # XLEN
    oldest_s: float | None  # age of the stream's first entry, by entry-ID time
    predictions: int  # XLEN
    dead: int  # XLEN
    rss_kb: int  # the serve process


def take_sample(t0: float, feeder: Feeder, client: redis.Redis, svc: Server) -> Sample:
    assert svc.proc is not None
    if svc.proc.poll() is not None:
        raise RuntimeError(f"tickstream serve exited {svc.proc.returncode}: "
                           f"{svc.log.read_text()[-2000:]}")
    t, sent = time.monotonic() - t0, feeder.sent
    ready = get_json(svc.port, "/readyz")
    pipe = client.pipeline(transaction=False)
    pipe.info("memory").xlen(STREAM).xlen(PREDICTIONS).xlen(DEAD).xrange(STREAM, count=1)
    info, ticks, predictions, dead, first = pipe.execute()
    oldest = (time.time() - int(first[0][0].split(b"-")[0]) / 1000) if first else None
    return Sample(t, sent, ready.get("applied"), ready.get("lag"), info["used_memory"], ticks,
                  oldest, predictions, dead, svc.rss_kb()[0])


def progress(s: Sample) -> str:
    return (f"[{s.t_s:4.0f}s] fed {s.sent:,}, applied {fmt(s.applied)}, lag {fmt(s.lag)} | "
            f"redis used_memory {s.used_memory / MiB:,.1f} MiB, ticks {s.ticks:,} (oldest "
            f"{fmt(s.oldest_s)}s), predictions {s.predictions:,}, dead {s.dead:,} | "
            f"RSS {s.rss_kb / 1024:,.0f} MiB")


def fmt(x: float | None) -> str:
    return "?" if x is None else f"{x:,.0f}"


def run(opts: Options, say: Callable[[str], None]) -> list[Sample]:
    """Serve, feed and sample for `opts.minutes`, each process private to this run."""
    seconds = opts.minutes * 60
    times = sorted({min(k * opts.every_s, seconds)
                    for k in range(math.ceil(seconds / opts.every_s) + 1)})
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="tickstream-retention-") as tmp:
        workdir = Path(tmp)
        say(f"[setup] untrained model H={UNITS}; redis-server (AOF, fsync always)")
        model_dir = untrained_artifact(workdir / "model")
        with EmbeddedRedis(workdir / "redis") as server:
            client = redis.Redis.from_url(server.url)
            svc = tickstream_serve(server.url, model_dir, workdir, NAME, STREAM, opts.env())
            settings = " ".join(f"{k}={v}" for k, v in opts.env().items())
            say(f"[setup] tickstream serve with {settings}")
            svc.start()
            try:
                wait_for(lambda: get_json(svc.port, "/readyz").get("ready") is True,
                         "the service to be ready", READY_TIMEOUT_S, every_s=0.2)
                say(f"[feed] {opts.rate:,.0f} ticks/s over {opts.tickers:,} tickers for "
                    f"{seconds:,.0f}s; judged from {opts.window_s:,.0f}s on")
                feeder = Feeder(server.port, STREAM, opts.tickers, opts.rate, maxlen=None)
                t0 = time.monotonic()
                feeder.start()
                try:
                    for at in times:
                        time.sleep(max(0.0, t0 + at - time.monotonic()))
                        samples.append(take_sample(t0, feeder, client, svc))
                        say(progress(samples[-1]))
                finally:
                    feeder.stop()
            finally:
                svc.stop()
                client.close()
    return samples


@dataclass(frozen=True)
class Verdict:
    opts: Options
    judged: list[Sample]  # the samples after the first retention window

    @property
    def median(self) -> float:
        return statistics.median(s.used_memory for s in self.judged)

    @property
    def worst_pct(self) -> float:
        return max(100 * abs(s.used_memory - self.median) / self.median for s in self.judged)

    @property
    def max_lag(self) -> int | None:
        lags = [s.lag for s in self.judged]
        return None if None in lags else max(lag for lag in lags if lag is not None)

    @property
    def memory_ok(self) -> bool:
        return bool(self.judged) and self.worst_pct <= TOLERANCE_PCT

    @property
    def lag_ok(self) -> bool:
        return self.max_lag is not None and self.max_lag <= self.opts.lag_bound

    def text(self) -> str:
        o, j = self.opts, self.judged
        if not j:
            return (f"**Verdict: FAIL** (cannot judge): no sample after the first retention "
                    f"window ({o.retention_s}s retention + {o.snapshot_every_s:g}s snapshot + "
                    f"{o.warmup_s:g}s warm-up = {o.window_s:g}s); run longer.")
        used = [s.used_memory / MiB for s in j]
        fed = (j[-1].sent - j[0].sent) / max(j[-1].t_s - j[0].t_s, 1e-9)
        applied = ("?" if j[0].applied is None or j[-1].applied is None else
                   f"{(j[-1].applied - j[0].applied) / max(j[-1].t_s - j[0].t_s, 1e-9):,.0f}")
        ok = self.memory_ok and self.lag_ok
        return "\n".join([
            f"**Verdict: {'PASS' if ok else 'FAIL'}** over {len(j)} samples from "
            f"{j[0].t_s:,.0f}s to {j[-1].t_s:,.0f}s (first retention window: {o.window_s:g}s)",
            f"- used_memory: min {min(used):,.1f}, max {max(used):,.1f}, median "
            f"{self.median / MiB:,.1f} MiB; worst deviation from the median "
            f"{self.worst_pct:.1f}% (≤ {TOLERANCE_PCT:g}%): {'ok' if self.memory_ok else 'FAIL'}",
            f"- lag: max {fmt(self.max_lag)} entries (≤ {o.lag_bound:,}: "
            f"{o.snapshot_every_s:g}s snapshot + {LAG_SLACK_S:g}s of feed): "
            f"{'ok' if self.lag_ok else 'FAIL'}; applied {applied} ticks/s, fed {fed:,.0f}/s",
        ])


def table(samples: list[Sample], step_s: float) -> str:
    """One row per `step_s` (the first sample at or after each multiple) and the last."""
    rows = [s for i, s in enumerate(samples)
            if i == len(samples) - 1 or i == 0
            or s.t_s // step_s > samples[i - 1].t_s // step_s]
    lines = ["| t (s) | fed | applied | lag | used_memory (MiB) | XLEN ticks | oldest tick (s) "
             "| XLEN predictions | XLEN ticks:dead | RSS (MiB) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {s.t_s:,.0f} | {s.sent:,} | {fmt(s.applied)} | {fmt(s.lag)} | "
              f"{s.used_memory / MiB:,.1f} | {s.ticks:,} | {fmt(s.oldest_s)} | "
              f"{s.predictions:,} | {s.dead:,} | {s.rss_kb / 1024:,.0f} |" for s in rows]
    return "\n".join(lines)


def report(opts: Options, samples: list[Sample], verdict: Verdict) -> str:
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = (f"- Date: {date}; {os.cpu_count()} cores; load average at the end "
            f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}\n"
            f"- Command: `python -m bench.retention {' '.join(sys.argv[1:])}`; "
            f"{opts.rate:,.0f} ticks/s over {opts.tickers:,} tickers for {opts.minutes:g} min, "
            f"TICK_RETENTION {opts.retention_s}s, SNAPSHOT_EVERY_S {opts.snapshot_every_s:g}, "
            f"H = {UNITS}")
    step = 60.0 if opts.minutes >= 5 else opts.every_s  # a row per minute on long runs
    return f"{head}\n\n{table(samples, step)}\n\n{verdict.text()}\n"


def main(argv: list[str] | None = None) -> int:
    d = Options()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=d.minutes)
    p.add_argument("--rate", type=float, default=d.rate, help="ticks/s fed")
    p.add_argument("--tickers", type=int, default=d.tickers)
    p.add_argument("--retention-s", type=int, default=d.retention_s,
                   help="TICKSTREAM_TICK_RETENTION")
    p.add_argument("--snapshot-every-s", type=float, default=d.snapshot_every_s,
                   help="TICKSTREAM_SNAPSHOT_EVERY_S")
    p.add_argument("--dead-maxlen", type=int, default=d.dead_maxlen,
                   help="TICKSTREAM_DEAD_MAXLEN")
    p.add_argument("--every-s", type=float, default=d.every_s, help="sampling interval")
    p.add_argument("--warmup-s", type=float, default=d.warmup_s,
                   help="part of the first retention window, after retention + one snapshot")
    p.add_argument("--out", type=Path, help="also write the report (Markdown) here")
    a = p.parse_args(argv)
    opts = Options(a.minutes, a.rate, a.tickers, a.retention_s, a.snapshot_every_s,
                   a.dead_maxlen, a.every_s, a.warmup_s)
    samples = run(opts, lambda line: print(line, flush=True))
    verdict = Verdict(opts, [s for s in samples if s.t_s >= opts.window_s])
    text = report(opts, samples, verdict)
    print("\n## Retention\n\n" + text, flush=True)
    if a.out is not None:
        a.out.write_text(text)
    return 0 if verdict.memory_ok and verdict.lag_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
