"""Prometheus metrics, read from the engine's counters at scrape time.

A custom collector (not counters incremented on the hot path) because the ingest thread
already keeps cumulative figures; a scrape copies them, so metrics cost the loop nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from service.ingest import Engine


class EngineCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        e, c = self.engine, self.engine.counters()
        yield CounterMetricFamily("tickstream_ticks_applied", "ticks applied to a row",
                                  value=c.applied)
        yield CounterMetricFamily("tickstream_entries_skipped",
                                  "redelivered entries already applied: acked, not re-applied",
                                  value=c.skipped)
        dead = CounterMetricFamily("tickstream_dead_letters", "entries sent to the dead stream",
                                   labels=["reason"])
        for reason, n in sorted(c.dead_lettered.items()):
            dead.add_metric([reason], n)
        yield dead
        yield CounterMetricFamily("tickstream_batches", "micro-batches committed",
                                  value=c.batches)
        yield CounterMetricFamily("tickstream_loop_errors",
                                  "failed loop iterations, each followed by a reload",
                                  value=c.errors)
        yield CounterMetricFamily("tickstream_step_seconds", "time spent stepping the LSTM",
                                  value=c.step_seconds)
        yield CounterMetricFamily("tickstream_checkpoint_seconds",
                                  "time spent in checkpoint MULTI/EXEC", value=c.checkpoint_seconds)
        yield GaugeMetricFamily("tickstream_last_batch_seconds",
                                "wall time of the last batch, read to commit",
                                value=c.last_batch_seconds)
        if c.lag is not None:
            yield GaugeMetricFamily("tickstream_consumer_lag",
                                    "stream entries not yet delivered to the group", value=c.lag)
        if c.pending is not None:
            yield GaugeMetricFamily("tickstream_consumer_pending",
                                    "entries delivered but not yet acknowledged", value=c.pending)
        yield GaugeMetricFamily("tickstream_snapshot_age_seconds",
                                "seconds since predictions were last published",
                                value=max(0.0, time.time() - e.snapshot.published_at))
        yield GaugeMetricFamily("tickstream_tickers", "tickers with a row",
                                value=len(e.tickers()))
        yield GaugeMetricFamily("tickstream_capacity_rows", "batch rows of the model",
                                value=e.capacity)
        yield GaugeMetricFamily("tickstream_ready", "1 when Redis is reachable and caught up",
                                value=int(e.ready))
        yield InfoMetricFamily("tickstream_model", "the served model",
                               value={"model_version": e.model_version})


def registry_for(engine: Engine) -> CollectorRegistry:
    """A registry of its own per app, so two apps in one process (tests) do not collide."""
    registry = CollectorRegistry()
    registry.register(EngineCollector(engine))
    ProcessCollector(registry=registry)
    return registry
