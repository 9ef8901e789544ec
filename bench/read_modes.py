"""Read modes (issue 8): XREADGROUP + XACK against XREAD from our own cursor.

Today the engine reads with XREADGROUP ">" and acknowledges each batch with XACK. Its
progress, though, is the cursor it checkpoints, not the group: the proposal is to XREAD
from that cursor and move the group only for operators, one XGROUP SETID every 5 s.
XREADGROUP is a write (Redis propagates an XCLAIM per delivered entry, plus XACK's IDs),
so with AOF on and fsync always it costs AOF bytes and fsyncs that XREAD does not. This
bench puts numbers on both, with bare consumers (the engine's client, COUNT 1000, nothing
else) on one pre-filled stream, with AOF on (fsync always, as `tickstream serve` runs
Redis) and off, rounds interleaved a, b, a, b, ... and each ratio measured in the same run.

AOF bytes are INFO persistence `aof_current_size` before and after each run (Redis adds
every byte it writes to the AOF to it; with Redis 7's multi-part AOF it is the base plus
the incr files), cross-checked against the AOF files' sizes on disk. Automatic AOF
rewrites are turned off, so neither figure jumps mid-run.

Run: `python -m bench.read_modes` (1,000,000 entries, ~10 min) or `--quick` (50,000).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis

from bench.drain import DrainRun, aof_size, bare_drain
from bench.e2e_setup import machine, median, paired
from bench.traffic import fill, tick_fields
from service.embedded_redis import EmbeddedRedis
from service.redis_io import connect

STREAM = "ticks"
MODES = {"a": "(a) XREADGROUP + XACK", "b": "(b) XREAD cursor + SETID / 5 s"}
AOF_LABELS = {True: "AOF on (fsync always)", False: "AOF off"}


@dataclass(frozen=True)
class Config:
    tickers: int = 500  # N
    entries: int = 1_000_000
    rounds: int = 3
    batch_count: int = 1000
    setid_every_s: float = 5.0


QUICK = Config(entries=50_000)


@dataclass(frozen=True)
class Run:
    drain: DrainRun
    aof_bytes: int  # aof_current_size after - before
    disk_bytes: int  # AOF files on disk after - before
    setids: int = 0


@dataclass
class Results:
    config: Config
    machine: dict[str, str]
    runs: dict[bool, dict[str, list[Run]]] = field(default_factory=dict)  # AOF on? -> mode
    producer_bytes: float = float("nan")  # XADD AOF bytes per entry, while filling


def aof_bytes(client: redis.Redis, data_dir: Path) -> tuple[int, int]:
    """(INFO aof_current_size, bytes of the AOF files on disk): Redis 6's appendonly.aof
    or Redis 7's appendonlydir/appendonly.aof.* (base, incr files, manifest)."""
    disk = sum(p.stat().st_size for p in data_dir.rglob("appendonly*") if p.is_file())
    return aof_size(client), disk


def cursor_drain(url: str, stream: str, group: str, batch_count: int,
                 setid_every_s: float) -> tuple[DrainRun, int]:
    """XREAD from the last ID read until the stream is exhausted, moving `group` to the
    cursor every `setid_every_s` and once at the end; returns the run and the SETIDs."""
    client = connect(url, block_ms=0)
    try:
        client.xgroup_create(stream, group, "0")  # as bare_drain: a fresh group at 0
        cursor: bytes | str = "0-0"
        read = setids = 0
        t0 = time.perf_counter()
        next_setid = t0 + setid_every_s
        while True:
            resp = client.xread({stream: cursor}, count=batch_count)
            entries = resp[0][1] if resp else []
            if not entries:
                break
            cursor = entries[-1][0]
            read += len(entries)
            if time.perf_counter() >= next_setid:
                client.xgroup_setid(stream, group, cursor)
                setids += 1
                next_setid += setid_every_s
        client.xgroup_setid(stream, group, cursor)  # the group ends where (a)'s does
        return DrainRun(time.perf_counter() - t0, read), setids + 1
    finally:
        client.close()


def consume(mode: str, cfg: Config, server: EmbeddedRedis, group: str) -> Run:
    probe = redis.Redis.from_url(server.url)
    try:
        size0, disk0 = aof_bytes(probe, server.data_dir)
        if mode == "a":
            drain, setids = bare_drain(server.url, STREAM, group, cfg.batch_count), 0
        else:
            drain, setids = cursor_drain(server.url, STREAM, group, cfg.batch_count,
                                         cfg.setid_every_s)
        size1, disk1 = aof_bytes(probe, server.data_dir)
    finally:
        probe.close()
    if drain.applied != cfg.entries:
        raise RuntimeError(f"{MODES[mode]} consumed {drain.applied:,} of {cfg.entries:,}")
    return Run(drain, size1 - size0, disk1 - disk0, setids)


def run_server(cfg: Config, aof: bool, workdir: Path, fields: dict[str, np.ndarray],
               res: Results, say: Callable[[str], None]) -> None:
    """One private redis-server: fill the stream, then the rounds, a and b interleaved."""
    label = AOF_LABELS[aof]
    with EmbeddedRedis(workdir / f"redis-aof-{'on' if aof else 'off'}",
                       appendonly=aof, appendfsync="always") as server:
        client = redis.Redis.from_url(server.url)
        try:
            client.config_set("auto-aof-rewrite-percentage", 0)  # no rewrite mid-measure
            before, _ = aof_bytes(client, server.data_dir)
            t0 = time.perf_counter()
            fill(client, server.port, STREAM, fields)
            after, _ = aof_bytes(client, server.data_dir)
        finally:
            client.close()
        if aof:
            res.producer_bytes = (after - before) / cfg.entries
        say(f"[{label}] filled {cfg.entries:,} entries over {cfg.tickers} tickers in "
            f"{time.perf_counter() - t0:.1f}s"
            + (f"; XADD AOF {res.producer_bytes:.1f} B/entry" if aof else ""))
        runs = res.runs.setdefault(aof, {m: [] for m in MODES})
        for r in range(cfg.rounds):
            for mode in MODES:
                run = consume(mode, cfg, server, f"{mode}-{r}")
                runs[mode].append(run)
                say(f"[{label} {r + 1}/{cfg.rounds}] {MODES[mode]}: "
                    f"{run.drain.rate():,.0f} entries/s over {run.drain.seconds:.2f}s; AOF "
                    f"+{run.aof_bytes:,} B (disk +{run.disk_bytes:,} B), "
                    f"{run.aof_bytes / cfg.entries:.4f} B/entry"
                    + (f", {run.setids} SETID(s)" if mode == "b" else ""))


def run(cfg: Config, say: Callable[[str], None] = print) -> Results:
    res = Results(cfg, machine())
    res.machine["command"] = " ".join(["python -m bench.read_modes", *sys.argv[1:]])
    fields = tick_fields("uniform", cfg.tickers, cfg.entries)
    with tempfile.TemporaryDirectory(prefix="tickstream-read-modes-") as tmp:
        for aof in (True, False):
            run_server(cfg, aof, Path(tmp), fields, res, say)
    return res


def table(res: Results) -> str:
    cfg = res.config
    a, b = MODES.values()
    lines = [f"| figure | {a} | {b} | b/a (same run) |", "|---|---:|---:|---:|"]
    for aof, runs in res.runs.items():
        rate = {m: median([r.drain.rate() for r in runs[m]]) for m in MODES}
        per = {m: median([r.aof_bytes / cfg.entries for r in runs[m]]) for m in MODES}
        ratio = paired([r.drain for r in runs["b"]], [r.drain for r in runs["a"]])
        lines.append(f"| entries/s, {AOF_LABELS[aof]} | {rate['a']:,.0f} | {rate['b']:,.0f} "
                     f"| {ratio:.2f}x |")
        byte_ratio = f"{per['b'] / per['a']:.2g}x" if per["a"] else "—"
        lines.append(f"| AOF bytes per consumed entry, {AOF_LABELS[aof]} | {per['a']:.4g} "
                     f"| {per['b']:.4g} | {byte_ratio} |")
    lines.append(f"| producer XADD AOF bytes per entry (while filling) "
                 f"| {res.producer_bytes:.4g} | | |")
    m = res.machine
    rounds = "; ".join(
        f"{AOF_LABELS[aof]}: " + ", ".join(
            f"{mode}: " + " / ".join(f"{r.drain.rate():,.0f}" for r in runs[mode])
            for mode in MODES)
        for aof, runs in res.runs.items())
    setids = [r.setids for runs in res.runs.values() for r in runs["b"]]
    head = (f"- Date: {m['date']}; machine: {m['cores']} cores, {m['cpu']}; Python "
            f"{m['python']}; load average at start {m['load']}\n"
            f"- Command: `{m['command']}`; N = {cfg.tickers} tickers (uniform), "
            f"{cfg.entries:,} entries, COUNT {cfg.batch_count}, {cfg.rounds} rounds "
            f"(a, b interleaved); entries/s: median of rounds; b/a: median of per-round "
            f"ratios\n- Per round (entries/s): {rounds}\n"
            f"- (b) made {min(setids)} to {max(setids)} XGROUP SETID per run (every "
            f"{cfg.setid_every_s:g} s and one at the end)")
    return head + "\n\n" + "\n".join(lines)


def main(quick: bool = False) -> Results:
    res = run(QUICK if quick else Config(), lambda line: print(line, flush=True))
    print("\n## Read modes\n\n" + table(res), flush=True)
    return res


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50,000 entries instead of 1M")
    main(parser.parse_args().quick)
