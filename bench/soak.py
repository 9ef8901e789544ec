"""The soak of issue 10: steady ticks and HTTP reads for half an hour, memory and lag flat.

A real `tickstream serve` against a private redis-server (AOF on, fsync always), set up
as bench.retention sets it up (bench.fed_service): ticks XADDed at --rate over --tickers
with no MAXLEN, the service run with TICKSTREAM_TICK_RETENTION=--retention-s so its own
trimming bounds the stream, and GET /v1/predictions/{random ticker} at --reads requests/s
over loopback (READ_THREADS threads, a keep-alive connection each; open loop: a request's
latency counts from when it was due, so a stall counts against every request it delays;
at most reads x duration requests, each with a READ_TIMEOUT_S timeout).

Every --every-s it records the service's RSS, Redis used_memory and where it sits, the
lag (/readyz, polled every second: the largest seen in the interval), loop errors
(/metrics tickstream_loop_errors_total), HTTP errors (non-200 answers and exceptions),
p50/p99 read latency over the interval and ticks applied/s. It writes a Markdown table
(--out) and an SVG plot beside it (same name, .svg: RSS, used_memory, lag and p99 over
time). Verdict (exit status 1 if it fails): after the first --settle-s (5 minutes), RSS and
used_memory within ±10% of their medians; lag at most one snapshot interval +
LAG_SLACK_S of feed throughout; zero loop errors.

Run: `python -m bench.soak [--minutes 30] [--rate 10000] [--tickers 1000] [--reads 200]
[--retention-s 120] [--every-s 60] [--out FILE]`.
"""

from __future__ import annotations

import argparse
import http.client
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.fed_service import (
    Fed,
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
from bench.service import get_json, wait_for
from bench.traffic import ticker_names

NAME = "soak"
TOLERANCE_PCT = 10.0  # issue 10: RSS and used_memory flat within 10%
READ_THREADS = 4
READ_TIMEOUT_S = 5.0
POLL_S = 1.0  # /readyz between samples, for the interval's largest lag
TICKERS_TIMEOUT_S = 60.0  # for every ticker to be served before reads start


@dataclass(frozen=True)
class Options(FedOptions):
    minutes: float = 30.0
    every_s: float = 60.0
    reads: float = 200.0  # HTTP reads/s
    settle_s: float = 300.0  # RSS and used_memory are judged from here on


class Reads:
    """Open-loop GETs of random tickers' predictions at `rate`/s, until stopped or
    `count` were sent; `take()` hands over what came back since the last take."""

    def __init__(self, port: int, names: list[str], rate: float, count: int) -> None:
        self.port, self.names, self.rate, self.count = port, names, rate, count
        self._lock = threading.Lock()
        self._ms: list[float] = []
        self.non200 = self.exceptions = 0
        self._stop = threading.Event()
        self._t0 = 0.0
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True,
                                          name=f"soak-reads-{k}") for k in range(READ_THREADS)]

    def start(self) -> Reads:
        self._t0 = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(READ_TIMEOUT_S + 1)

    def take(self) -> tuple[list[float], int]:
        """(latencies in ms, errors) since the last take."""
        with self._lock:
            ms, self._ms = self._ms, []
            errors, self.non200, self.exceptions = self.non200 + self.exceptions, 0, 0
        return ms, errors

    def _run(self, k: int) -> None:
        rng = random.Random(k)
        conn: http.client.HTTPConnection | None = None
        for i in range(k, self.count, READ_THREADS):
            due = self._t0 + i / self.rate
            if self._stop.wait(max(0.0, due - time.monotonic())):
                break
            ok, failed = False, False
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", self.port,
                                                          timeout=READ_TIMEOUT_S)
                conn.request("GET", f"/v1/predictions/{rng.choice(self.names)}")
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                failed = True
                if conn is not None:
                    conn.close()
                conn = None
            ms = (time.monotonic() - due) * 1e3
            with self._lock:
                self._ms.append(ms)
                self.non200 += not ok and not failed
                self.exceptions += failed
        if conn is not None:
            conn.close()


@dataclass(frozen=True)
class Sample:
    t_s: float  # since the feed started
    rss_kb: int  # the serve process
    redis: RedisFigures
    max_lag: int | None  # the largest /readyz lag seen in the interval (None: unknown)
    loop_errors: int  # tickstream_loop_errors_total, since serve started
    http_errors: int  # non-200 answers and exceptions in the interval
    reads: int  # answers (or failures) in the interval
    p50_ms: float | None
    p99_ms: float | None
    applied_per_s: float


def loop_errors(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith("tickstream_loop_errors_total "):
            return round(float(line.split()[1]))
    raise RuntimeError("no tickstream_loop_errors_total in /metrics")


def run(opts: Options, say: Callable[[str], None]) -> list[Sample]:
    seconds = opts.minutes * 60
    samples: list[Sample] = []
    with fed_service(NAME, opts, say) as fed:
        port = fed.svc.port
        wait_for(lambda: get_json(port, "/readyz").get("tickers", 0) >= opts.tickers,
                 "every ticker to be served", TICKERS_TIMEOUT_S, every_s=0.1)
        count = round(opts.reads * (seconds - fed.elapsed()))
        say(f"[reads] {opts.reads:,.0f} GET /v1/predictions/{{ticker}}/s, at most {count:,}")
        reads = Reads(port, ticker_names(opts.tickers).tolist(), opts.reads, count).start()
        try:
            t_prev, applied_prev = fed.elapsed(), get_json(port, "/readyz")["applied"]
            for at in sample_times(seconds, opts.every_s)[1:]:
                lags = poll_lag(fed, at)
                fed.check_alive()
                ready = get_json(port, "/readyz")
                t, lags = fed.elapsed(), [*lags, ready.get("lag")]
                ms, errors = reads.take()
                p50, p99 = (None, None) if not ms else np.percentile(ms, [50, 99]).tolist()
                samples.append(Sample(
                    t, fed.svc.rss_kb()[0], redis_figures(fed.client),
                    None if None in lags else max(lag for lag in lags if lag is not None),
                    loop_errors(port), errors, len(ms), p50, p99,
                    (ready["applied"] - applied_prev) / (t - t_prev)))
                t_prev, applied_prev = t, ready["applied"]
                say(progress(samples[-1]))
        finally:
            reads.stop()
    return samples


def poll_lag(fed: Fed, until_s: float) -> list[int | None]:
    """/readyz's lag every POLL_S until `until_s` after the feed started."""
    lags: list[int | None] = []
    while fed.elapsed() < until_s - POLL_S:
        fed.at(min(fed.elapsed() + POLL_S, until_s))
        lags.append(get_json(fed.svc.port, "/readyz").get("lag"))
    fed.at(until_s)
    return lags


def ms(x: float | None) -> str:
    return "?" if x is None else f"{x:,.1f}"


def progress(s: Sample) -> str:
    return (f"[{s.t_s:5.0f}s] RSS {s.rss_kb / 1024:,.0f} MiB | redis used_memory "
            f"{s.redis.used_memory / MiB:,.1f} MiB (dataset {s.redis.dataset / MiB:,.1f}, "
            f"predictions {s.redis.predictions_bytes / MiB:,.1f}), "
            f"ticks {s.redis.ticks:,} | lag max {fmt(s.max_lag)} | loop errors "
            f"{s.loop_errors} | reads {s.reads:,}, errors {s.http_errors}, p50 {ms(s.p50_ms)} "
            f"p99 {ms(s.p99_ms)} ms | applied {s.applied_per_s:,.0f}/s")


def table(samples: list[Sample]) -> str:
    lines = [table_head(f"t (min) | RSS (MiB) | {RedisFigures.HEADER} | lag (max) | "
                        "loop errors | reads | HTTP errors | p50 (ms) | p99 (ms) | applied/s")]
    lines += [f"| {s.t_s / 60:,.1f} | {s.rss_kb / 1024:,.0f} | {s.redis.cells()} | "
              f"{fmt(s.max_lag)} | {s.loop_errors} | {s.reads:,} | {s.http_errors} | "
              f"{ms(s.p50_ms)} | {ms(s.p99_ms)} | {s.applied_per_s:,.0f} |" for s in samples]
    return "\n".join(lines)


@dataclass(frozen=True)
class Verdict:
    opts: Options
    samples: list[Sample]

    @property
    def judged(self) -> list[Sample]:
        return [s for s in self.samples if s.t_s >= self.opts.settle_s]

    @property
    def max_lag(self) -> int | None:
        lags = [s.max_lag for s in self.samples]
        return None if None in lags or not lags else max(x for x in lags if x is not None)

    def checks(self) -> list[tuple[bool, str]]:
        o, j = self.opts, self.judged
        if not j:
            return [(False, f"no sample after the first {o.settle_s:g}s: run longer")]
        rss_median, rss_pct = flat([s.rss_kb for s in j])
        used_median, used_pct = flat([s.redis.used_memory for s in j])
        errors = self.samples[-1].loop_errors
        return [
            (rss_pct <= TOLERANCE_PCT,
             f"RSS: median {rss_median / 1024:,.0f} MiB, min {min(s.rss_kb for s in j) / 1024:,.0f}"
             f", max {max(s.rss_kb for s in j) / 1024:,.0f}; worst deviation {rss_pct:.1f}% "
             f"(≤ {TOLERANCE_PCT:g}%)"),
            (used_pct <= TOLERANCE_PCT,
             f"Redis used_memory: median {used_median / MiB:,.1f} MiB, min "
             f"{min(s.redis.used_memory for s in j) / MiB:,.1f}, max "
             f"{max(s.redis.used_memory for s in j) / MiB:,.1f}; worst deviation "
             f"{used_pct:.1f}% (≤ {TOLERANCE_PCT:g}%); {breakdown([s.redis for s in j])}"),
            (self.max_lag is not None and self.max_lag <= o.lag_bound,
             f"lag: max {fmt(self.max_lag)} entries over the whole run, polled every "
             f"{POLL_S:g}s ({o.lag_rule})"),
            (errors == 0, f"loop errors: {errors}"),
        ]

    @property
    def ok(self) -> bool:
        return all(ok for ok, _ in self.checks())

    def text(self) -> str:
        s, j = self.samples, self.judged
        reads = sum(x.reads for x in s)
        p99s = [x.p99_ms for x in s if x.p99_ms is not None]
        p50s = [x.p50_ms for x in s if x.p50_ms is not None]
        seconds = s[-1].t_s if s else 0.0
        head = (f"**Verdict: {'PASS' if self.ok else 'FAIL'}** (memory judged over "
                f"{len(j)} samples from {self.opts.settle_s:g}s on)")
        info = [
            f"- (reported, not judged) reads: {reads:,} answered "
            f"({reads / max(seconds, 1e-9):,.0f}/s over the run), HTTP errors "
            f"{sum(x.http_errors for x in s)}; p50 per interval "
            f"{min(p50s, default=0):,.1f}-{max(p50s, default=0):,.1f} ms, p99 per interval "
            f"{min(p99s, default=0):,.1f}-{max(p99s, default=0):,.1f} ms; applied "
            f"{min((x.applied_per_s for x in s), default=0):,.0f}-"
            f"{max((x.applied_per_s for x in s), default=0):,.0f} ticks/s per interval; "
            f"XLEN ticks max {max((x.redis.ticks for x in j), default=0):,}, oldest tick "
            f"≤ {fmt(max((x.redis.oldest_s or 0 for x in j), default=0))}s"]
        return "\n".join([head] + [f"- {m}: {'ok' if ok else 'FAIL'}"
                                   for ok, m in self.checks()] + info)


def svg(samples: list[Sample], opts: Options) -> str:
    """Four stacked panels over time (minutes): RSS, used_memory, lag, p99."""
    width, height, left, top, gap = 720, 130, 70, 30, 45
    panels: list[tuple[str, list[tuple[float, float | None]]]] = [
        ("service RSS (MiB)", [(s.t_s, s.rss_kb / 1024) for s in samples]),
        ("Redis used_memory (MiB)", [(s.t_s, s.redis.used_memory / MiB) for s in samples]),
        ("lag (entries, max per interval)",
         [(s.t_s, None if s.max_lag is None else float(s.max_lag)) for s in samples]),
        ("p99 read latency (ms)", [(s.t_s, s.p99_ms) for s in samples])]
    x_max = opts.minutes * 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + left + 20}" '
           f'height="{top + len(panels) * (height + gap) + 10}" font-family="sans-serif" '
           'font-size="11">',
           f'<text x="{left}" y="16" font-size="13">tickstream soak: {opts.rate:,.0f} ticks/s '
           f'over {opts.tickers:,} tickers, {opts.reads:,.0f} reads/s, TICK_RETENTION '
           f'{opts.retention_s}s</text>']
    for n, (title, points) in enumerate(panels):
        y0 = top + n * (height + gap) + 15
        values = [v for _, v in points if v is not None]
        y_max = max(values, default=0.0) * 1.1 or 1.0

        def xy(t: float, v: float, y0: float = y0, y_max: float = y_max) -> str:
            return (f"{left + width * min(t, x_max) / x_max:.1f},"
                    f"{y0 + height * (1 - v / y_max):.1f}")

        out += [f'<text x="{left}" y="{y0 - 4}">{title}</text>',
                f'<rect x="{left}" y="{y0}" width="{width}" height="{height}" fill="none" '
                'stroke="#999"/>']
        for frac in (0.0, 0.5, 1.0):
            y = y0 + height * (1 - frac)
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                       f'{y_max * frac:,.{0 if y_max >= 10 else 2}f}</text>')
        step = 5 if opts.minutes > 10 else 1
        for minute in range(0, int(opts.minutes) + 1, step):
            x = left + width * minute * 60 / x_max
            out.append(f'<text x="{x:.1f}" y="{y0 + height + 14}" text-anchor="middle">'
                       f'{minute}{" min" if minute == 0 else ""}</text>')
        settle = left + width * min(opts.settle_s, x_max) / x_max
        out.append(f'<line x1="{settle:.1f}" y1="{y0}" x2="{settle:.1f}" y2="{y0 + height}" '
                   'stroke="#bbb" stroke-dasharray="4 3"/>')
        line = " ".join(xy(t, v) for t, v in points if v is not None)
        out.append(f'<polyline points="{line}" fill="none" stroke="#1f77b4" '
                   'stroke-width="1.5"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def report(opts: Options, samples: list[Sample], verdict: Verdict, plot: str | None) -> str:
    head = (f"- {machine()}\n"
            f"- Command: `python -m bench.soak {' '.join(sys.argv[1:])}`; {opts.rate:,.0f} "
            f"ticks/s over {opts.tickers:,} tickers and {opts.reads:,.0f} GET "
            f"/v1/predictions/{{ticker}}/s for {opts.minutes:g} min; H = {UNITS}; a private "
            f"redis-server (AOF on, fsync always)\n"
            f"- The service runs with TICKSTREAM_TICK_RETENTION={opts.retention_s} (and "
            f"SNAPSHOT_EVERY_S {opts.snapshot_every_s:g}): the engine trims the tick stream to "
            f"{opts.retention_s}s behind its snapshot, so the stream is bounded (the feed's "
            "XADDs carry no MAXLEN); the predictions stream is bounded by the service's own "
            "PREDICTIONS_RETENTION_S (default 60 s)\n"
            f"- Each row covers the interval before it: lag is the largest of /readyz polled "
            f"every {POLL_S:g}s, reads/errors/latency those of that interval (latency from "
            "when a request was due, client included); used_memory = dataset (of which the "
            "predictions stream) + clients (mem_clients_normal) + other; loop errors since "
            "the start")
    plot_line = f"\n\n![soak]({plot})" if plot else ""
    return f"{head}\n\n{table(samples)}{plot_line}\n\n{verdict.text()}\n"


def main(argv: list[str] | None = None) -> int:
    d = Options()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p, d)
    p.add_argument("--reads", type=float, default=d.reads, help="HTTP reads/s")
    p.add_argument("--settle-s", type=float, default=d.settle_s,
                   help="RSS and used_memory are judged from here on")
    a = p.parse_args(argv)
    opts = Options(**fed_arguments(a), reads=a.reads, settle_s=a.settle_s)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)  # before the run, not after it
    samples = run(opts, lambda line: print(line, flush=True))
    verdict = Verdict(opts, samples)
    plot = None
    if a.out is not None:
        plot_path = a.out.with_suffix(".svg")
        plot_path.write_text(svg(samples, opts))
        plot = plot_path.name
    text = report(opts, samples, verdict, plot)
    print("\n## Soak\n\n" + text, flush=True)
    if a.out is not None:
        a.out.write_text(text)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
