"""The engine's state: everything the stream prefix up to `cursor` determines.

Registry (ticker -> row), every row's h and c, each row's last tick and step count, the
cursor and how many stream entries that is. `step` applies an admitted batch and returns
its outputs; `capture` / `from_snapshot` are the two things recovery needs (as Flink's
snapshotState / initializeState).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat

import numpy as np

from models.artifact import Artifact
from models.features import LastTicks, compute_features
from models.lstm import LSTMStepper
from service import prediction_stream
from service.admit import Batch
from service.commit import Outputs
from service.records import format_id, parse_id
from service.registry import Registry
from service.snapshot import Prediction
from service.snapshots import SnapshotData
from service.types import Row, Rows, StreamId

NO_CURSOR = (-1, -1)


@dataclass
class RowState:
    registry: Registry
    stepper: LSTMStepper
    last: LastTicks
    steps: np.ndarray  # (N,) int64 ticks applied to each row
    cursor: tuple[int, int] = NO_CURSOR  # the last stream entry applied
    entries_read: int | None = None  # entries ever added to the stream up to the cursor

    @classmethod
    def empty(cls, artifact: Artifact, registry: Registry) -> RowState:
        n = registry.capacity
        w = artifact.stepper(1)
        return cls(registry, LSTMStepper(w.layers, w.head_w, w.head_b, n), LastTicks.empty(n),
                   np.zeros(n, np.int64))

    @classmethod
    def from_snapshot(cls, artifact: Artifact, registry: Registry,
                      data: SnapshotData) -> RowState:
        """`registry` must already hold data.tickers in row order."""
        state = cls.empty(artifact, registry)
        rows = np.arange(len(data.tickers))
        state.stepper.set_rows(rows, data.rows)
        state.last.price[rows], state.last.ts_ms[rows] = data.last_price, data.last_ts
        state.steps[rows] = data.steps
        state.cursor = parse_id(data.cursor) if data.cursor else NO_CURSOR
        state.entries_read = data.entries_read
        return state

    @property
    def cursor_id(self) -> StreamId | None:
        return None if self.cursor == NO_CURSOR else format_id(self.cursor)

    def capture(self, model_version: str) -> SnapshotData:
        """A copy of the state as it is now, for a snapshot written on another thread."""
        k = len(self.registry)
        rows = np.arange(k)
        return SnapshotData(model_version, self.cursor_id, self.entries_read,
                            [self.registry.ticker(r) for r in range(k)],
                            self.stepper.get_rows(rows), self.last.price[:k].copy(),
                            self.last.ts_ms[:k].copy(), self.steps[:k].copy())

    def grow(self, n_rows: int) -> None:
        """More batch rows; existing rows keep their state bit-exactly."""
        self.stepper.grow(n_rows)
        self.last = self.last.grown(n_rows)
        self.steps = np.concatenate([self.steps, np.zeros(n_rows - len(self.steps), np.int64)])

    def clear_rows(self, rows: Rows) -> None:
        """A recycled row starts over: no memory, no last tick, no steps."""
        self.stepper.reset_rows(rows)
        self.last.reset_rows(rows)
        self.steps[rows] = 0

    def reset_memory(self, row: Row) -> None:
        """A reset control entry: zero h and c; the last tick and step count stay."""
        self.stepper.reset_rows(np.array([row]))

    def step(self, b: Batch, artifact: Artifact, publish: bool) -> Outputs:
        """Features, ONE step over every tick of the batch, and the predictions it makes.

        Nothing here formats a float: Redis gets binary records and columns, HTTP formats
        the one prediction it serves. `publish`: build the predictions stream entry.
        """
        meta, t, rows = artifact.meta, b.ticks, b.rows  # rows: (M,)
        raw, self.last = compute_features(rows, t.price, t.volume, t.ts_ms, self.last)
        out = self.stepper.step_ticks(rows, meta.feature_scaler.transform(raw))  # (M,)
        ret = meta.target_scaler.inverse(out)  # (M,) next log return
        next_price = t.price * np.exp(ret)

        m = len(rows)
        order = np.argsort(rows, kind="stable")  # each row's ticks together, in order
        sorted_rows = rows[order]
        starts = np.flatnonzero(np.concatenate(([True], sorted_rows[1:] != sorted_rows[:-1])))
        ends = np.append(starts[1:], m)
        rank = np.empty(m, np.intp)
        rank[order] = np.arange(m) - np.repeat(starts, ends - starts)
        steps = self.steps[rows] + rank + 1  # (M,) ticks applied to the row after each tick
        changed = sorted_rows[starts]  # (k,) rows that moved, ascending
        last_of_row = order[ends - 1]  # (k,) each moved row's last tick
        self.steps[changed] = steps[last_of_row]

        version = meta.model_version
        latest = last_of_row.tolist()
        tickers = [t.ticker[i] for i in latest]
        ids = [b.ids[i].decode() for i in latest]
        rets, next_prices, prices, ts, all_steps = (
            col[last_of_row].tolist() for col in (ret, next_price, t.price, t.ts_ms, steps))
        # tuple.__new__ builds each NamedTuple in C; Prediction(...) goes through Python
        predictions = list(map(tuple.__new__, repeat(Prediction),
                               zip(tickers, rets, next_prices, prices, ts, ids, all_steps,
                                   repeat(version), strict=False)))
        published = [prediction_stream.entry_fields(
            version, b.last_id or "", t.ticker, b.ids, t.ts_ms, steps, ret, next_price,
            t.price)] if publish else []
        return Outputs(latest=predictions, published=published)
