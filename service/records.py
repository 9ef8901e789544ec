"""Binary records the service keeps in Redis: exact, fixed little-endian, never pickle.

Row state blobs (h, c of every layer), last ticks and latest predictions. The per-batch
commit writes prediction records (`tickstream:{name}:predictions`, ticker -> record); the
row and last-tick records are what the layout before snapshots kept per row, read once
by service/migrate.py. Stream IDs order as `parse_id` says.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from service.snapshot import Prediction
from service.types import StreamId

MAGIC = b"TSRS"  # TickStream Row State
VERSION = 1
HEADER = struct.Struct("<4sHI")  # magic, format version, number of float32 that follow
ROW_DTYPE = np.dtype("<f4")


class StateError(RuntimeError):
    """Persisted state this code must not resume from; the message says what to do."""


def encode_rows(packed: np.ndarray) -> list[bytes]:
    """(k, S) float32 -> k blobs of header + S little-endian float32, bit for bit."""
    k, n = packed.shape
    body = np.ascontiguousarray(packed, ROW_DTYPE).view(np.uint8).reshape(k, 4 * n)
    header = np.frombuffer(HEADER.pack(MAGIC, VERSION, n), np.uint8)
    raw = np.concatenate([np.broadcast_to(header, (k, HEADER.size)), body], axis=1).tobytes()
    width = HEADER.size + 4 * n
    return [raw[i * width : (i + 1) * width] for i in range(k)]


def decode_row(blob: bytes, n_floats: int) -> np.ndarray:
    """One blob -> (n_floats,) float32, refusing anything not written by `encode_rows`."""
    if len(blob) < HEADER.size:
        raise StateError(f"row state of {len(blob)} bytes is shorter than its header")
    magic, version, n = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise StateError(f"row state starts with {magic!r}, not {MAGIC!r}: not ours")
    if version != VERSION:
        raise StateError(f"row state format v{version}; this code reads v{VERSION}")
    if n != n_floats or len(blob) != HEADER.size + 4 * n:
        raise StateError(
            f"row state holds {n} floats in {len(blob)} bytes; the model needs {n_floats} "
            "(a model with other units wrote it?)"
        )
    return np.frombuffer(blob, ROW_DTYPE, n, HEADER.size).astype(np.float32)


# The last tick and latest prediction of each row, as fixed binary records (+ the stream
# ID): exact, and written without formatting a float (repr of the floats of ~430 rows per
# batch cost ~2 ms). Earlier versions wrote "price ts_ms" text and JSON: still read.
LAST_MAGIC = b"TSL1"
_LAST = np.dtype([("magic", "S4"), ("price", "<f8"), ("ts_ms", "<i8")])
PREDICTION_MAGIC = b"TSP1"
_PREDICTION = np.dtype([("magic", "S4"), ("prediction", "<f8"), ("predicted_price", "<f8"),
                        ("last_price", "<f8"), ("as_of", "<i8"), ("steps", "<i8")])


def _records(rec: np.ndarray) -> list[bytes]:
    raw, width = rec.tobytes(), rec.dtype.itemsize
    return [raw[i : i + width] for i in range(0, len(raw), width)]


def encode_last(price: np.ndarray, ts_ms: np.ndarray) -> list[bytes]:
    """(k,) prices and ts -> k records."""
    rec = np.empty(len(price), _LAST)
    rec["magic"], rec["price"], rec["ts_ms"] = LAST_MAGIC, price, ts_ms
    return _records(rec)


def decode_last(blob: bytes) -> tuple[float, int]:
    if blob[:4] == LAST_MAGIC and len(blob) == _LAST.itemsize:
        r = np.frombuffer(blob, _LAST)[0]
        price, ts_ms = float(r["price"]), int(r["ts_ms"])
    else:
        try:
            price_s, ts_s = blob.split()  # the text of earlier versions
            price, ts_ms = float(price_s), int(ts_s)
        except ValueError:
            raise StateError(f"last tick {blob[:40]!r} is not 'price ts_ms'") from None
    if not math.isfinite(price) or price < 0:
        raise StateError(f"last tick price {price!r} is not finite and >= 0")
    return price, ts_ms


def encode_predictions(latest: Sequence[Prediction]) -> list[bytes]:
    """Each prediction as a record followed by its stream ID (the ticker is the hash field,
    the model version the `model` key)."""
    if not latest:
        return []
    _, ret, next_price, price, as_of, stream_ids, steps, _ = zip(*latest, strict=True)
    rec = np.empty(len(latest), _PREDICTION)
    rec["magic"], rec["prediction"], rec["predicted_price"] = PREDICTION_MAGIC, ret, next_price
    rec["last_price"], rec["as_of"], rec["steps"] = price, as_of, steps
    return [head + sid.encode() for head, sid in zip(_records(rec), stream_ids, strict=True)]


def decode_prediction(ticker: str, blob: bytes, model_version: str) -> Prediction:
    if blob[:4] != PREDICTION_MAGIC:
        return Prediction.from_json(blob)  # the JSON of earlier versions
    if len(blob) <= _PREDICTION.itemsize:
        raise ValueError(f"prediction record of {len(blob)} bytes has no stream ID")
    r = np.frombuffer(blob, _PREDICTION, 1)[0]
    return Prediction(ticker, float(r["prediction"]), float(r["predicted_price"]),
                      float(r["last_price"]), int(r["as_of"]),
                      blob[_PREDICTION.itemsize :].decode(), int(r["steps"]), model_version)


def parse_id(stream_id: StreamId) -> tuple[int, int]:
    """'ms-seq' -> (ms, seq), which orders like the stream does."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def format_id(stream_id: tuple[int, int]) -> StreamId:
    return f"{stream_id[0]}-{stream_id[1]}"
