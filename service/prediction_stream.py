"""The predictions stream: every prediction the loop makes, for downstream consumers.

ONE entry per committed batch, its predictions as columns, not one entry per tick: a
per-tick XADD costs Redis ~4-6 us of CPU (parsing, listpack, AOF) and the loop ~3 us of
float formatting, as much as all the rest of a tick's work; a batch's columns cost a few
C calls. Numbers are raw little-endian binary (exact, like the state rows), names text.

Fields of an entry (`FORMAT` names this layout; a change to it gets a new name):
  format         FORMAT
  model_version  the model that made the predictions
  stream_id      the last tick stream entry the batch covers
  count          n, the batch's applied ticks, in stream order
  ticker         n tickers, space-separated
  tick_id        n tick stream IDs, space-separated
  as_of          n x int64   the tick's ts, epoch ms
  steps          n x int64   ticks applied to the ticker's row, this one included
  prediction     n x float64 predicted next log return
  predicted_price, last_price   n x float64 each
`stream_predictions` decodes entries into `Prediction`s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from service.snapshot import Prediction
from service.types import StreamId

FORMAT = "tickstream.predictions.v1"
_INTS = "<i8"
_FLOATS = "<f8"


def entry_fields(model_version: str, stream_id: StreamId, tickers: Sequence[str],
                 tick_ids: Sequence[bytes], as_of: np.ndarray, steps: np.ndarray,
                 prediction: np.ndarray, predicted_price: np.ndarray,
                 last_price: np.ndarray) -> list[str | bytes | int]:
    """One batch's predictions as XADD field/value arguments."""
    return ["format", FORMAT, "model_version", model_version, "stream_id", stream_id,
            "count", len(tickers), "ticker", " ".join(tickers), "tick_id", b" ".join(tick_ids),
            "as_of", as_of.astype(_INTS).tobytes(), "steps", steps.astype(_INTS).tobytes(),
            "prediction", prediction.astype(_FLOATS).tobytes(),
            "predicted_price", predicted_price.astype(_FLOATS).tobytes(),
            "last_price", last_price.astype(_FLOATS).tobytes()]


def predictions_of(fields: Sequence[str | bytes | int]) -> list[Prediction]:
    """The predictions in `entry_fields`' output, as a consumer would read them back."""
    raw = {str(k).encode(): v if isinstance(v, bytes) else str(v).encode()
           for k, v in zip(fields[0::2], fields[1::2], strict=True)}
    return stream_predictions([(b"0-0", raw)])


def stream_predictions(entries: Iterable[tuple[bytes, Mapping[bytes, bytes]]]
                       ) -> list[Prediction]:
    """Every prediction in predictions-stream entries (an XRANGE or XREAD reply's list of
    entries), in stream order; ValueError for an entry of another format."""
    out: list[Prediction] = []
    for entry_id, f in entries:
        if f.get(b"format") != FORMAT.encode():
            raise ValueError(f"predictions entry {entry_id!r} is not {FORMAT}: "
                             f"format {f.get(b'format')!r}")
        n = int(f[b"count"])
        tickers, ids = f[b"ticker"].decode().split(), f[b"tick_id"].decode().split()
        ints = [np.frombuffer(f[k], _INTS).tolist() for k in (b"as_of", b"steps")]
        floats = [np.frombuffer(f[k], _FLOATS).tolist()
                  for k in (b"prediction", b"predicted_price", b"last_price")]
        if any(len(column) != n for column in (tickers, ids, *ints, *floats)):
            raise ValueError(f"predictions entry {entry_id!r}: columns are not {n} long")
        version = f[b"model_version"].decode()
        (as_of, steps), (ret, next_price, price) = ints, floats
        out += map(Prediction, tickers, ret, next_price, price, as_of, ids, steps,
                   [version] * n)
    return out
