"""Redis memory while the engine trims the tick stream (issue 8).

What it proves is issue 8's acceptance: "a 10-minute run at 10,000 ticks/s with
TICK_RETENTION of 2 minutes keeps Redis used_memory within ±10% after the first retention
window"; the defaults are that run. It starts a private redis-server (AOF on, fsync always:
how the service runs it) and a real `tickstream serve` process with
TICKSTREAM_TICK_RETENTION, TICKSTREAM_SNAPSHOT_EVERY_S and TICKSTREAM_DEAD_MAXLEN, then
feeds it with XADDs that carry no MAXLEN, so only the engine's trimming bounds the stream
(bench.fed_service). Every --every-s it samples Redis used_memory and where it sits
(used_memory_dataset, mem_clients_normal, the rest; AOF rewrites), XLEN of ticks,
predictions and ticks:dead, the age of the oldest tick, and the service's RSS, lag and
ticks applied.

The verdict judges the samples from the end of the first retention window on (retention +
one snapshot interval + a 60 s warm-up, from the feed's start): used_memory stays within
±10% of its median over them, and lag stays bounded (known, and at most one snapshot
interval + LAG_SLACK_S seconds of feed). Exit status 1 if either fails. The verdict also
gives the breakdown's range, and the table shows, besides a row per minute, every judged
sample more than half the tolerance off the median: where a spike sat.

Run: `python -m bench.retention [--minutes 10] [--rate 10000] [--tickers 1000]
[--retention-s 120] [--every-s 10] [--out FILE]`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from bench.fed_service import (
    FedOptions,
    MiB,
    RedisFigures,
    add_arguments,
    breakdown,
    fed_arguments,
    fed_service,
    flat,
    fmt,
    machine,
    redis_figures,
    sample_times,
    table_head,
)
from bench.model import UNITS
from bench.service import get_json

NAME = "retention"
TOLERANCE_PCT = 10.0  # issue 8: used_memory within ±10% of its median


@dataclass(frozen=True)
class Options(FedOptions):
    warmup_s: float = 60.0

    @property
    def window_s(self) -> float:
        """The first retention window: samples from here on are judged."""
        return self.retention_s + self.snapshot_every_s + self.warmup_s


@dataclass(frozen=True)
class Sample:
    t_s: float  # since the feed started
    sent: int  # ticks fed so far
    applied: int | None  # /readyz `applied`
    lag: int | None  # /readyz `lag` (None: Redis could not tell)
    redis: RedisFigures
    rss_kb: int  # the serve process

    @property
    def used_memory(self) -> int:
        return self.redis.used_memory


def progress(s: Sample) -> str:
    r = s.redis
    return (f"[{s.t_s:4.0f}s] fed {s.sent:,}, applied {fmt(s.applied)}, lag {fmt(s.lag)} | "
            f"redis used_memory {r.used_memory / MiB:,.1f} MiB (dataset "
            f"{r.dataset / MiB:,.1f}, predictions {r.predictions_bytes / MiB:,.1f}, clients "
            f"{r.clients / MiB:,.2f}, AOF rewrites "
            f"{r.rewrites}{' running' if r.rewriting else ''}), ticks {r.ticks:,} (oldest "
            f"{fmt(r.oldest_s)}s), predictions {r.predictions:,}, dead {r.dead:,} | "
            f"RSS {s.rss_kb / 1024:,.0f} MiB")


def run(opts: Options, say: Callable[[str], None]) -> list[Sample]:
    """Serve, feed and sample for `opts.minutes`, each process private to this run."""
    seconds = opts.minutes * 60
    samples: list[Sample] = []
    with fed_service(NAME, opts, say) as fed:
        say(f"[feed] for {seconds:,.0f}s; judged from {opts.window_s:,.0f}s on")
        for at in sample_times(seconds, opts.every_s):
            fed.at(at)
            fed.check_alive()
            t, sent = fed.elapsed(), fed.feeder.sent
            ready = get_json(fed.svc.port, "/readyz")
            samples.append(Sample(t, sent, ready.get("applied"), ready.get("lag"),
                                  redis_figures(fed.client), fed.svc.rss_kb()[0]))
            say(progress(samples[-1]))
    return samples


@dataclass(frozen=True)
class Verdict:
    opts: Options
    judged: list[Sample]  # the samples after the first retention window

    @property
    def median(self) -> float:
        return flat([s.used_memory for s in self.judged])[0]

    @property
    def worst_pct(self) -> float:
        return flat([s.used_memory for s in self.judged])[1]

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
            f"  - {breakdown([s.redis for s in j])}",
            f"- lag: max {fmt(self.max_lag)} entries ({o.lag_rule}): "
            f"{'ok' if self.lag_ok else 'FAIL'}; applied {applied} ticks/s, fed {fed:,.0f}/s",
        ])


def table(samples: list[Sample], step_s: float, off: set[float]) -> str:
    """One row per `step_s` (the first sample at or after each multiple), the last, and
    the samples at the times in `off` (marked *)."""
    rows = [s for i, s in enumerate(samples)
            if i == len(samples) - 1 or i == 0 or s.t_s in off
            or s.t_s // step_s > samples[i - 1].t_s // step_s]
    lines = [table_head(f"t (s) | fed | applied | lag | {RedisFigures.HEADER} | "
                        "XLEN predictions | XLEN ticks:dead | RSS (MiB)")]
    lines += [f"| {s.t_s:,.0f}{' *' if s.t_s in off else ''} | {s.sent:,} | "
              f"{fmt(s.applied)} | {fmt(s.lag)} | {s.redis.cells()} | "
              f"{s.redis.predictions:,} | {s.redis.dead:,} | {s.rss_kb / 1024:,.0f} |"
              for s in rows]
    return "\n".join(lines)


def report(opts: Options, samples: list[Sample], verdict: Verdict) -> str:
    head = (f"- {machine()}\n"
            f"- Command: `python -m bench.retention {' '.join(sys.argv[1:])}`; "
            f"{opts.rate:,.0f} ticks/s over {opts.tickers:,} tickers for {opts.minutes:g} min, "
            f"TICK_RETENTION {opts.retention_s}s, SNAPSHOT_EVERY_S {opts.snapshot_every_s:g}, "
            f"H = {UNITS}\n"
            "- used_memory = dataset (keys and values; of which the predictions stream: its "
            "MEMORY USAGE) + clients (mem_clients_normal: query and output buffers) + other "
            "(Redis's own overhead); AOF rewrites: aof_rewrites since the server started, "
            "(yes) while one runs")
    step = 60.0 if opts.minutes >= 5 else opts.every_s  # a row per minute on long runs
    half = TOLERANCE_PCT / 2
    off = ({s.t_s for s in verdict.judged
            if 100 * abs(s.used_memory - verdict.median) > half * verdict.median}
           if verdict.judged else set())
    note = (f"\n\n\\* a judged sample whose used_memory is more than {half:g}% off the "
            "median, shown besides the minute rows" if off else "")
    return f"{head}\n\n{table(samples, step, off)}{note}\n\n{verdict.text()}\n"


def main(argv: list[str] | None = None) -> int:
    d = Options()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p, d)
    p.add_argument("--warmup-s", type=float, default=d.warmup_s,
                   help="part of the first retention window, after retention + one snapshot")
    a = p.parse_args(argv)
    opts = Options(**fed_arguments(a), warmup_s=a.warmup_s)
    samples = run(opts, lambda line: print(line, flush=True))
    verdict = Verdict(opts, [s for s in samples if s.t_s >= opts.window_s])
    text = report(opts, samples, verdict)
    print("\n## Retention\n\n" + text, flush=True)
    if a.out is not None:
        a.out.write_text(text)
    return 0 if verdict.memory_ok and verdict.lag_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
