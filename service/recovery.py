"""What a restore needs besides the snapshot itself: a first snapshot when there is none,
and how many entries after it are still to replay (refusing a gap).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import redis

from service.config import Settings
from service.layout import Layout
from service.migrate import drop_legacy, has_legacy_state, load_legacy
from service.reader import entries_read_at, last_id, stream_counts
from service.records import StateError
from service.snapshots import SnapshotData, SnapshotStore
from service.state import RowState

log = logging.getLogger(__name__)


def first_snapshot(client: redis.Redis, layout: Layout, store: SnapshotStore,
                   settings: Settings, row_floats: int, model_version: str) -> SnapshotData:
    """No snapshot yet: convert the per-batch checkpoint layout, or start empty where
    START_FROM says. Written at once, so the start position is pinned."""
    stream = settings.stream
    if has_legacy_state(client, layout):
        data = load_legacy(client, layout, row_floats, model_version)
        data = replace(data, entries_read=entries_read_at(client, stream, data.cursor))
        store.write(data)
        drop_legacy(client, layout)
        log.info("ingest: converted the per-batch checkpoint of %d tickers at %s into a "
                 "snapshot", len(data.tickers), data.cursor)
        return data
    cursor = None if settings.start_from == "begin" else last_id(client, stream)
    empty = np.zeros(0)
    data = SnapshotData(model_version, cursor, entries_read_at(client, stream, cursor), [],
                        np.zeros((0, row_floats), np.float32), empty, empty.astype(np.int64),
                        empty.astype(np.int64))
    store.write(data)
    return data


def entries_behind(client: redis.Redis, settings: Settings,
                   state: RowState) -> tuple[int | None, int]:
    """Entries after the snapshot's cursor still to replay (None: Redis < 7 cannot count
    them), and how many were trimmed away unread: refused unless ACCEPT_GAP, then counted
    as read."""
    length, added, _ = stream_counts(client, settings.stream)
    if added is None or state.entries_read is None:
        return None, 0
    gone = (added - length) - state.entries_read
    if gone <= 0:
        return added - state.entries_read, 0
    what = (f"{gone} entries of {settings.stream} after the snapshot's cursor "
            f"{state.cursor_id} were trimmed or deleted before this engine read them")
    if not settings.accept_gap:
        raise StateError(f"{what}; their ticks are lost. Set TICKSTREAM_ACCEPT_GAP=true to "
                         "go on without them")
    log.warning("ingest: %s; going on without them (ACCEPT_GAP)", what)
    state.entries_read += gone
    return added - state.entries_read, gone
