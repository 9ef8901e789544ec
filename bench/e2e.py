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
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis

from bench import http_load, latency, memory
from bench.drain import DrainRun, aof_size, bare_drain, engine_drain
from bench.model import UNITS, untrained_artifact
from bench.naive import predict_loop_rate_apart
from bench.recovery import Recovery, SnapshotCost, measure_recovery, measure_snapshot
from bench.service import Server, bare_app, tickstream_serve, wait_for
from bench.traffic import SHAPES, fill, tick_fields
from models.artifact import Artifact, load_artifact
from service.embedded_redis import EmbeddedRedis


@dataclass(frozen=True)
class Config:
    """What to run; the defaults are issue 4's scenarios."""

    tickers: int = 500  # N
    only: tuple[str, ...] = ()  # drain case labels: run just these, no other scenario
    drain_ticks: int = 1_000_000
    shapes: tuple[str, ...] = SHAPES
    rounds: int = 3  # each figure is the median of this many runs
    batch_count: int = 1000  # entries per XREADGROUP, engine and bare consumer alike
    many_tickers: int = 5_000  # the uniform drain at this N too
    recovery_warm: int = 50_000  # entries in the snapshot the recovery restarts from
    recovery_entries: int = 100_000  # entries after it, to replay
    snapshot_tickers: int = 10_000
    snapshot_ticks: int = 200_000  # drained to fill the rows of the snapshot measured
    naive_ticks: int = 20  # predict calls per naive run (each costs ~100 ms)
    latency_rate: float = 2_000.0
    latency_s: float = 20.0  # per probe (floor, after, poll) and round
    http_s: float = 10.0  # per wrk run
    ingest_rate: float = 20_000.0  # ticks/s fed during the "while ingesting" HTTP runs
    memory_tickers: tuple[int, ...] = (500, 5_000)
    memory_ticks: int = 200_000
    growth_rate: float = 10_000.0
    growth_s: float = 600.0
    growth_warmup_s: float = 60.0
    growth_every_s: float = 10.0


QUICK = Config(drain_ticks=20_000, rounds=1, naive_ticks=3, latency_s=3.0, http_s=2.0,
               memory_ticks=20_000, growth_s=12.0, growth_warmup_s=4.0, growth_every_s=1.0,
               recovery_warm=5_000, recovery_entries=20_000, snapshot_ticks=50_000)


@dataclass(frozen=True)
class DrainCase:
    """One drain figure: engine against the bare consumer on one pre-filled stream."""

    label: str
    shape: str
    tickers: int
    aof: bool = True  # the server: AOF on, fsync always (as served) or AOF off
    predictions: bool = True  # the predictions stream written (the default) or not
    learn: bool = False  # online learning (issue 9); off: the engine the figures began with
    target: str = ""


def drain_cases(cfg: Config) -> list[DrainCase]:
    """Issue 4's shapes, issue 8's targets; then the costs and ceilings around them."""
    targets = {"uniform": "≥ 1.0x", "zipf": "≥ 0.8x", "hot": "≥ 10,000/s"}
    n = cfg.tickers
    return [*(DrainCase(shape, shape, n, target=targets[shape]) for shape in cfg.shapes),
            DrainCase("uniform, no predictions stream", "uniform", n, predictions=False),
            DrainCase(f"uniform, N={cfg.many_tickers:,}", "uniform", cfg.many_tickers,
                      target="≥ 0.9x"),
            DrainCase("uniform, AOF off", "uniform", n, aof=False, target="≥ 1.0x"),
            DrainCase("uniform, learning on", "uniform", n, learn=True, target="≥ 0.5x")]


def selected_cases(cfg: Config) -> list[DrainCase]:
    """The drain cases this run measures: all of them, or those `cfg.only` names."""
    cases = drain_cases(cfg)
    if not cfg.only:
        return cases
    unknown = set(cfg.only) - {c.label for c in cases}
    if unknown:
        raise SystemExit(f"--only: no drain case {', '.join(sorted(unknown))}; the cases: "
                         f"{', '.join(c.label for c in cases)}")
    return [c for c in cases if c.label in cfg.only]


@dataclass
class Results:
    config: Config
    machine: dict[str, str] = field(default_factory=dict)
    drain: dict[str, dict[str, list[DrainRun]]] = field(default_factory=dict)
    xadd_aof: float = float("nan")  # the producer's AOF bytes per tick, filling `uniform`
    recovery: list[Recovery] = field(default_factory=list)
    snapshot: list[SnapshotCost] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    latency: dict[latency.Probe, list[latency.Latency]] = field(default_factory=dict)
    latency_everysec: latency.Latency | None = None  # diagnostic: without fsync per write
    http: dict[str, list[float]] = field(default_factory=dict)
    http_skipped: str | None = None
    rss_kb: dict[int, tuple[int, int]] = field(default_factory=dict)  # N -> (RSS, peak)
    growth: memory.Growth | None = None


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def paired(engine: list[DrainRun], bare: list[DrainRun]) -> float:
    """Median of the per-round ratios: each round's runs ran back to back, under the same
    load, so their ratio is steadier than a ratio of medians."""
    return median([e.rate() / b.rate() for e, b in zip(engine, bare, strict=True)])


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cores": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version(),
            "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            "command": command()}


def command() -> str:
    """How this run was started: `python -m bench.e2e ...` or `tickstream bench e2e ...`."""
    program = Path(sys.argv[0]).name
    head = "python -m bench.e2e" if program == "e2e.py" else program
    return " ".join([head, shlex.join(sys.argv[1:])])


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
            say(f"[memory] N={n}: RSS {res.rss_kb[n][0] / 1024:,.0f} MiB, peak "
                f"{res.rss_kb[n][1] / 1024:,.0f} MiB")
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


# ---- the report


def latency_rows(res: Results) -> list[tuple[str, str, str, str, str]]:
    """Medians over the rounds; each probe against the floor of the same round."""
    floor = res.latency.get("floor", [])
    rows = []
    for probe, label, target in (("after", "one GET ?after= (read-your-writes)",
                                  "p50 ≤ 2, p99 ≤ 10"),
                                 ("poll", "polling GET every 0.2 ms", "")):
        runs = res.latency.get(probe, [])
        if not runs:
            continue
        base = (f"floor {median([f.p50_ms for f in floor]):.2f} / "
                f"{median([f.p99_ms for f in floor]):.2f} (XADD alone "
                f"{median([f.xadd_p50_ms for f in floor]):.2f})" if floor else "")
        ratio = (f"{median([r.p50_ms / f.p50_ms for r, f in zip(runs, floor, strict=True)]):.2f}x"
                 if len(floor) == len(runs) else "")
        rows.append((f"latency XADD → visible, {label}, at {runs[0].rate:,.0f} ticks/s, "
                     "p50 / p99 / max (ms)",
                     f"{median([r.p50_ms for r in runs]):.2f} / "
                     f"{median([r.p99_ms for r in runs]):.2f} / "
                     f"{max(r.max_ms for r in runs):.2f}", base, ratio, target))
    lat = res.latency_everysec
    if lat is not None:
        rows.append(("latency XADD → visible, one GET ?after=, Redis fsync everysec, "
                     "p50 / p99 / max (ms)",
                     f"{lat.p50_ms:.2f} / {lat.p99_ms:.2f} / {lat.max_ms:.2f}",
                     f"{lat.probes} probes", "", ""))
    return rows


def table(res: Results) -> str:
    """The figures as a Markdown table: median, baseline, ratio, target."""
    cfg = res.config
    rows: list[tuple[str, str, str, str, str]] = []
    for case in selected_cases(cfg):
        runs = res.drain.get(case.label, {"bare": [], "engine": []})
        bare = median([r.rate() for r in runs["bare"]])
        engine = median([r.rate() for r in runs["engine"]])
        rows.append((f"drain, {case.label} (ticks/s)", f"{engine:,.0f}", f"bare {bare:,.0f}",
                     f"{paired(runs['engine'], runs['bare']):.2f}x", case.target))
    for case in [c for c in selected_cases(cfg)
                 if c.shape == "uniform" and c.aof and c.predictions and not c.learn]:
        runs = res.drain.get(case.label, {"bare": [], "engine": []})
        engine = median([r.aof_per_tick() for r in runs["engine"]])
        bare = median([r.aof_per_tick() for r in runs["bare"]])
        rows.append((f"AOF bytes per applied tick, {case.label}", f"{engine:,.1f}",
                     f"producer XADD {res.xadd_aof:,.1f}; bare consumer {bare:,.1f}",
                     f"{engine / res.xadd_aof:.2f}x", "≤ 1.5x XADD"))
    if res.recovery:
        replay = [r.replay for r in res.recovery]
        live = [r.live for r in res.recovery]
        rows.append((f"replay after a SIGKILL, {cfg.recovery_entries:,} entries after the "
                     f"snapshot (entries/s)", f"{median([r.rate() for r in replay]):,.0f}",
                     f"live, same entries {median([r.rate() for r in live]):,.0f}",
                     f"{paired(replay, live):.2f}x", "≥ 1.0x"))
        rows.append(("restart to ready after that SIGKILL (s): in process / `tickstream "
                     "serve` exec to /readyz 200",
                     f"{median([r.seconds for r in replay]):.2f} / "
                     f"{median([r.restart_s for r in res.recovery]):.1f}", "", "", ""))
    if res.snapshot:
        sc = res.snapshot
        rows.append((f"snapshot at N={sc[0].tickers:,}, H={UNITS}: write / capture, the "
                     "loop's part (ms)",
                     f"{median([c.write_s for c in sc]) * 1e3:,.0f} / "
                     f"{median([c.capture_s for c in sc]) * 1e3:,.1f}",
                     f"{sc[0].size_bytes / 1e6:,.2f} MB; longest Redis command "
                     f"{median([c.longest_command_s for c in sc]) * 1e3:,.1f} ms", "", ""))
    if res.naive:
        uniform = median([r.rate() for r in res.drain.get("uniform", {}).get("engine", [])])
        naive = median(res.naive)
        rows.append(("naive model.predict per tick (ticks/s)", f"{naive:,.2f}",
                     f"engine uniform {uniform:,.0f}", f"{uniform / naive:,.0f}x", "≥ 5,000x"))
    rows += latency_rows(res)
    if res.http:
        bare = median(res.http["bare"])
        for key, label, target in (("idle", "ingest idle", "≥ 0.8x"),
                                   ("ingesting", f"ingesting {cfg.ingest_rate:,.0f}/s",
                                    "≥ 0.5x")):
            value = median(res.http[key])
            ratio = median([v / b for v, b in zip(res.http[key], res.http["bare"], strict=True)])
            rows.append((f"HTTP GET /v1/predictions/{{t}}, {label} (req/s)", f"{value:,.0f}",
                         f"bare route {bare:,.0f}", f"{ratio:.2f}x", target))
    elif res.http_skipped:
        rows.append(("HTTP", "skipped", res.http_skipped, "", ""))
    for n, (rss, peak) in sorted(res.rss_kb.items()):
        rows.append((f"RSS after N={n:,} tickers (MiB)", f"{rss / 1024:,.0f}",
                     f"peak {peak / 1024:,.0f}", "", "≤ 700 at N=5,000" if n == 5_000 else ""))
    if res.growth is not None:
        g = res.growth
        rows.append((f"RSS growth over {g.seconds:,.0f}s at {g.rate:,.0f} ticks/s",
                     f"{g.growth_pct:+.1f}%",
                     f"{g.start_kb / 1024:,.0f} -> {g.end_kb / 1024:,.0f} MiB", "", "≤ 5%"))
    lines = ["| figure | median | baseline (same run) | ratio (median of rounds) | target |",
             "|---|---:|---:|---:|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    m = res.machine
    head = (f"- Date: {m['date']}; machine: {m['cores']} cores, {m['cpu']}; Python "
            f"{m['python']}; load average at start {m['load']}\n"
            f"- Command: `{m['command']}`; N = {cfg.tickers}, H = {UNITS}, batch "
            f"{cfg.batch_count}, {cfg.rounds} round(s), drain of {cfg.drain_ticks:,} ticks")
    return head + "\n\n" + "\n".join(lines)


def check(res: Results) -> list[str]:
    """What a smoke test requires: every figure produced (drains were checked as they ran)."""
    cfg = res.config
    missing = [f"drain {c.label}" for c in selected_cases(cfg)
               if len(res.drain.get(c.label, {}).get("engine", [])) != cfg.rounds]
    if cfg.only:
        return missing
    missing += ["recovery"] * (len(res.recovery) != cfg.rounds)
    missing += ["snapshot"] * (len(res.snapshot) != cfg.rounds)
    missing += ["naive"] * (len(res.naive) != cfg.rounds)
    missing += ["latency"] * (not res.latency.get("after"))
    missing += ["http"] * (not res.http and res.http_skipped is None)
    missing += [f"rss N={n}" for n in cfg.memory_tickers if n not in res.rss_kb]
    missing += ["growth"] * (res.growth is None)
    return missing


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
