"""A restore: the current snapshot (a first one when there is none), how many entries
after it are still to replay (refusing a gap), and the outputs already written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import redis

from models.artifact import Artifact
from models.online import OnlineLearner
from service.config import Settings
from service.layout import Layout
from service.migrate import drop_legacy, has_legacy_state, load_legacy
from service.reader import entries_read_at, last_id, stream_counts
from service.records import StateError, decode_prediction, parse_id
from service.snapshot import Prediction
from service.snapshots import SnapshotData, SnapshotStore
from service.state import NO_CURSOR, RowState
from service.types import Cursor, StreamId

log = logging.getLogger(__name__)


@dataclass
class Restored:
    """What the loop resumes from."""

    state: RowState  # as of the snapshot's cursor
    fresh: bool  # there was no snapshot: a new state
    behind: int | None  # entries after the cursor to replay (None: cannot be counted)
    gone: int  # entries trimmed away unread, gone on without (ACCEPT_GAP)
    output_id: StreamId | None  # the outputs of entries up to here are in Redis
    # the latest ones written, per ticker; None: what this process serves stands (see
    # `restore`), Redis's copy was not read
    predictions: dict[str, Prediction] | None

    @property
    def output_cursor(self) -> Cursor:
        return parse_id(self.output_id) if self.output_id else NO_CURSOR


def restore(client: redis.Redis, layout: Layout, store: SnapshotStore, settings: Settings,
            artifact: Artifact, learner: OnlineLearner, row_floats: int,
            served: StreamId | None) -> Restored:
    """Load the current snapshot and the outputs written after it (StateError: a gap, or
    a snapshot this model must not resume). `served`: the last entry this process served;
    what it serves stands if Redis holds those outputs, or if it is ahead of them with that
    entry still in the stream (a commit was lost: the replay recomputes and commits the
    very same predictions). Else (FLUSHALL, the stream deleted; or, only with ACCEPT_GAP,
    trimmed by someone else) Redis's outputs replace it."""
    base_version = artifact.meta.model_version
    store.load_scripts()
    data = store.load(row_floats, base_version)
    fresh = data is None
    if data is None:
        data = first_snapshot(client, layout, store, settings, row_floats, base_version)
    state = RowState.from_snapshot(artifact, settings, learner, data)
    behind, gone = entries_behind(client, settings, state)
    out_raw = client.get(layout.output_cursor)
    output_id = out_raw.decode() if out_raw else None
    output_cursor = parse_id(output_id) if output_id else NO_CURSOR
    at = None if served is None else parse_id(served)
    if at is not None and (at == output_cursor or (
            at > output_cursor and client.xrange(settings.stream, served, served, count=1))):
        return Restored(state, fresh, behind, gone, output_id, None)
    predictions = {k.decode(): decode_prediction(k.decode(), v, state.model_version)
                   for k, v in client.hgetall(layout.predictions).items()}
    return Restored(state, fresh, behind, gone, output_id, predictions)


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
