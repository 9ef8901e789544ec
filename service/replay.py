"""The offline twin of the engine: the very same apply loop over a table of ticks, no Redis
writes, every prediction and its realised return written out, with a quality summary.

It is the oracle the exactly-once tests hold the service to (the weights after the same
stream must be bit-exactly these) and the tool to tune LEARN_* and EVAL_* settings with.
Entries come from a CSV (as `tickstream feed --csv` would write them) or from a Redis
stream, read from its first entry.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any, TextIO

import numpy as np
import redis

from models.artifact import Artifact
from models.online import OnlineLearner
from models.ticks import TickTable
from service.apply import apply_entries
from service.config import Settings
from service.entries import RawEntry, TickerCache, parse_entries
from service.feed import tick_fields
from service.prediction_stream import predictions_of
from service.reader import last_id
from service.records import parse_id
from service.snapshot import Prediction
from service.state import RowState

COLUMNS = ("ticker", "stream_id", "as_of", "last_price", "prediction", "realised",
           "model_version")


def csv_entries(table: TickTable, batch: int) -> Iterator[list[RawEntry]]:
    """The table as stream entries, IDs from its ts (ms-seq): what `feed --csv` writes."""
    seq, prev = 0, -1
    out: list[RawEntry] = []
    for t in table.ticks():
        seq = seq + 1 if t.ts_ms == prev else 0
        prev = t.ts_ms
        fields = tick_fields(t, with_ts=True)
        out.append((f"{t.ts_ms}-{seq}".encode(),
                    [x.encode() for kv in fields.items() for x in kv]))
        if len(out) == batch:
            yield out
            out = []
    if out:
        yield out


def redis_entries(client: redis.Redis, stream: str, batch: int) -> Iterator[list[RawEntry]]:
    """Every entry of the stream as it is now, oldest first, `batch` at a time."""
    last = last_id(client, stream)
    start = b"-"
    while last is not None:
        page = client.xrange(stream, start, last, count=batch)
        if not page:
            return
        yield [(entry_id, [x for kv in fields.items() for x in kv]) for entry_id, fields in page]
        start = b"(" + page[-1][0]


class PredictionWriter:
    """One CSV row per prediction, written once its ticker's next tick brings the realised
    return (the last of each ticker at the end, with none)."""

    def __init__(self, out: TextIO) -> None:
        self._csv = csv.writer(out)
        self._csv.writerow(COLUMNS)
        self._waiting: dict[str, Prediction] = {}

    def add(self, predictions: list[Prediction]) -> None:
        for p in predictions:
            before = self._waiting.get(p.ticker)
            if before is not None:
                self._row(before, math.log(p.last_price / before.last_price))
            self._waiting[p.ticker] = p

    def close(self) -> None:
        for p in self._waiting.values():
            self._row(p, None)

    def _row(self, p: Prediction, realised: float | None) -> None:
        self._csv.writerow([p.ticker, p.stream_id, p.as_of, repr(p.last_price),
                            repr(p.prediction), "" if realised is None else repr(realised),
                            p.model_version])


def replay(artifact: Artifact, settings: Settings, batches: Iterator[list[RawEntry]],
           out: TextIO, progress: Callable[[int], None] = lambda n: None
           ) -> tuple[RowState, dict[str, Any]]:
    """Run the engine's apply loop over `batches`; returns the end state and a summary."""
    state = RowState.empty(artifact, settings,
                           OnlineLearner(artifact.model, settings.learn_config, 1))
    names = TickerCache(shard=settings.shard)  # one shard's stream: as its engine admits
    writer = PredictionWriter(out)
    entries = applied = 0
    dead: dict[str, int] = {}
    for batch in batches:
        outputs, _ = apply_entries(state, artifact, names, batch,
                                   parse_entries(batch, names), publish=True)
        state.cursor = parse_id(batch[-1][0].decode())
        for fields in outputs.published:
            writer.add(predictions_of(fields))
        for d in outputs.dead:
            dead[d.reason] = dead.get(d.reason, 0) + 1
        entries += len(batch)
        applied += outputs.applied
        progress(len(batch))
    writer.close()
    return state, summary(state, entries, applied, dead)


def summary(state: RowState, entries: int, applied: int, dead: dict[str, int]
            ) -> dict[str, Any]:
    """What a user tunes by: errors against the zero forecast, skill, the learner's record."""
    k = len(state.registry)
    ev, counts = state.evaluator, state.learner.counts
    overall = ev.overall()
    rmse = {name: None if mse is None else math.sqrt(mse)
            for name, mse in (("model", overall.mse_model_total),
                              ("zero", overall.mse_zero_total))}
    ratio = rmse["model"] / rmse["zero"] if rmse["model"] is not None and rmse["zero"] else None
    return {
        "entries": entries, "applied": applied, "dead_lettered": dead,
        "tickers": k, "cursor": state.cursor_id, "model_version": state.model_version,
        "learning": {"on": state.learning, "updates": counts.updates,
                     "skipped": {"nonfinite": counts.skipped_nonfinite,
                                 "outlier": counts.skipped_outlier},
                     "running_loss": counts.running_loss},
        "rmse_model": rmse["model"], "rmse_zero": rmse["zero"], "rmse_ratio": ratio,
        "quality": asdict(overall),
        "per_ticker": {state.registry.ticker(r): asdict(ev.row(r)) for r in range(k)},
    }


def state_arrays(state: RowState) -> dict[str, np.ndarray]:
    """The end state as named arrays (rows, last ticks, steps, learner, scores), for
    comparing with a service's snapshot: `np.savez` them, no pickle."""
    data = state.capture()
    return {"rows": data.rows, "last_price": data.last_price, "last_ts": data.last_ts,
            "steps": data.steps, **data.arrays}
