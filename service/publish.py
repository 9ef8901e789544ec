"""Publishing, the loop's last stage: what readers see of the state, swapped whole.

The loop thread is the only writer here; HTTP threads only read. Every attribute but
`served` is replaced by a new object and never changed in place, so a reader that took one
(a snapshot, the ticker map, a copy of the scores) holds a consistent view however far the
loop has gone since, with no lock and no wait for the model. `served` is the one object
both sides share: readers wait on it, the loop announces to it (service/served_waits.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType

from models.evaluation import Evaluator, Quality
from service.commit import Outputs
from service.registry import Registry
from service.served_waits import ServedWaits
from service.snapshot import Prediction, Snapshot, with_latest
from service.state import RowState
from service.types import Cursor, Row, StreamId

SCORES_EVERY_S = 0.25  # the live scores readers see are copied at most this often


class Published:
    """The latest predictions, who waits for them, the ticker map and the live scores."""

    def __init__(self, registry: Registry, evaluator: Evaluator) -> None:
        self.snapshot = Snapshot.of({}, time.time(), None)
        self.served = ServedWaits()  # readers waiting for an entry's outputs (?after=)
        self.tickers: Mapping[str, Row] = MappingProxyType({})
        self.capacity = registry.capacity
        self.scores = evaluator.copy(0)  # row r is the ticker `tickers` maps to r
        self._scores_at = 0.0
        self._scores_cursor: Cursor | None = None  # the state's cursor at the last copy

    def batch(self, outputs: Outputs, cursor: Cursor) -> None:
        """A stepped batch: its predictions readable, the readers waiting for it answered."""
        old = self.snapshot
        predictions = old.predictions
        if outputs.latest or outputs.evicted:
            predictions = with_latest(predictions, outputs.latest, outputs.evicted)
        self.snapshot = Snapshot(predictions, time.time(), outputs.cursor or old.stream_id)
        self.served.reached(cursor)

    def restored(self, predictions: dict[str, Prediction] | None,
                 output_id: StreamId | None, output_cursor: Cursor) -> None:
        """After a restore, the outputs Redis holds (up to `output_cursor`), and readers
        wait on from there (it may be behind what was served: a Redis that lost it); None:
        what is served stands as it is (model_version and freshness too: recovery.restore
        says when)."""
        if predictions is not None:
            self.snapshot = Snapshot.of(predictions, time.time(), output_id)
            self.served.restart(output_cursor)
        self._scores_cursor = None

    def current(self) -> None:
        """The loop found nothing newer in the stream: the predictions are fresh now."""
        self.snapshot = replace(self.snapshot, fresh_at=time.time())

    def registry(self, registry: Registry) -> None:
        self.tickers = MappingProxyType(registry.as_dict())
        self.capacity = registry.capacity

    def scores_of(self, state: RowState, force: bool = False) -> None:
        """A copy of the live scores, if anything was scored since the last: when caught up
        (`force`), else at most every SCORES_EVERY_S (a copy is O(rows))."""
        now = time.monotonic()
        if state.cursor != self._scores_cursor and (force or now - self._scores_at
                                                    >= SCORES_EVERY_S):
            self._scores_at, self._scores_cursor = now, state.cursor
            self.scores = state.evaluator.copy(len(state.registry))

    def quality(self, ticker: str) -> Quality | None:
        """The ticker's live scores as of the last copy; None for a ticker without a row
        (or one newer than the copy)."""
        row, scores = self.tickers.get(ticker), self.scores
        return None if row is None or row >= len(scores) else scores.row(row)

    def skills(self) -> Callable[[str], float | None]:
        """ticker -> its live weighted skill (None: not scored yet), from one copy."""
        rows, skills = self.tickers, self.scores.skills()

        def skill(ticker: str) -> float | None:
            row = rows.get(ticker)
            return None if row is None or row >= len(skills) else skills[row]

        return skill
