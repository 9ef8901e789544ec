"""From the per-batch checkpoint layout (before snapshots) to a first snapshot, once.

That layout kept every row's state in Redis, rewritten per batch: `rows` (ticker -> row),
`state` (row -> header + h, c), `last` (row -> last tick), `cursor`, next to the
`predictions` hash and `model` key that the snapshot layout keeps. On its first start a
newer engine reads them, writes them as a snapshot at their cursor (its outputs were all
written, so the output cursor is that cursor too) and deletes the old keys.
"""

from __future__ import annotations

import numpy as np
import redis

from service.layout import Layout
from service.records import StateError, decode_last, decode_prediction, decode_row
from service.snapshots import SnapshotData


def has_legacy_state(client: redis.Redis, layout: Layout) -> bool:
    return bool(client.exists(layout.legacy("rows"), layout.legacy("cursor")))


def load_legacy(client: redis.Redis, layout: Layout, row_floats: int,
                model_version: str) -> SnapshotData:
    """The old layout's state as a snapshot (entries_read still to be filled in)."""
    pipe = client.pipeline(transaction=True)  # one consistent view
    for name in ("rows", "state", "last"):
        pipe.hgetall(layout.legacy(name))
    pipe.hgetall(layout.predictions)
    pipe.mget(layout.legacy("cursor"), layout.model)
    rows_raw, state_raw, last_raw, pred_raw, (cursor, model) = pipe.execute()
    where = f"{layout.prefix}rows/state/last/cursor"
    if model is not None and model.decode() != model_version:
        raise StateError(
            f"the state in {where} was written by model {model.decode()}, this is "
            f"{model_version}: pick another TICKSTREAM_NAME or delete those keys to start "
            "this model fresh")
    try:
        rows = {k.decode(): int(v) for k, v in rows_raw.items()}
        k = len(rows)
        tickers = sorted(rows, key=rows.__getitem__)
        if [rows[t] for t in tickers] != list(range(k)):
            raise ValueError("rows are not 0..k-1")
        state = np.zeros((k, row_floats), np.float32)
        for row, blob in state_raw.items():
            state[int(row)] = decode_row(blob, row_floats)
        last_price, last_ts = np.zeros(k), np.zeros(k, np.int64)
        for row, blob in last_raw.items():
            last_price[int(row)], last_ts[int(row)] = decode_last(blob)
        steps = np.zeros(k, np.int64)
        for ticker, blob in pred_raw.items():
            name = ticker.decode()
            steps[rows[name]] = decode_prediction(name, blob, model_version).steps
    except (ValueError, KeyError, IndexError, UnicodeDecodeError) as e:
        raise StateError(f"unreadable state in {where} ({type(e).__name__}: {e}); delete "
                         "those keys to start fresh") from None
    return SnapshotData(model_version, cursor.decode() if cursor else None, None, tickers,
                        state, last_price, last_ts, steps)


def drop_legacy(client: redis.Redis, layout: Layout) -> None:
    client.delete(*(layout.legacy(name) for name in ("rows", "state", "last", "cursor")))
