"""End-to-end benchmark (issues 4 and 8): drain throughput against the Redis + client
ceiling and the AOF bytes it writes, recovery (replay after a SIGKILL) and snapshot cost,
the naive Keras loop, latency, HTTP requests/s and memory, each against a private
redis-server this bench starts (AOF on, fsync always: how `tickstream serve` runs Redis;
the AOF-off drain gets a server of its own).

Every ratio compares figures measured in the same run, interleaved round by round, and
every figure is the median of the rounds: the machine is small and shared, so absolute
figures move between runs more than ratios do.

Every scenario runs the engine with online learning off (`learn=False`,
TICKSTREAM_LEARN=false), as the engine was before issue 9, except the drain case
"uniform, learning on".

Run: `python -m bench.e2e` (full, ~30 min) or `python -m bench.e2e --quick` (< 2 min, a
smoke test: it checks the pipeline drained and every figure exists, not how fast).
`--only LABEL [LABEL ...]` runs only the drain cases of those labels (e.g. `--only uniform
"uniform, learning on"`), nothing else; `--rounds R` sets the rounds.

Here: the scenarios and the run. What a run is (Config, the drain cases, Results):
bench/e2e_setup.py; its report (the table, the smoke test's check): bench/e2e_report.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis

from bench import http_load, latency, memory
from bench.drain import aof_size, bare_drain, engine_drain
from bench.e2e_report import check, table
from bench.e2e_setup import (
    QUICK,
    Config,
    DrainCase,
    Results,
    drain_cases,
    machine,
    median,
    selected_cases,
)
from bench.model import UNITS, untrained_artifact
from bench.naive import predict_loop_rate_apart
from bench.recovery import measure_recovery, measure_snapshot
from bench.service import Server, bare_app, tickstream_serve, wait_for
from bench.traffic import fill, tick_fields
from models.artifact import Artifact, load_artifact
from service.embedded_redis import EmbeddedRedis

# ---- the scenarios


def run_drain(cfg: Config, server: EmbeddedRedis, artifact: Artifact, workdir: Path,
              res: Results, say: Callable[[str], None]) -> None:
    """Every drain case: the AOF-on ones on `server`, the AOF-off ones on a server of
    their own (AOF off from its start, so nothing of it is on disk)."""
    cases = selected_cases(cfg)
    drain_on(cfg, server, [c for c in cases if c.aof], artifact, res, say)
    if any(not c.aof for c in cases):
        with EmbeddedRedis(workdir / "redis-aof-off", appendonly=False) as off:
            drain_on(cfg, off, [c for c in cases if not c.aof], artifact, res, say)


def drain_on(cfg: Config, server: EmbeddedRedis, cases: list[DrainCase], artifact: Artifact,
             res: Results, say: Callable[[str], None]) -> None:
    """Each case: one pre-filled stream, then bare and engine runs interleaved."""
    from service.config import Settings

    client = redis.Redis.from_url(server.url)
    default_maxlen = Settings.model_fields["predictions_maxlen"].default  # as served
    for case in cases:
        stream = f"ticks:{case.shape}:{case.tickers}"
        if not client.exists(stream):
            say(f"[drain] filling {stream}: {cfg.drain_ticks:,} ticks over {case.tickers:,}")
            before = aof_size(client)
            fill(client, server.port, stream,
                 tick_fields(case.shape, case.tickers, cfg.drain_ticks))
            if case.label == "uniform":
                res.xadd_aof = (aof_size(client) - before) / cfg.drain_ticks
        runs = res.drain.setdefault(case.label, {"bare": [], "engine": []})
        for r in range(cfg.rounds):
            tag = f"{len(res.drain)}-{r}"
            bare = bare_drain(server.url, stream, f"bare-{tag}", cfg.batch_count)
            # TICK_RETENTION none: the stream is read again by the next runs
            settings = Settings(redis_url=server.url, stream=stream, name=f"drain-{tag}",
                                group=f"engine-{tag}", batch_count=cfg.batch_count,
                                predictions_maxlen=default_maxlen if case.predictions else 0,
                                predictions_stream=f"predictions:{tag}", tick_retention="none",
                                learn=case.learn)
            engine = engine_drain(settings, artifact, server.url)
            if engine.applied != cfg.drain_ticks:
                raise RuntimeError(f"{case.label}: engine applied {engine.applied:,} of "
                                   f"{cfg.drain_ticks:,} ticks")
            runs["bare"].append(bare)
            runs["engine"].append(engine)
            aof = (f"; AOF B/tick: engine {engine.aof_per_tick():.1f}, bare "
                   f"{bare.aof_per_tick():.1f}" if case.aof else "")
            if case.learn:
                steps = engine.updates + engine.skipped
                after = engine.applied / (engine.seconds - engine.start_seconds)
                aof += (f"; learner: {steps} optimizer steps ({engine.skipped} skipped), "
                        f"{steps / engine.seconds:.1f}/s of drain; start() took "
                        f"{engine.start_seconds:.2f}s (its warm-up), after it {after:,.0f}/s "
                        f"({after / bare.rate():.2f}x)")
            say(f"[drain {case.label} {r + 1}/{cfg.rounds}] bare {bare.rate():,.0f}/s, engine "
                f"{engine.rate():,.0f}/s ({engine.rate() / bare.rate():.2f}x); engine step "
                f"{engine.step_seconds:.1f}s, waiting on commits {engine.commit_seconds:.1f}s "
                f"of {engine.seconds:.1f}s{aof}")
            client.delete(f"predictions:{tag}", *client.keys(f"tickstream:drain-{tag}:*"))
    client.close()


@contextmanager
def aof_measured(server: EmbeddedRedis) -> Iterator[None]:
    """Automatic AOF rewrites off, so aof_current_size only grows while figures are
    taken; after, every key goes and the AOF is rewritten: the service scenarios start on
    an empty server with a small AOF, rewrites on as served."""
    client = redis.Redis.from_url(server.url)
    setting = client.config_get("auto-aof-rewrite-percentage")
    client.config_set("auto-aof-rewrite-percentage", 0)
    try:
        yield
    finally:
        client.flushall()
        client.config_set(*setting.popitem())
        client.bgrewriteaof()
        wait_for(lambda: not any(client.info("persistence")[k] for k in (
            "aof_rewrite_in_progress", "aof_rewrite_scheduled")), "the AOF rewrite", 300.0)
        client.close()


def run_recovery(cfg: Config, server: EmbeddedRedis, artifact: Artifact, model_dir: Path,
                 workdir: Path, res: Results, say: Callable[[str], None]) -> None:
    res.recovery = measure_recovery(server, artifact, model_dir, workdir, cfg.tickers,
                                    cfg.recovery_warm, cfg.recovery_entries,
                                    cfg.batch_count, cfg.rounds, say)
    say(f"[snapshot] N={cfg.snapshot_tickers:,}: draining {cfg.snapshot_ticks:,} ticks")
    res.snapshot = measure_snapshot(server, artifact, cfg.snapshot_tickers,
                                    cfg.snapshot_ticks, cfg.batch_count, cfg.rounds, say)


def run_service_scenarios(cfg: Config, server: EmbeddedRedis, model_dir: Path,
                          workdir: Path, res: Results, say: Callable[[str], None]) -> None:
    """Latency, HTTP and memory against real `tickstream serve` processes."""
    client = redis.Redis.from_url(server.url)
    for n in sorted(cfg.memory_tickers, reverse=True):  # N=500's service stays up after
        stream = f"ticks{n}"
        svc = tickstream_serve(server.url, model_dir, workdir, f"svc{n}", stream,
                               {"TICKSTREAM_LEARN": "false"})
        say(f"[memory] N={n}: starting tickstream serve, feeding {cfg.memory_ticks:,} ticks")
        svc.start()
        try:
            res.rss_kb[n] = memory.rss_after(svc, client, server.port, stream, n,
                                             cfg.memory_ticks)
            mem = res.rss_kb[n]
            say(f"[memory] N={n}: RSS {mem.rss / 1024:,.0f} MiB (its own {mem.anon / 1024:,.0f}"
                f", mapped files {mem.file / 1024:,.0f}), peak {mem.peak / 1024:,.0f} MiB")
            if n == min(cfg.memory_tickers):
                run_latency_http_growth(cfg, svc, server, stream, n, workdir, res, say)
        finally:
            svc.stop()
    client.close()


def run_latency_http_growth(cfg: Config, svc: Server, server: EmbeddedRedis, stream: str,
                            n: int, workdir: Path, res: Results,
                            say: Callable[[str], None]) -> None:
    say(f"[latency] {cfg.latency_rate:,.0f} ticks/s, {cfg.latency_s:.0f}s per probe and round")
    bare = bare_app(workdir).start()  # the floor: XADD + one GET with no model, no loop
    try:
        res.latency = latency.measure_all(svc, bare, server.port, stream, n, cfg.latency_rate,
                                          cfg.latency_s, cfg.rounds, say)
    finally:
        bare.stop()
    client = redis.Redis.from_url(server.url)
    client.config_set("appendfsync", "everysec")  # how much of it is fsync: XADD and EXEC
    try:
        res.latency_everysec = latency.measure(svc, server.port, stream, n, cfg.latency_rate,
                                               cfg.latency_s, seed=1)
    finally:
        client.config_set("appendfsync", "always")
        client.close()
    lat = res.latency_everysec
    say(f"[latency] with appendfsync everysec, after: p50 {lat.p50_ms:.2f} ms, p99 "
        f"{lat.p99_ms:.2f} ms, max {lat.max_ms:.2f} ms")

    if not http_load.wrk_available():
        res.http_skipped = "wrk not installed (apt-get install wrk)"
        say(f"[http] skipped: {res.http_skipped}")
    else:
        run_http(cfg, svc, server, stream, n, workdir, res, say)

    say(f"[memory] growth: {cfg.growth_rate:,.0f} ticks/s for {cfg.growth_s:.0f}s")
    res.growth = memory.rss_growth(svc, server.port, stream, n, cfg.growth_rate, cfg.growth_s,
                                   cfg.growth_warmup_s, cfg.growth_every_s)
    g = res.growth
    say(f"[memory] RSS {g.start_kb / 1024:,.0f} -> {g.end_kb / 1024:,.0f} MiB "
        f"({g.growth_pct:+.1f}%), max {g.max_kb / 1024:,.0f} MiB, at {g.rate:,.0f} ticks/s")


def run_http(cfg: Config, svc: Server, server: EmbeddedRedis, stream: str, n: int,
             workdir: Path, res: Results, say: Callable[[str], None]) -> None:
    from bench.feeder import Feeder

    bare = bare_app(workdir).start()
    route = "/v1/predictions/T00001"
    try:
        for r in range(cfg.rounds):
            figures = {"bare": http_load.requests_per_s(bare.url + route, cfg.http_s),
                       "idle": http_load.requests_per_s(svc.url + route, cfg.http_s)}
            feeder = Feeder(server.port, stream, n, cfg.ingest_rate, seed=r).start()
            try:
                figures["ingesting"] = http_load.requests_per_s(svc.url + route, cfg.http_s)
            finally:
                feeder.stop()
            for k, v in figures.items():
                res.http.setdefault(k, []).append(v)
            say(f"[http {r + 1}/{cfg.rounds}] bare {figures['bare']:,.0f} req/s, service idle "
                f"{figures['idle']:,.0f}, while ingesting {cfg.ingest_rate:,.0f} ticks/s "
                f"{figures['ingesting']:,.0f}")
    finally:
        bare.stop()


def run(cfg: Config, say: Callable[[str], None] = print) -> Results:
    """Every scenario, in a scratch directory with its own redis-server."""
    from models.online import make_deterministic
    from service.malloc import keep_freed_memory

    # TensorFlow as `tickstream serve` runs it (one thread per op) for the learning engine;
    # the naive loop runs in processes of its own, with TensorFlow's default threads
    make_deterministic()
    keep_freed_memory()  # as the service does: bare and engine runs share this process
    res = Results(cfg, machine())
    with tempfile.TemporaryDirectory(prefix="tickstream-e2e-") as tmp:
        workdir = Path(tmp)
        say(f"[setup] untrained model H={UNITS}; redis-server (AOF, fsync always)")
        model_dir = untrained_artifact(workdir / "model")
        artifact = load_artifact(model_dir)
        with EmbeddedRedis(workdir / "redis") as server:
            with aof_measured(server):
                run_drain(cfg, server, artifact, workdir, res, say)
                if cfg.only:
                    return res
                run_recovery(cfg, server, artifact, model_dir, workdir, res, say)
            say(f"[naive] model.predict per tick, N={cfg.tickers}, {cfg.naive_ticks} ticks "
                f"x {cfg.rounds}")
            res.naive = [predict_loop_rate_apart(model_dir, cfg.tickers, cfg.naive_ticks, 1,
                                                 seed=r) for r in range(cfg.rounds)]
            say(f"[naive] {median(res.naive):,.1f} ticks/s")
            run_service_scenarios(cfg, server, model_dir, workdir, res, say)
    return res


def main(quick: bool = False, **overrides: Any) -> Results:
    """Run, print the table, and fail (exit 1) if a figure is missing."""
    cfg = replace(QUICK if quick else Config(), **overrides)
    res = run(cfg, lambda line: print(line, flush=True))
    print("\n## End to end\n\n" + table(res), flush=True)
    missing = check(res)
    if missing:
        print(f"missing figures: {', '.join(missing)}", file=sys.stderr)
        raise SystemExit(1)
    return res


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test, under 2 minutes")
    parser.add_argument("--only", nargs="+", metavar="LABEL", default=[],
                        help="run only the drain cases of these labels, no other scenario; "
                        "the labels: " + "; ".join(c.label for c in drain_cases(Config())))
    parser.add_argument("--rounds", type=int, help="rounds per figure (default 3; quick 1)")
    args = parser.parse_args()
    main(args.quick, only=tuple(args.only),
         **({} if args.rounds is None else {"rounds": args.rounds}))
