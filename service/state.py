"""The engine's state: everything the stream prefix up to `cursor` determines.

Registry (ticker -> row), every row's h and c, each row's last tick and step count, the
learner (weights, optimizer, chunks: models/online.py), the live scores
(models/evaluation.py), the cursor and how many stream entries that is. `step` applies an
admitted batch and returns its outputs; `capture` / `from_snapshot` are the two things
recovery needs (as Flink's snapshotState / initializeState).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np

from models.artifact import Artifact
from models.evaluation import Evaluator
from models.features import LastTicks, compute_features
from models.lstm import STATE_DTYPE, LSTMStepper
from models.online import OnlineLearner
from models.rows import grouped, padded
from service import prediction_stream
from service.admit import Batch
from service.commit import Outputs
from service.config import Settings
from service.records import StateError, format_id, parse_id
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
    learner: OnlineLearner  # holds the weights; learns only if `learning`
    learning: bool
    evaluator: Evaluator
    base_version: str  # the artifact's model_version
    cursor: tuple[int, int] = NO_CURSOR  # the last stream entry applied
    entries_read: int | None = None  # entries ever added to the stream up to the cursor

    @classmethod
    def empty(cls, artifact: Artifact, settings: Settings, learner: OnlineLearner,
              tickers: Sequence[str] = ()) -> RowState:
        """A fresh state whose registry holds `tickers` in row order; `learner` (the engine
        keeps one: its tf.function is traced once) goes back to the artifact's weights."""
        registry = Registry(settings.initial_rows, settings.max_tickers,
                            settings.recycle_idle_ms, {t: i for i, t in enumerate(tickers)})
        n = registry.capacity
        learner.reset(n)
        w = artifact.stepper(1)
        return cls(registry, LSTMStepper(w.layers, w.head_w, w.head_b, n), LastTicks.empty(n),
                   np.zeros(n, np.int64), learner, settings.learn,
                   Evaluator(n, settings.eval_halflife), artifact.meta.model_version)

    @classmethod
    def from_snapshot(cls, artifact: Artifact, settings: Settings, learner: OnlineLearner,
                      data: SnapshotData) -> RowState:
        state = cls.empty(artifact, settings, learner, data.tickers)
        k = len(data.tickers)
        rows = np.arange(k)
        state.stepper.set_rows(rows, data.rows)
        state.last.price[rows], state.last.ts_ms[rows] = data.last_price, data.last_ts
        state.steps[rows] = data.steps
        if "learn.weight.0" in data.arrays:
            window = learner.config.window
            if data.arrays["learn.pend_x"].shape[1:2] != (window,):
                raise StateError(
                    f"the snapshot's chunks are {data.arrays['learn.pend_x'].shape[1]} ticks "
                    f"long; LEARN_WINDOW is {window}: set it back, or start a new state")
            learner.import_state(data.arrays, k)
            learner.load_into(state.stepper)
        state.evaluator.import_state(data.arrays, k)
        state.cursor = parse_id(data.cursor) if data.cursor else NO_CURSOR
        state.entries_read = data.entries_read
        return state

    @property
    def model_version(self) -> str:
        """`<base>+<updates>` once the weights have learned; the artifact's before."""
        updates = self.learner.counts.updates
        return f"{self.base_version}+{updates}" if updates else self.base_version

    @property
    def cursor_id(self) -> StreamId | None:
        return None if self.cursor == NO_CURSOR else format_id(self.cursor)

    def capture(self) -> SnapshotData:
        """A copy of the state as it is now, for a snapshot written on another thread."""
        k = len(self.registry)
        rows = np.arange(k)
        return SnapshotData(self.base_version, self.cursor_id, self.entries_read,
                            [self.registry.ticker(r) for r in range(k)],
                            self.stepper.get_rows(rows), self.last.price[:k].copy(),
                            self.last.ts_ms[:k].copy(), self.steps[:k].copy(),
                            self.learner.export_state(k) | self.evaluator.export_state(k))

    def grow(self, n_rows: int) -> None:
        """More batch rows; existing rows keep their state bit-exactly."""
        self.stepper.grow(n_rows)
        self.last = self.last.grown(n_rows)
        self.steps = padded(self.steps, n_rows)
        self.learner.grow(n_rows)
        self.evaluator.grow(n_rows)

    def clear_rows(self, rows: Rows) -> None:
        """A recycled row starts over: no memory, no last tick, no steps, no scores."""
        self.stepper.reset_rows(rows)
        self.last.reset_rows(rows)
        self.steps[rows] = 0
        self.learner.clear_rows(rows)
        self.evaluator.clear_rows(rows)

    def reset_memory(self, row: Row) -> None:
        """A reset control entry: zero h and c (and the learner's history of the row); the
        last tick, step count and scores stay."""
        self.stepper.reset_rows(np.array([row]))
        self.learner.clear_rows(np.array([row]))

    def step(self, b: Batch, artifact: Artifact, publish: bool) -> Outputs:
        """Features, one step over every tick of the batch (split where the learner takes
        an optimizer step), the scores of the predictions standing before, and the
        predictions it makes.

        Nothing here formats a float: Redis gets binary records and columns, HTTP formats
        the one prediction it serves. `publish`: build the predictions stream entries (one
        per model version the batch saw).
        """
        meta, t, rows = artifact.meta, b.ticks, b.rows  # rows: (M,)
        raw, self.last = compute_features(rows, t.price, t.volume, t.ts_ms, self.last)
        out, segments = self._step_and_learn(rows, meta.feature_scaler.transform(raw),
                                             meta.target_scaler.transform(raw[:, 0]))
        ret = meta.target_scaler.inverse(out)  # (M,) next log return
        self.evaluator.observe(rows, raw[:, 0], ret)
        next_price = t.price * np.exp(ret)
        steps, last_of_row = self._count_steps(rows)

        latest = last_of_row.tolist()
        tickers = [t.ticker[i] for i in latest]
        ids = [b.ids[i].decode() for i in latest]
        rets, next_prices, prices, ts, all_steps = (
            col[last_of_row].tolist() for col in (ret, next_price, t.price, t.ts_ms, steps))
        ends = [end for end, _ in segments]
        tick_versions = (repeat(segments[0][1]) if len(segments) == 1 else
                         [segments[j][1] for j in np.searchsorted(ends, last_of_row, "right")])
        # tuple.__new__ builds each NamedTuple in C; Prediction(...) goes through Python
        predictions = list(map(tuple.__new__, repeat(Prediction),
                               zip(tickers, rets, next_prices, prices, ts, ids, all_steps,
                                   tick_versions, strict=False)))
        published = []
        if publish:
            start = 0
            for end, version in segments:
                cut = slice(start, end)
                covers = b.last_id if end == len(rows) else b.ids[end - 1].decode()
                published.append(prediction_stream.entry_fields(
                    version, covers or "", t.ticker[cut], b.ids[cut], t.ts_ms[cut],
                    steps[cut], ret[cut], next_price[cut], t.price[cut]))
                start = end
        return Outputs(latest=predictions, published=published)

    def _step_and_learn(self, rows: np.ndarray, x: np.ndarray, y: np.ndarray
                        ) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Every tick stepped, in order; where the learner's plan puts an optimizer step,
        the ticks up to it with the weights before, the rest with the weights after.
        Returns the outputs (M,) and the segments: (end, model_version) of each run of
        ticks one model version stepped."""
        updates = self.learner.plan(rows, x, y) if self.learning else []
        if not updates:
            return self.stepper.step_ticks(rows, x), [(len(rows), self.model_version)]
        out = np.empty(len(rows), STATE_DTYPE)
        segments, start = [], 0
        for u in updates:  # positions strictly increase: one chunk, one row, per tick
            end = u.position + 1
            out[start:end] = self.stepper.step_ticks(rows[start:end], x[start:end])
            segments.append((end, self.model_version))
            if self.learner.train(u):
                self.learner.load_into(self.stepper)
            start = end
        if start < len(rows):
            out[start:] = self.stepper.step_ticks(rows[start:], x[start:])
            segments.append((len(rows), self.model_version))
        return out, segments

    def _count_steps(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each tick's row's step count after it (M,), and each moved row's last tick."""
        m = len(rows)
        order = grouped(rows)  # each row's ticks together, in order
        sorted_rows = rows[order]
        starts = np.flatnonzero(np.concatenate(([True], sorted_rows[1:] != sorted_rows[:-1])))
        ends = np.append(starts[1:], m)
        rank = np.empty(m, np.intp)
        rank[order] = np.arange(m) - np.repeat(starts, ends - starts)
        steps = self.steps[rows] + rank + 1
        last_of_row = order[ends - 1]
        self.steps[sorted_rows[starts]] = steps[last_of_row]
        return steps, last_of_row
