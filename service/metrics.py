"""Prometheus metrics, read from the engine's counters at scrape time.

A custom collector (not counters incremented on the hot path) because the ingest thread
already keeps cumulative figures; a scrape copies them, so metrics cost the loop nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from service.sharded import AnyEngine


class EngineCollector(Collector):
    def __init__(self, engine: AnyEngine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        e, c = self.engine, self.engine.counters()
        yield CounterMetricFamily("tickstream_ticks_applied", "ticks applied to a row",
                                  value=c.applied)
        yield CounterMetricFamily("tickstream_entries_replayed",
                                  "entries recomputed after a restore (outputs not rewritten)",
                                  value=c.replayed)
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
        yield CounterMetricFamily("tickstream_write_refusals",
                                  "loop iterations whose writes Redis refused (OOM, MISCONF)",
                                  value=c.write_refusals)
        yield CounterMetricFamily("tickstream_step_seconds", "time spent stepping the LSTM",
                                  value=c.step_seconds)
        yield CounterMetricFamily("tickstream_commit_seconds",
                                  "time spent waiting for per-batch output commits",
                                  value=c.commit_seconds)
        for name, doc, h in (
                ("tickstream_batch_seconds", "a committed batch, from its read to its commit",
                 c.batch_seconds),
                ("tickstream_tick_to_commit_seconds",
                 "per batch, its oldest tick's stream-ID time to the commit of its outputs",
                 c.tick_to_commit)):
            yield HistogramMetricFamily(name, doc, buckets=h.cumulative(), sum_value=h.sum)
        yield GaugeMetricFamily("tickstream_last_batch_seconds",
                                "wall time of the last batch, read to commit",
                                value=c.last_batch_seconds)
        if c.lag is not None:
            yield GaugeMetricFamily("tickstream_consumer_lag",
                                    "stream entries after the engine's cursor", value=c.lag)
        yield CounterMetricFamily("tickstream_gap_entries",
                                  "entries trimmed away before the engine read them "
                                  "(accepted with ACCEPT_GAP)", value=c.gap_entries)
        status = e.status()
        if "shards_here" in status:  # SHARDS > 1 (GET /v1/shards has each shard)
            yield GaugeMetricFamily("tickstream_shards_here", "shards this engine runs",
                                    value=len(status["shards_here"]))
            yield GaugeMetricFamily("tickstream_engines_live",
                                    "live engines of this deployment", value=status["engines_live"])
        replay = status["replaying"]
        yield GaugeMetricFamily("tickstream_replaying",
                                "1 while replaying the stream after a restore",
                                value=int(replay is not None))
        snap = e.snapshot_status()
        yield CounterMetricFamily("tickstream_state_snapshots", "snapshots written",
                                  value=snap["written"])
        yield CounterMetricFamily("tickstream_state_snapshot_failures",
                                  "snapshot writes that failed", value=snap["failed"])
        if snap["age_s"] is not None:
            yield GaugeMetricFamily("tickstream_state_snapshot_age_seconds",
                                    "seconds since the last snapshot was switched in",
                                    value=snap["age_s"])
            yield GaugeMetricFamily("tickstream_state_snapshot_size_bytes",
                                    "bytes of the last snapshot", value=snap["size_bytes"])
            yield GaugeMetricFamily("tickstream_state_snapshot_duration_seconds",
                                    "time to write and switch the last snapshot",
                                    value=snap["seconds"])
        yield GaugeMetricFamily("tickstream_snapshot_age_seconds",
                                "seconds since the loop last confirmed the served "
                                "predictions were current",
                                value=max(0.0, time.time() - e.snapshot.fresh_at))
        yield GaugeMetricFamily("tickstream_tickers", "tickers with a row",
                                value=len(e.tickers()))
        yield GaugeMetricFamily("tickstream_capacity_rows", "batch rows of the model",
                                value=e.capacity)
        yield GaugeMetricFamily("tickstream_ready", "1 when Redis is reachable and caught up",
                                value=int(e.ready))
        yield InfoMetricFamily("tickstream_model", "the served model",
                               value={"model_version": e.model_version})
        yield from _learning(e)


def _learning(e: AnyEngine) -> Iterator[Metric]:
    """The learner's record and the live scores (overall; GET /v1/quality per ticker)."""
    info = e.model_info()
    yield CounterMetricFamily("tickstream_model_updates", "optimizer steps applied online",
                              value=info["updates"])
    skipped = CounterMetricFamily("tickstream_model_updates_skipped",
                                  "optimizer steps refused by a guardrail", labels=["reason"])
    for reason, n in info["skipped"].items():
        skipped.add_metric([reason], n)
    yield skipped
    if info["running_loss"] is not None:
        yield GaugeMetricFamily("tickstream_model_running_loss",
                                "exponentially weighted training loss (normalised units)",
                                value=info["running_loss"])
    scores = e.scores
    q = scores.overall()
    yield CounterMetricFamily("tickstream_predictions_scored",
                              "predictions scored against their realised return", value=q.scored)
    if q.scored:
        mse = GaugeMetricFamily("tickstream_mse", "mean squared error of the next log return, "
                                "exponentially weighted (EVAL_HALFLIFE), averaged over tickers",
                                labels=["forecast"])
        mse.add_metric(["model"], q.mse_model)
        mse.add_metric(["zero"], q.mse_zero)
        yield mse
        for name, doc, value in (
                ("tickstream_skill", "1 - MSE_model / MSE_zero, weighted", q.skill),
                ("tickstream_skill_total", "1 - MSE_model / MSE_zero since start",
                 q.skill_total),
                ("tickstream_sign_hit_rate", "share of non-zero returns whose sign was called",
                 q.sign_hit_rate)):
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)


def app_registry() -> CollectorRegistry:
    """A registry of its own per app, so two apps in one process (tests) do not collide;
    the engine's collector joins it once the engine exists."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


def request_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram("tickstream_http_request_seconds", "HTTP requests, by route and method",
                     ["route", "method"], registry=registry,
                     buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                              0.5, 1.0, 2.5))
