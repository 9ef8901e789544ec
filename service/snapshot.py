"""What readers see: immutable predictions, published whole by the ingest loop.

The HTTP layer reads `Engine.snapshot` from another thread; because a snapshot is never
changed after it is published, a reader needs no lock and never waits for the model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
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
