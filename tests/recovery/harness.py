"""Driving `tickstream serve` as a real process, and the oracle checks on what it serves."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import redis

from models.reference import keras_reference
from models.synthetic import SyntheticMarket
from models.ticks import InvalidTick, TickTable, parse_tick
from service.embedded_redis import free_port

TICKSTREAM = str(Path(sys.executable).with_name("tickstream"))


class ServiceProcess:
    """`tickstream serve` in its own process, configured by TICKSTREAM_* variables."""

    def __init__(self, workdir: Path, env: dict[str, str],
                 base_env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = {**(os.environ if base_env is None else base_env), **env,
                    "TICKSTREAM_PORT": str(self.port), "TICKSTREAM_HOST": "127.0.0.1"}
        self.args = args or []
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def start(self, timeout: float = 120) -> None:
        self.starts += 1
        log = open(self.workdir / f"serve-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([TICKSTREAM, "serve", *self.args], env=self.env,
                                     cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}: {self.log_tail()}")
            try:
                if self.http.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"serve did not answer /healthz: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self) -> str:
        logs = sorted(self.workdir.glob("serve-*.log"))
        return logs[-1].read_text(errors="replace")[-3000:] if logs else ""

    def wait_ready(self, timeout: float = 120) -> dict:
        """/readyz's body once it answers 200 (restored, replayed, caught up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = self.http.get("/readyz")
                if r.status_code == 200:
                    return r.json()
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"not ready after {timeout}s: {self.log_tail()}")

    def wait_applied(self, expected_steps: int, timeout: float = 180) -> dict:
        """Wait until the served predictions account for `expected_steps` ticks."""
        deadline = time.monotonic() + timeout
        total = -1
        while time.monotonic() < deadline:
            try:
                body = self.http.get("/v1/predictions").json()
                total = sum(p["steps"] for p in body["predictions"].values())
                if total >= expected_steps and self.http.get("/readyz").status_code == 200:
                    return body["predictions"]
            except (httpx.TransportError, KeyError, ValueError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"applied {total} of {expected_steps} ticks: {self.log_tail()}")


def market_ticks(n_tickers: int, n_ticks: int, seed: int) -> TickTable:
    """Synthetic ticks in a random interleaving across tickers (each ticker's order kept)."""
    ticks = SyntheticMarket(n_tickers, seed).ticks(n_ticks)
    rng = np.random.default_rng(seed)
    keys = rng.random(len(ticks))
    for ticker in ticks.tickers():
        mine = np.flatnonzero(ticks.ticker == ticker)
        keys[mine] = np.sort(keys[mine])
    return ticks.take(np.argsort(keys, kind="stable"))


def xadd_ticks(client: redis.Redis, ticks: TickTable, stream: str = "ticks") -> None:
    pipe = client.pipeline(transaction=False)
    for t in ticks.ticks():
        pipe.xadd(stream, {"ticker": t.ticker, "price": repr(t.price),
                           "volume": repr(t.volume), "ts": str(t.ts_ms)})
    pipe.execute()


def valid_ticks_in_stream(client: redis.Redis, stream: str = "ticks") -> TickTable:
    """What the service must have applied: the stream's valid, in-order ticks, read back
    from Redis itself (so ticks from XADD and from POST are in their true order)."""
    last_ts: dict[str, int] = {}
    kept = []
    for entry_id, raw in client.xrange(stream):
        try:
            fields = {k.decode(): v.decode() for k, v in raw.items()}
            tick = parse_tick(fields, default_ts_ms=int(entry_id.split(b"-")[0]))
        except (InvalidTick, UnicodeDecodeError):
            continue
        if tick.ts_ms < last_ts.get(tick.ticker, -1):
            continue
        last_ts[tick.ticker] = tick.ts_ms
        kept.append(tick)
    return TickTable.from_ticks(kept)


def assert_served_equals_keras(served: dict, artifact_dir: Path, valid: TickTable) -> None:
    """Online = offline: each ticker's served prediction and steps equal a batch-size-1
    Keras run over that ticker's valid ticks alone."""
    reference = keras_reference(artifact_dir, valid)
    assert sorted(served) == sorted(reference)
    worst = 0.0
    for ticker, outputs in reference.items():
        assert served[ticker]["steps"] == len(outputs), ticker
        worst = max(worst, abs(served[ticker]["prediction"] - float(outputs[-1])))
    assert worst < 1e-5, f"served vs batch-size-1 Keras: max abs diff {worst:.3g}"


def feed_through_kills(service: ServiceProcess, redis_proc, ticks: TickTable, seed: int,
                       midway: list[dict[str, str]]) -> tuple[redis.Redis, int]:
    """Feed `ticks` in 12 chunks; after each, SIGKILL the service and restart it with
    snapshots at random intervals (each restart its own). After the 4th chunk, `midway`
    entries go in; after the 7th, Redis itself is SIGKILLed (AOF, fsync always) and comes
    back. Returns a client of the restarted Redis and how many restarts found outputs past
    their snapshot (kills that landed between a snapshot and later commits)."""
    rng = random.Random(seed)
    client = redis.Redis.from_url(redis_proc.url)
    replayed = 0
    service.start()
    for i, chunk in enumerate(np.array_split(np.arange(len(ticks)), 12)):
        xadd_ticks(client, ticks.take(chunk))
        if i == 3:
            for fields in midway:
                client.xadd("ticks", fields)
        if i == 6:
            redis_proc.kill()
            time.sleep(0.5)
            redis_proc.restart()
            client = redis.Redis.from_url(redis_proc.url)
        time.sleep(rng.uniform(0.05, 0.4))  # while the backlog drains and snapshots fall
        service.kill()
        service.env["TICKSTREAM_SNAPSHOT_EVERY_S"] = f"{rng.uniform(0.1, 1.5):.2f}"
        service.env["TICKSTREAM_SNAPSHOT_EVERY_TICKS"] = str(rng.randint(200, 3000))
        service.start()
        replayed += service.wait_ready()["replayed"] > 0
    return client, replayed
