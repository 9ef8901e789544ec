"""What readers see: immutable predictions, published whole by the ingest loop.

The HTTP layer reads `Engine.snapshot` from another thread; because a snapshot is never
changed after it is published, a reader needs no lock and never waits for the model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType

from service.types import StreamId


@dataclass(frozen=True, slots=True)
class Prediction:
    """A ticker's latest prediction, made right after its tick `stream_id` was applied."""

    ticker: str
    prediction: float  # de-normalised next log return
    predicted_price: float  # last_price * exp(prediction)
    last_price: float
    as_of: int  # the tick's ts, epoch ms
    stream_id: StreamId
    steps: int  # ticks applied to this ticker's row
    model_version: str

    def to_json(self) -> str:
        """Formatted by hand: json.dumps costs 3x more, per ticker, per batch.

        Safe because ticker, stream_id and model_version are validated tokens without
        quotes or backslashes; json.dumps takes over for floats JSON cannot spell.
        """
        if not math.isfinite(self.prediction + self.predicted_price + self.last_price):
            return json.dumps(asdict(self))
        return (
            f'{{"ticker": "{self.ticker}", "prediction": {self.prediction!r}, '
            f'"predicted_price": {self.predicted_price!r}, "last_price": {self.last_price!r}, '
            f'"as_of": {self.as_of}, "stream_id": "{self.stream_id}", "steps": {self.steps}, '
            f'"model_version": "{self.model_version}"}}'
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Prediction:
        d = json.loads(text)
        return cls(str(d["ticker"]), float(d["prediction"]), float(d["predicted_price"]),
                   float(d["last_price"]), int(d["as_of"]), str(d["stream_id"]),
                   int(d["steps"]), str(d["model_version"]))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """All latest predictions as of `stream_id` (the last committed entry), and when."""

    predictions: Mapping[str, Prediction]
    published_at: float  # time.time() at publication
    stream_id: StreamId | None  # None until the first entry is committed

    @classmethod
    def of(cls, predictions: dict[str, Prediction], published_at: float,
           stream_id: StreamId | None) -> Snapshot:
        """Wrap a dict the caller hands over (and must not touch again) read-only."""
        return cls(MappingProxyType(predictions), published_at, stream_id)
