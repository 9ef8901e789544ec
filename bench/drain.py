"""Drain a pre-filled stream: the engine against the bare consumer, and what each writes.

The bare consumer is what the engine's throughput is measured against: the same client,
the same batch size, and nothing but XREADGROUP and XACK. The engine reads with XREAD from
its own cursor and moves its consumer group only at snapshots, so the group says nothing
about its progress: a run ends when the engine serves the stream's last entry (the
`stream_id` of its readers' snapshot) and is ready (nothing left in flight: its outputs
are committed), plain attribute reads per poll.

AOF bytes are INFO persistence `aof_current_size` before and after a run: every byte
Redis appended to its AOF (with Redis 7's multi-part AOF, the base plus the incr files).
Callers turn automatic AOF rewrites off while they measure, so it never jumps mid-run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from bench.service import wait_for
from models.artifact import Artifact
from service.config import Settings
from service.ingest import Engine
from service.reader import last_id
from service.redis_io import connect

POLL_S = 0.02  # each poll costs the loop a GIL hand-off; 20 ms is fine over a 10 s drain
TIMEOUT_S = 900.0
BARE_CONSUMER = "bare"


@dataclass(frozen=True)
class DrainRun:
    seconds: float
    applied: int  # ticks applied to a row, live or replayed (bare: entries acknowledged)
    aof_bytes: int = 0  # appended to the AOF during the run (0 with AOF off)
    step_seconds: float = 0.0
    commit_seconds: float = 0.0  # the loop waiting for its commits to be confirmed
    replayed: int = 0  # of `applied`: recomputed after a restore, outputs not written
    updates: int = 0  # the learner's optimizer steps applied (learning on)
    skipped: int = 0  # ... and refused by a guardrail (they cost a forward-backward too)
    start_seconds: float = 0.0  # of `seconds`: in Engine.start() (with learning on, the
    # learner's one-off warm-up: tracing its training step)

    def rate(self) -> float:
        return self.applied / self.seconds

    def aof_per_tick(self) -> float:
        return self.aof_bytes / self.applied


def aof_size(client: redis.Redis) -> int:
    """INFO persistence aof_current_size; 0 with AOF off (the field is missing then)."""
    return int(client.info("persistence").get("aof_current_size", 0))


def bare_drain(url: str, stream: str, group: str, batch_count: int) -> DrainRun:
    """XREADGROUP + XACK until the stream is exhausted, with the engine's own client."""
    client = connect(url, block_ms=0)
    try:
        client.xgroup_create(stream, group, "0")
        acked = 0
        aof0 = aof_size(client)
        t0 = time.perf_counter()
        while True:
            resp = client.xreadgroup(group, BARE_CONSUMER, {stream: ">"}, count=batch_count)
            entries = resp[0][1] if resp else []
            if not entries:
                break
            acked += client.xack(stream, group, *[entry_id for entry_id, _ in entries])
        seconds = time.perf_counter() - t0
        return DrainRun(seconds, acked, aof_size(client) - aof0)
    finally:
        client.close()


def engine_run(settings: Settings, artifact: Artifact, url: str,
               done: Callable[[Engine], bool], timeout_s: float = TIMEOUT_S) -> DrainRun:
    """Start an engine, time it from start() until `done(engine)`, then stop it (its final
    snapshot is not timed). Raises if any entry was dead-lettered or an iteration failed."""
    engine = Engine(settings, artifact, url)
    probe = redis.Redis.from_url(url)
    try:
        aof0 = aof_size(probe)
        t0 = time.perf_counter()
        engine.start()
        started = time.perf_counter() - t0
        try:
            wait_for(lambda: done(engine), f"{settings.name} on {settings.stream}",
                     timeout_s, every_s=POLL_S)
        except TimeoutError as e:
            raise TimeoutError(f"{e}: {engine.status()}") from None
        seconds = time.perf_counter() - t0
        aof = aof_size(probe) - aof0
    finally:
        engine.stop()
        probe.close()
    c, learner = engine.counters(), engine.model_info()
    if c.errors or c.dead_lettered:
        raise RuntimeError(f"{settings.name} was not clean: {engine.status()}")
    return DrainRun(seconds, c.applied + c.replayed, aof, c.step_seconds, c.commit_seconds,
                    c.replayed, learner["updates"], sum(learner["skipped"].values()), started)


def engine_drain(settings: Settings, artifact: Artifact, url: str) -> DrainRun:
    """Time an engine from start() until the outputs of the stream's last entry are
    committed and served."""
    probe = redis.Redis.from_url(url)
    try:
        last = last_id(probe, settings.stream)
    finally:
        probe.close()
    return engine_run(settings, artifact, url,
                      lambda e: e.snapshot.stream_id == last and e.ready)
