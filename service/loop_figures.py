"""What an ingest loop reports: its counters, its health, its replay's progress, the model
it serves.

One Engine's figures, or several shards' engines summed (service/sharded.py); read by
status(), /metrics and `tickstream status`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis

from models.online import Counts
from service.config import Settings
from service.histogram import Histogram
from service.redis_io import write_refusal

BACKOFF_FIRST_S = 0.05
BACKOFF_CAP_S = 2.0


@dataclass
class Counters:
    """Cumulative figures for /metrics and status(); the loop thread is the only writer."""

    batches: int = 0  # committed
    applied: int = 0  # ticks applied to a row, live (replayed ones count in `replayed`)
    replayed: int = 0  # entries recomputed after a restore, outputs not written again
    dead_lettered: dict[str, int] = field(default_factory=dict)  # reason -> count
    step_seconds: float = 0.0
    commit_seconds: float = 0.0
    last_batch_seconds: float = 0.0
    errors: int = 0  # failed iterations (each followed by a reload)
    write_refusals: int = 0  # of those, Redis refused a write (OOM, MISCONF, ...)
    batch_seconds: Histogram = field(default_factory=Histogram)  # read to commit
    tick_to_commit: Histogram = field(default_factory=Histogram)  # oldest tick's ID time
    lag: int | None = None  # stream entries after the cursor
    gap_entries: int = 0  # entries trimmed before the engine read them (ACCEPT_GAP)

    def add(self, other: Counters) -> None:
        """Count `other`'s figures too (several shards' engines as one); `lag` is left to
        the caller (unknown if any is)."""
        for name in ("batches", "applied", "replayed", "step_seconds", "commit_seconds",
                     "errors", "write_refusals", "gap_entries"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.dead_lettered.items():
            self.dead_lettered[reason] = self.dead_lettered.get(reason, 0) + n
        self.batch_seconds.add(other.batch_seconds)
        self.tick_to_commit.add(other.tick_to_commit)
        self.last_batch_seconds = max(self.last_batch_seconds, other.last_batch_seconds)


@dataclass
class Replay:
    """Progress of the replay after a restore: entries done of the total behind."""

    done: int = 0
    total: int | None = None
    logged_at: float = field(default_factory=time.monotonic)

    def __str__(self) -> str:
        return f"replaying {self.done}" + ("" if self.total is None else f" of {self.total}") \
            + " entries since the snapshot"


@dataclass
class Health:
    """How the loop is doing, for /readyz and operators; the loop thread is the only writer
    (each field one atomic read for the others)."""

    connected: bool = False
    refusing: str | None = None  # why Redis refuses the loop's writes, if it does
    last_error: str | None = None
    last_ok_at: float | None = None  # time.time() of the last good turn
    current_at: float = float("-inf")  # time.monotonic() when last caught up, all committed
    replay: Replay | None = None  # replaying after a restore
    backoff: float = BACKOFF_FIRST_S  # the wait after the next failed turn

    @property
    def serving(self) -> bool:
        """Redis reachable and taking writes, replay done."""
        return self.connected and self.refusing is None and self.replay is None

    def ok(self) -> None:
        """A turn went well."""
        self.last_ok_at, self.backoff = time.time(), BACKOFF_FIRST_S

    def failed(self, e: Exception, counters: Counters) -> float:
        """A turn failed with `e`: what that says of Redis, counted; returns the seconds
        to wait before the next turn (doubling up to BACKOFF_CAP_S)."""
        refused = write_refusal(e)  # up, but not writing: it has all we wrote
        self.connected = bool(refused) or not isinstance(e, redis.RedisError)
        self.refusing = f"Redis refuses writes: {refused}" if refused else None
        self.last_error = f"{type(e).__name__}: {e}"
        counters.errors += 1
        counters.write_refusals += bool(refused)
        wait, self.backoff = self.backoff, min(self.backoff * 2, BACKOFF_CAP_S)
        return wait


def describe_model(settings: Settings, base_version: str, model_version: str,
                   counts: Counts | None) -> dict[str, Any]:
    """The weights being served and how the learner is doing (None: no steps yet)."""
    s = settings
    return {
        "base_version": base_version, "model_version": model_version,
        "updates": counts.updates if counts else 0,
        "skipped": {"nonfinite": counts.skipped_nonfinite if counts else 0,
                    "outlier": counts.skipped_outlier if counts else 0},
        "running_loss": counts.running_loss if counts else None,
        "learning": {"on": s.learn, "window": s.learn_window, "batch": s.learn_batch,
                     "rate": s.learn_rate, "clipnorm": s.learn_clipnorm,
                     "max_loss_ratio": s.learn_max_loss_ratio},
        "eval_halflife": s.eval_halflife,
    }  # fmt: skip
