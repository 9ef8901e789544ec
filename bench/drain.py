"""Drain throughput: the engine against a bare consumer, on one pre-filled stream.

Each run reads the same entries through its own fresh consumer group, so the stream is
filled once per traffic shape and every run (engine or bare) starts from the same place.
The bare consumer is the ceiling the engine is measured against: the same client, the
same batch size, and nothing but XREADGROUP and XACK.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from models.artifact import Artifact
from service.config import Settings
from service.ingest import Engine
from service.redis_io import connect

POLL_S = 0.02  # lag polls cost the loop a GIL hand-off; 20 ms is fine over a 10 s drain
BARE_CONSUMER = "bare"


@dataclass(frozen=True)
class DrainRun:
    seconds: float
    applied: int  # ticks applied to a row (the bare consumer: entries acknowledged)
    step_seconds: float = 0.0
    checkpoint_seconds: float = 0.0

    def rate(self) -> float:
        return self.applied / self.seconds


def group_done(client: redis.Redis, stream: str, group: str) -> bool:
    """Everything delivered to the group (lag 0) and acknowledged (no pending)."""
    for g in client.xinfo_groups(stream):
        if g["name"].decode() == group:
            return g["lag"] == 0 and g["pending"] == 0
    return False


def bare_drain(url: str, stream: str, group: str, batch_count: int) -> DrainRun:
    """XREADGROUP + XACK until the stream is exhausted, with the engine's own client."""
    client = connect(url, block_ms=0)
    try:
        client.xgroup_create(stream, group, "0")
        acked = 0
        t0 = time.perf_counter()
        while True:
            resp = client.xreadgroup(group, BARE_CONSUMER, {stream: ">"}, count=batch_count)
            entries = resp[0][1] if resp else []
            if not entries:
                break
            acked += client.xack(stream, group, *[entry_id for entry_id, _ in entries])
        return DrainRun(time.perf_counter() - t0, acked)
    finally:
        client.close()


def engine_drain(settings: Settings, artifact: Artifact, url: str,
                 timeout_s: float = 900.0) -> DrainRun:
    """Start an engine on a fresh group and time it until the group has nothing left."""
    engine = Engine(settings, artifact, url)
    probe = connect(url, block_ms=0)
    try:
        t0 = time.perf_counter()
        engine.start()
        while not group_done(probe, settings.stream, settings.group):
            if time.perf_counter() - t0 > timeout_s:
                raise TimeoutError(f"engine did not drain {settings.stream} in {timeout_s}s: "
                                   f"{engine.status()}")
            time.sleep(POLL_S)
        seconds = time.perf_counter() - t0
    finally:
        engine.stop()
        probe.close()
    c = engine.counters()
    if c.errors or c.dead_lettered:
        raise RuntimeError(f"drain was not clean: {engine.status()}")
    return DrainRun(seconds, c.applied, c.step_seconds, c.checkpoint_seconds)
