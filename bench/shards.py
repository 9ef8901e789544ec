"""Shards: what several engines buy, on a real 3-master Redis Cluster.

- Drain: SHARDS=8 streams pre-filled with synthetic ticks (no ts), drained by 1 and by 2
  engine processes (learning off, AOF everysec on every node), in the same run, rounds
  alternating; the aggregate rate, the ratio 2 : 1, and each engine's CPU per tick.
- One loop vs a thread per shard: one engine on one redis-server draining the same ticks
  with SHARDS=8 run by one loop (ShardedEngine), with SHARDS=8 run by a thread per shard
  (a prototype of the design not chosen), and with SHARDS=1 (one model for every ticker).
- Handover, with real `tickstream serve` processes under a steady feed: SIGKILL of an
  engine -> its shards live on the survivor (same host: the dead pid is seen at once);
  an engine joins -> its share moved to it; an engine stops answering (SIGSTOP, as a lost
  machine) -> its shards live elsewhere after the lease TTL.

    python -m bench.shards [--ticks 600000] [--tickers 1000] [--rounds 3]

Each engine of a drain is a worker process (`python -m bench.shards worker ...`): it loads
the model, joins the set of live engines, waits for the go, then starts (taking its share
of the shards) and drains; the run ends when every shard's output cursor is its stream's
last entry.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import redis

from bench.cluster import RedisClusterProcesses
from bench.fed_service import machine
from bench.model import untrained_artifact
from bench.service import TICKSTREAM, Server, get_json, wait_for
from models.synthetic import SyntheticMarket
from service import topology
from service.config import Settings
from service.embedded_redis import EmbeddedRedis
from service.feed import feed_synthetic, xadd_table
from service.layout import Layout
from service.shards import Routing

SHARDS = 8
CHUNK = 5000
TIMEOUT_S = 600.0
SAMPLE_S = 0.02  # a worker's progress samples: the drain is timed once all hold shards


def _keys(name: str) -> tuple[str, str, str, str]:
    """The bench's own keys (one hash tag: one node): workers, go, done, results."""
    tag = f"bench:{{{name}}}:"
    return tag + "workers", tag + "go", tag + "done", tag + "results"


def _settings(url: str, shards: int, name: str) -> Settings:
    return Settings(redis_url=url, shards=shards, name=name, learn=False)


class ThreadPerShard:
    """A prototype of the design not chosen: one Engine per shard, each with its own loop
    thread (blocking reads), every shard taken at once, on one Redis. Bench only: for
    measuring against the one loop over the shards that ShardedEngine runs."""

    def __init__(self, settings: Settings, artifact: Any, url: str) -> None:
        from service.ingest import Engine

        self.engines = [Engine(settings.for_shard(s), artifact, url)
                        for s in range(settings.shards)]

    def start(self) -> None:
        for e in self.engines:
            if not e.start(standby=False):
                raise RuntimeError("a shard's lease is held")

    def counters(self) -> Any:
        from service.loop_figures import Counters

        out = Counters()
        for e in self.engines:
            c = e.counters()
            out.applied, out.errors = out.applied + c.applied, out.errors + c.errors
            out.dead_lettered.update(c.dead_lettered)
        return out

    def status(self) -> dict[str, Any]:
        return {"shards_here": list(range(len(self.engines)))}

    def stop(self) -> None:
        for e in self.engines:
            e.stop()


def worker(url: str, shards: int, engines: int, model_dir: str, name: str,
           mode: str = "loop") -> None:
    """One engine of a drain: join, wait for the go, start, drain until told to stop."""
    from models.artifact import load_artifact
    from service.ingest import Engine
    from service.sharded import ShardedEngine

    cluster = topology.is_cluster(url)
    settings, artifact = _settings(url, shards, name), load_artifact(Path(model_dir))
    client = topology.client(url, cluster)
    workers, go, done, results = _keys(name)
    engine: Any
    if mode == "threads":
        engine = ThreadPerShard(settings, artifact, url)
    elif shards > 1:
        engine = ShardedEngine(settings, artifact, url, cluster)
        wait_for(lambda: len(engine.join()) == engines, "every engine joined", TIMEOUT_S, 0.05)
    else:
        engine = Engine(settings, artifact, url)
    client.hset(workers, str(os.getpid()), 1)
    wait_for(lambda: client.exists(go), "the go", TIMEOUT_S, 0.005)
    t0 = time.monotonic()
    engine.start()  # takes the shards: builds and restores their engines, each then drains
    started_at = time.monotonic()
    samples = []  # (monotonic time, ticks applied, process CPU seconds)
    while not client.exists(done):
        samples.append((time.monotonic(), engine.counters().applied, time.process_time()))
        time.sleep(SAMPLE_S)
    while True:  # the last commits, sent before the end was seen, are confirmed
        time.sleep(0.2)
        c = engine.counters()
        if c.applied == samples[-1][1]:
            break
        samples.append((time.monotonic(), c.applied, time.process_time()))
    here = engine.status().get("shards_here", [0])
    client.hset(results, str(os.getpid()), json.dumps({
        "samples": samples, "total": c.applied, "start_s": started_at - t0,
        "started_at": started_at, "shards": len(here), "errors": c.errors,
        "dead": sum(c.dead_lettered.values())}))
    engine.stop()
    client.close()


def prefill(url: str, routing: Routing, ticks: int, tickers: int) -> None:
    """Each shard's ticks straight to the node serving its stream (redis-py's cluster
    pipeline is several times slower than a plain one)."""
    cluster = topology.is_cluster(url)
    router = topology.client(url, cluster)
    nodes = {s: redis.Redis.from_url(topology.node_url(url, router, s) if cluster else url)
             for s in routing.streams()}
    market = SyntheticMarket(tickers, seed=1)
    for _ in range(0, ticks, CHUNK):
        table = market.ticks(CHUNK)
        for stream, where in routing.split(table.ticker.tolist()).items():
            xadd_table(nodes[stream], stream, table.take(np.array(where)), with_ts=False)
    for c in [router, *nodes.values()]:
        c.close()


def caught_up(client: topology.AnyRedis, url: str, shards: int, name: str,
              last: dict[str, bytes]) -> bool:
    settings = _settings(url, shards, name)
    parts = [settings] if shards == 1 else [settings.for_shard(s) for s in range(shards)]
    return all(client.get(Layout.from_settings(p).output_cursor) == last[p.stream]
               for p in parts)


def redis_cpu_s(ports: list[int]) -> float:
    """CPU seconds the redis-servers have used (INFO cpu, user + sys), summed."""
    total = 0.0
    for port in ports:
        with redis.Redis(port=port) as c:
            info = c.info("cpu")
            total += info["used_cpu_user"] + info["used_cpu_sys"]
    return total


def drain(url: str, ports: list[int], flush: Any, shards: int, engines: int,
          args: argparse.Namespace, model_dir: Path, mode: str = "loop") -> dict[str, Any]:
    """One drain of `args.ticks` pre-filled ticks by `engines` worker processes."""
    flush()
    cluster = topology.is_cluster(url)
    client = topology.client(url, cluster)
    name = f"drain{shards}x{engines}{mode}"
    routing = Routing("ticks", shards)
    fill0 = redis_cpu_s(ports)
    prefill(url, routing, args.ticks, args.tickers)
    xadd_s = redis_cpu_s(ports) - fill0
    last = {s: client.xrevrange(s, count=1)[0][0] for s in routing.streams()}
    workers, go, done, results = _keys(name)
    procs = [subprocess.Popen([sys.executable, "-m", "bench.shards", "worker", url, str(shards),
                               str(engines), str(model_dir), name, mode],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(engines)]
    try:
        wait_for(lambda: client.hlen(workers) == engines, "workers ready", TIMEOUT_S, 0.1)
        cpu0 = redis_cpu_s(ports)
        client.set(go, 1)
        wait_for(lambda: caught_up(client, url, shards, name, last), "drained", TIMEOUT_S, 0.02)
        ended_at = time.monotonic()  # CLOCK_MONOTONIC: the workers' clock too
        redis_s = redis_cpu_s(ports) - cpu0
        client.set(done, 1)
        wait_for(lambda: client.hlen(results) == engines, "results", TIMEOUT_S, 0.1)
        each = [json.loads(v) for v in client.hgetall(results).values()]
    finally:
        for p in procs:
            p.wait(60)
        client.close()
    if sum(e["total"] for e in each) != args.ticks or any(e["errors"] or e["dead"]
                                                          for e in each):
        raise RuntimeError(f"drain of {args.ticks} was not clean: {each}")
    # the rate once every engine holds its shards (taking them is a one-off: see start_s)
    begin = max(e["started_at"] for e in each)
    for e in each:
        at_begin = next(s for s in e["samples"] if s[0] >= begin)
        at_end = e["samples"][-1]
        e["applied"], e["cpu_s"] = at_end[1] - at_begin[1], at_end[2] - at_begin[2]
        del e["samples"]
    window = ended_at - begin
    return {"seconds": window, "rate": sum(e["applied"] for e in each) / window,
            "redis_us_per_tick": redis_s / args.ticks * 1e6,
            "xadd_us_per_tick": xadd_s / args.ticks * 1e6,
            "engines": each}


@contextmanager
def fed(url: str, rate: float) -> Iterator[None]:
    """A synthetic producer at `rate` ticks/s over 200 tickers, routed by shard."""
    stop = threading.Event()
    client = topology.client(url, True)
    thread = threading.Thread(target=feed_synthetic, daemon=True, kwargs={
        "client": client, "stream": Routing("ticks", SHARDS), "tickers": 200, "rate": rate,
        "stop": stop, "echo": lambda _: None})
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        client.close()


def _here(server: Server) -> int:
    return sum(s["here"] for s in get_json(server.port, "/v1/shards")["shards"])


def _ready(server: Server) -> bool:
    return get_json(server.port, "/readyz").get("ready") is True


def handover(cluster: RedisClusterProcesses, model_dir: Path, workdir: Path,
             i: int) -> dict[str, float]:
    """Seconds from a SIGKILL to the shards live on the survivor, from a join to the share
    moved, and from a SIGSTOP (a lost machine) to the shards live elsewhere."""
    cluster.flush()
    env = {"TICKSTREAM_REDIS_URL": cluster.url, "TICKSTREAM_MODEL_DIR": str(model_dir),
           "TICKSTREAM_SHARDS": str(SHARDS), "TICKSTREAM_LEARN": "false"}

    def serve(tag: str) -> Server:  # engines of one deployment: the same name, own logs
        return Server([TICKSTREAM, "serve"], env, workdir / f"serve-handover{i}{tag}.log")

    a, b, c = (serve(t) for t in "abc")
    out: dict[str, float] = {}
    try:
        a.start()
        wait_for(lambda: _ready(a), "A ready", TIMEOUT_S)
        b.start()
        wait_for(lambda: _here(a) == _here(b) == SHARDS // 2, "A and B 4 each", TIMEOUT_S)
        with fed(cluster.url, 2000.0):
            time.sleep(2)
            t0 = time.perf_counter()
            b.kill()
            wait_for(lambda: _here(a) == SHARDS and _ready(a), "A runs all", TIMEOUT_S, 0.02)
            out["death"] = time.perf_counter() - t0
            c.start()  # returns once C answers: it has joined, holding nothing yet
            t0 = time.perf_counter()
            wait_for(lambda: _here(c) == SHARDS // 2 and _ready(c) and _ready(a),
                     "C has its share", TIMEOUT_S, 0.02)
            out["join"] = time.perf_counter() - t0
            time.sleep(2)
            assert c.proc is not None
            c.proc.send_signal(signal.SIGSTOP)
            t0 = time.perf_counter()
            wait_for(lambda: _here(a) == SHARDS and _ready(a), "A runs all again", TIMEOUT_S,
                     0.05)
            out["lost"] = time.perf_counter() - t0
            c.proc.send_signal(signal.SIGKILL)
    finally:
        for s in (a, b, c):
            s.kill()
    return out


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        url, shards, engines, model_dir, name, *mode = sys.argv[2:8]
        worker(url, int(shards), int(engines), model_dir, name, *mode)
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ticks", type=int, default=600_000)
    p.add_argument("--tickers", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-handover", action="store_true")
    p.add_argument("--handover-only", action="store_true")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    model_dir = untrained_artifact(work / "model")
    print(machine())
    print(f"{args.ticks:,} ticks over {args.tickers:,} tickers, H=64, learning off, "
          f"{args.rounds} rounds")
    runs: dict[str, list[dict[str, Any]]] = {}
    drains = 0 if args.handover_only else args.rounds
    with RedisClusterProcesses(work / "cluster") as cluster:
        for r in range(drains):
            order = [1, 2] if r % 2 == 0 else [2, 1]
            for engines in order:
                run = drain(cluster.url, [n.port for n in cluster.nodes], cluster.flush,
                            SHARDS, engines, args, model_dir)
                runs.setdefault(f"cluster{engines}", []).append(run)
                print(f"  round {r + 1}: {engines} engine(s), S={SHARDS} on the cluster: "
                      f"{run['rate']:,.0f} ticks/s, Redis {run['redis_us_per_tick']:.2f} us "
                      "CPU/tick; " + ", ".join(
                          f"{e['shards']} shards {e['cpu_s'] / e['applied'] * 1e6:.2f} us CPU/tick"
                          for e in run["engines"]), flush=True)
        handovers = [] if args.skip_handover else [
            handover(cluster, model_dir, work, i) for i in range(args.rounds)]
    with EmbeddedRedis(work / "single", appendfsync="everysec") as single:

        def flush_single() -> None:
            with redis.Redis.from_url(single.url) as c:
                c.flushall()

        designs = [(1, "loop"), (SHARDS, "loop"), (SHARDS, "threads")]
        for r in range(drains):
            for shards, mode in (designs if r % 2 == 0 else designs[::-1]):
                run = drain(single.url, [single.port], flush_single, shards, 1, args,
                            model_dir, mode)
                runs.setdefault(f"single{shards}{mode}", []).append(run)
                e = run["engines"][0]
                print(f"  round {r + 1}: 1 engine, S={shards} ({mode}) on one redis-server: "
                      f"{run['rate']:,.0f} ticks/s, {e['cpu_s'] / e['applied'] * 1e6:.2f} us "
                      "CPU/tick", flush=True)
    report(runs, handovers)


def report(runs: dict[str, list[dict[str, Any]]], handovers: list[dict[str, float]]) -> None:
    if runs:
        report_drains(runs)
    for key, what in (("death", "SIGKILL -> its shards live on the survivor"),
                      ("join", "a join -> its share moved to it"),
                      ("lost", "SIGSTOP (lost machine) -> its shards live elsewhere")):
        values = [h[key] for h in handovers]
        if values:
            print(f"handover, {what}: {', '.join(f'{v:.2f}' for v in values)} s "
                  f"(median {_median(values):.2f} s)")


def report_drains(runs: dict[str, list[dict[str, Any]]]) -> None:
    def rate(key: str) -> float:
        return _median([r["rate"] for r in runs[key]])

    def cpu(key: str) -> float:
        return _median([e["cpu_s"] / e["applied"] * 1e6 for r in runs[key]
                        for e in r["engines"]])

    ratios = [b["rate"] / a["rate"] for a, b in zip(runs["cluster1"], runs["cluster2"],
                                                     strict=True)]
    loops = [b["rate"] / a["rate"] for a, b in zip(runs["single8threads"], runs["single8loop"],
                                                    strict=True)]
    sharding = [b["rate"] / a["rate"] for a, b in zip(runs["single1loop"],
                                                       runs["single8loop"], strict=True)]

    def redis_us(key: str) -> float:
        return _median([r["redis_us_per_tick"] for r in runs[key]])

    print("\n| drain, medians | ticks/s | engine CPU per tick | Redis CPU per tick |")
    print("|---|---:|---:|---:|")
    print(f"| 1 engine, S=8, 3-master cluster | {rate('cluster1'):,.0f} | "
          f"{cpu('cluster1'):.2f} us | {redis_us('cluster1'):.2f} us |")
    print(f"| 2 engines, S=8, 3-master cluster | {rate('cluster2'):,.0f} | "
          f"{cpu('cluster2'):.2f} us | {redis_us('cluster2'):.2f} us |")
    for key, what in (("single1loop", "1 engine, S=1, one redis-server"),
                      ("single8loop", "1 engine, S=8, one redis-server, one loop"),
                      ("single8threads", "1 engine, S=8, one redis-server, a thread per shard "
                                         "(prototype)")):
        print(f"| {what} | {rate(key):,.0f} | {cpu(key):.2f} us | {redis_us(key):.2f} us |")
    xadd = _median([r["xadd_us_per_tick"] for rs in runs.values() for r in rs])
    print(f"\nRedis CPU of the producer's pipelined XADDs (the prefill): {xadd:.2f} us per tick")
    print(f"2 engines : 1 engine, per round: {', '.join(f'{x:.2f}x' for x in ratios)} "
          f"(median {_median(ratios):.2f}x)")
    print(f"one loop over the shards : a thread per shard, per round: "
          f"{', '.join(f'{x:.2f}x' for x in loops)} (median {_median(loops):.2f}x)")
    print(f"S=8 : S=1 (one engine, one Redis), per round: "
          f"{', '.join(f'{x:.2f}x' for x in sharding)} (median {_median(sharding):.2f}x)")


if __name__ == "__main__":
    main()
