"""What an end-to-end run is (bench/e2e.py): its configuration, its drain cases, the
results it collects, and the machine and command it ran on."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import latency, memory
from bench.drain import DrainRun
from bench.recovery import Recovery, SnapshotCost
from bench.service import Resident
from bench.traffic import SHAPES


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
    rss_kb: dict[int, Resident] = field(default_factory=dict)  # by N
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
