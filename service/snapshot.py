"""What readers see: immutable predictions, published whole by the ingest loop.

The HTTP layer reads `Engine.snapshot` from another thread; because a snapshot is never
changed after it is published, a reader needs no lock and never waits for the model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from service.types import StreamId

# A prediction as JSON, formatted by hand: json.dumps costs 3x more, per HTTP read. Safe
# because ticker, stream_id and model_version are validated tokens without quotes or
# backslashes, and floats format as repr (shortest round trip).
PREDICTION_JSON = (
    '{{"ticker": "{}", "prediction": {}, "predicted_price": {}, "last_price": {}, '
    '"as_of": {}, "stream_id": "{}", "steps": {}, "model_version": "{}"}}'
)


class Prediction(NamedTuple):
    """A ticker's latest prediction, made right after its tick `stream_id` was applied.

    A NamedTuple, not a frozen dataclass: immutable all the same, and ~5x cheaper to build
    (the loop builds one per moved row per batch).
    """

    ticker: str
    prediction: float  # de-normalised next log return
    predicted_price: float  # last_price * exp(prediction)
    last_price: float
    as_of: int  # the tick's ts, epoch ms
    stream_id: StreamId
    steps: int  # ticks applied to this ticker's row
    model_version: str

    def to_json(self) -> str:
        """json.dumps takes over for floats JSON cannot spell (NaN, inf)."""
        if not math.isfinite(self.prediction + self.predicted_price + self.last_price):
            return json.dumps(self._asdict())
        return PREDICTION_JSON.format(*self)

    @classmethod
    def from_json(cls, text: str | bytes) -> Prediction:
        d = json.loads(text)
        return cls(str(d["ticker"]), float(d["prediction"]), float(d["predicted_price"]),
                   float(d["last_price"]), int(d["as_of"]), str(d["stream_id"]),
                   int(d["steps"]), str(d["model_version"]))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """All latest predictions as of `stream_id` (the last committed entry), and how fresh.

    `fresh_at` is when the loop last confirmed these were current: when they were
    published, or since then when a read found nothing new. A quiet, healthy stream stays
    fresh; a stuck loop (or Redis down) makes it age.
    """

    predictions: Mapping[str, Prediction]
    fresh_at: float  # time.time()
    stream_id: StreamId | None  # None until the first entry is committed

    @classmethod
    def of(cls, predictions: dict[str, Prediction], fresh_at: float,
           stream_id: StreamId | None) -> Snapshot:
        """Wrap a dict the caller hands over (and must not touch again) read-only."""
        return cls(MappingProxyType(predictions), fresh_at, stream_id)


MIN_TOP = 64  # tickers on top before a merge, however small the base
TOP_SHARE = 8  # or an eighth of the base


class LayeredPredictions(Mapping[str, Prediction]):
    """Read-only predictions: a base map, and on top the tickers moved since it was built.

    Publishing a batch copies the top and adds the batch's moved tickers, not all N: a
    dict copy of every ticker per batch cost O(N) each time a few ticks came (at N =
    5,000, 2,000 one-tick batches a second, 10 million entries copied a second). Once the
    top would hold more than an eighth of the base (or 64), or a ticker is evicted, they
    merge into a new base, so a batch copies at most ~N/8 entries, ~N/16 on average with
    distinct tickers. Iteration order is that of `dict(base) | top`, as the full copy had.
    """

    __slots__ = ("_base", "_top")

    def __init__(self, base: Mapping[str, Prediction], top: dict[str, Prediction]) -> None:
        self._base, self._top = base, top

    def __getitem__(self, ticker: str) -> Prediction:
        found = self._top.get(ticker)
        return self._base[ticker] if found is None else found

    def get(self, ticker: str, default: Prediction | None = None) -> Prediction | None:  # type: ignore[override]
        found = self._top.get(ticker)
        return self._base.get(ticker, default) if found is None else found

    def __contains__(self, ticker: object) -> bool:
        return ticker in self._top or ticker in self._base

    def __iter__(self) -> Iterator[str]:
        base = self._base
        yield from base
        yield from (t for t in self._top if t not in base)

    def __len__(self) -> int:  # counted by readers, not by the loop that publishes
        base = self._base
        return len(base) + sum(t not in base for t in self._top)


def with_latest(predictions: Mapping[str, Prediction], latest: list[Prediction],
                evicted: list[str]) -> Mapping[str, Prediction]:
    """`predictions` with a batch's latest ones put in and its evicted tickers taken out;
    `predictions` itself is left as it is (readers may hold it)."""
    if isinstance(predictions, LayeredPredictions):
        base, top = predictions._base, predictions._top
    else:
        base, top = predictions, {}
    if evicted or len(top) + len(latest) > max(MIN_TOP, len(base) // TOP_SHARE):
        merged = dict(base)
        merged.update(top)
        for ticker in evicted:
            merged.pop(ticker, None)
        merged.update((p.ticker, p) for p in latest)
        return MappingProxyType(merged)
    top = dict(top)
    top.update((p.ticker, p) for p in latest)
    return LayeredPredictions(base, top)
