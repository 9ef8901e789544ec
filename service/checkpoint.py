"""The persisted state in Redis, and the one MULTI/EXEC that moves it forward.

Everything a restart needs lives under one key prefix per model and changes in a single
transaction together with the XACK of the entries it covers, so Redis never holds a state
that is ahead of or behind its cursor (DESIGN.md invariant 2: exactly once).

Keys (prefix `tickstream:{name}:`):
  rows         hash  ticker -> row
  state        hash  row -> header + the row's h, c of every layer (raw float32 LE)
  last         hash  row -> record (price, ts_ms) of the row's last applied tick
  cursor       str   the last stream ID processed (applied or dead-lettered)
  predictions  hash  ticker -> record of its latest Prediction (incl. steps) + stream ID
  model        str   model_version that wrote the state: other weights must not resume it
The lease key `owner` (service/lease.py) lives under the same prefix. Records are fixed
little-endian binary with a magic (see LAST_MAGIC, PREDICTION_MAGIC); earlier versions'
text and JSON are still read.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from service.config import Settings
from service.redis_io import Command, Link, bulk_command, transaction
from service.snapshot import Prediction
from service.types import Row, Rows, StreamId

MAGIC = b"TSRS"  # TickStream Row State
VERSION = 1
HEADER = struct.Struct("<4sHI")  # magic, format version, number of float32 that follow
ROW_DTYPE = np.dtype("<f4")


class CheckpointError(RuntimeError):
    """Persisted bytes this code must not resume from; the message says what to do."""


@dataclass(frozen=True)
class Layout:
    """Every key and stream the engine reads or writes."""

    rows: str
    state: str
    last: str
    cursor: str
    predictions: str
    model: str
    stream: str
    dead_stream: str
    predictions_stream: str
    predictions_maxlen: int  # 0: no predictions stream
    group: str

    @classmethod
    def from_settings(cls, s: Settings) -> Layout:
        p = s.key_prefix
        return cls(f"{p}rows", f"{p}state", f"{p}last", f"{p}cursor", f"{p}predictions",
                   f"{p}model", s.stream, s.dead_stream, s.predictions_stream,
                   s.predictions_maxlen, s.group)


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
        raise CheckpointError(f"row state of {len(blob)} bytes is shorter than its header")
    magic, version, n = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CheckpointError(f"row state starts with {magic!r}, not {MAGIC!r}: not ours")
    if version != VERSION:
        raise CheckpointError(f"row state format v{version}; this code reads v{VERSION}")
    if n != n_floats or len(blob) != HEADER.size + 4 * n:
        raise CheckpointError(
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
            raise CheckpointError(f"last tick {blob[:40]!r} is not 'price ts_ms'") from None
    if not math.isfinite(price) or price < 0:
        raise CheckpointError(f"last tick price {price!r} is not finite and >= 0")
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


@dataclass
class Restored:
    """What Redis holds for this model; empty on a first start."""

    rows: dict[str, Row]
    state_rows: Rows  # (k,)
    state: np.ndarray  # (k, S) float32
    last_rows: Rows  # (j,)
    last_price: np.ndarray  # (j,) float64
    last_ts: np.ndarray  # (j,) int64
    cursor: StreamId | None
    predictions: dict[str, Prediction]


def load(client: redis.Redis, layout: Layout, n_floats: int, model_version: str) -> Restored:
    """Read every key in one transaction (a consistent view) and check it all fits."""
    pipe = client.pipeline(transaction=True)
    for key in (layout.rows, layout.state, layout.last, layout.predictions):
        pipe.hgetall(key)
    pipe.mget(layout.cursor, layout.model)
    rows_raw, state_raw, last_raw, pred_raw, (cursor, model) = pipe.execute()
    if model is not None and model.decode() != model_version:
        raise CheckpointError(
            f"the state under {layout.model.removesuffix('model')} was written by model "
            f"{model.decode()}, this is {model_version}: pick another TICKSTREAM_NAME or "
            "delete those keys to start this model fresh"
        )
    try:
        rows = {k.decode(): int(v) for k, v in rows_raw.items()}
        state_rows = np.array([int(r) for r in state_raw], np.intp)
        last_rows = np.array([int(r) for r in last_raw], np.intp)
        predictions = {k.decode(): decode_prediction(k.decode(), v, model_version)
                       for k, v in pred_raw.items()}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"unreadable checkpoint under {layout.rows}: {e}") from e
    state = np.array([decode_row(b, n_floats) for b in state_raw.values()], np.float32)
    last = [decode_last(v) for v in last_raw.values()]
    n = len(rows)
    if any(not 0 <= r < n for r in (*state_rows, *last_rows)) or not set(predictions) <= set(rows):
        raise CheckpointError(f"checkpoint state/predictions refer to rows beyond its {n} tickers")
    return Restored(
        rows=rows, state_rows=state_rows, state=state.reshape(len(state_rows), n_floats),
        last_rows=last_rows, last_price=np.array([p for p, _ in last], np.float64),
        last_ts=np.array([t for _, t in last], np.int64),
        cursor=cursor.decode() if cursor is not None else None, predictions=predictions,
    )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    fields: Mapping[bytes, bytes]  # the entry as it came, undecoded
    reason: str
    source_id: StreamId


@dataclass
class Changes:
    """One batch's effect; `commit` writes it all or nothing."""

    rows: Rows = field(default_factory=lambda: np.zeros(0, np.intp))  # (k,) changed rows
    state: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # (k, S)
    last_price: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (k,)
    last_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (k,)
    added: dict[str, Row] = field(default_factory=dict)
    evicted: list[str] = field(default_factory=list)
    cursor: StreamId | None = None
    latest: Sequence[Prediction] = ()
    # the predictions stream entry's fields (service/prediction_stream.py)
    published: Sequence[str | bytes | int] = ()
    dead: Sequence[DeadLetter] = ()
    ack: Sequence[bytes] = ()


def commands(layout: Layout, model_version: str, c: Changes) -> list[Command]:
    """The commands that write one batch's changes and XACK its entries (to run in ONE
    MULTI/EXEC): argument tuples, or the big ones already packed by `bulk_command`."""
    cmds: list[Command] = []
    if len(c.rows):
        keys = [b"%d" % r for r in c.rows.tolist()]
        cmds.append(bulk_command(b"HSET", layout.state.encode(),
                                 *_pairs(keys, encode_rows(c.state))))
        cmds.append(bulk_command(b"HSET", layout.last.encode(),
                                 *_pairs(keys, encode_last(c.last_price, c.last_ts))))
        cmds.append(("SET", layout.model, model_version))
    if c.evicted:
        cmds.append(("HDEL", layout.rows, *c.evicted))
        cmds.append(("HDEL", layout.predictions, *c.evicted))
    if c.added:
        cmds.append(("HSET", layout.rows, *_pairs(c.added, c.added.values())))
    if c.latest:
        tickers = [p.ticker.encode() for p in c.latest]
        cmds.append(bulk_command(b"HSET", layout.predictions.encode(),
                                 *_pairs(tickers, encode_predictions(c.latest))))
    if c.cursor is not None:
        cmds.append(("SET", layout.cursor, c.cursor))
    for d in c.dead:
        letter = {**d.fields, b"reason": d.reason, b"source_id": d.source_id}
        cmds.append(("XADD", layout.dead_stream, "*", *_pairs(letter, letter.values())))
    if layout.predictions_maxlen and c.published:
        cmds.append(("XADD", layout.predictions_stream, "MAXLEN", "~",
                     layout.predictions_maxlen, "*", *c.published))
    if c.ack:
        cmds.append(bulk_command(b"XACK", layout.stream.encode(), layout.group.encode(),
                                 *c.ack))
    return cmds


def _pairs(keys: Iterable[Any], values: Iterable[Any]) -> list[Any]:
    """k1, v1, k2, v2, ...: a mapping as HSET / XADD arguments (slice assignment: C speed)."""
    keys, values = list(keys), list(values)
    if len(keys) != len(values):
        raise ValueError(f"{len(keys)} keys for {len(values)} values")
    out: list[Any] = [None] * (2 * len(keys))
    out[0::2], out[1::2] = keys, values
    return out


def commit(client: redis.Redis, layout: Layout, model_version: str, c: Changes) -> None:
    """Write one batch's changes and XACK its entries in ONE MULTI/EXEC, and wait for it."""
    link = Link(client)
    try:
        cmds = commands(layout, model_version, c)
        link.send(transaction(cmds), len(cmds) + 2)
        link.read_transaction(len(cmds))
    finally:
        link.close()
