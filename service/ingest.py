"""The ingest loop: read → admit → step → commit outputs → publish; now and then, snapshot.

One background thread owns the state (service/state.py). The tick stream is the log:
the state after entry p is a pure function of the artifact, the settings and the entries
up to p, so it is only snapshotted now and then (service/snapshots.py); per batch, ONE
fenced Lua call writes the batch's outputs and the output cursor (service/commit.py).
Recovery loads the current snapshot and replays the stream from its cursor: entries up
to the output cursor are recomputed without writing their outputs again, then the loop
goes live. Readers (the HTTP layer) only ever see immutable snapshots of the predictions,
so they never wait for the model; a batch is served once stepped, before its commit (a
replay after any failure recomputes the very same predictions).

When the loop is behind, it pipelines: while it steps batch k (Python, this core), Redis
(the other core) runs batch k-1's commit and reads batch k+1. Batch k's commit is sent
only once k-1's is confirmed; any failure reloads the state from the snapshot and replays.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

import redis

from models.artifact import Artifact
from models.evaluation import Evaluator, Quality
from models.online import OnlineLearner
from models.ticks import InvalidTick, normalize_ticker
from service import malloc
from service.apply import apply_entries
from service.commit import COMMIT_LUA, Outputs, commit_command, raise_if_lease_lost
from service.config import Settings
from service.entries import CONTROL, RawEntry, TickerCache, ids_of, parse_entries, stream_ms
from service.layout import Layout
from service.lease import Lease, LeaseLost
from service.loop_figures import Counters, Health, Replay, describe_model
from service.membership import process_of
from service.publish import Published
from service.reader import TickReader, stream_counts
from service.records import format_id, parse_id
from service.recovery import restore
from service.redis_io import Link, connect
from service.served_waits import ServedWaits
from service.snapshot import Snapshot
from service.snapshots import SnapshotData, SnapshotStore, SnapshotWriter
from service.state import NO_CURSOR, RowState
from service.types import Row

log = logging.getLogger(__name__)

LAG_POLL_S = 1.0  # XINFO STREAM at most this often
REPLAY_LOG_S = 2.0  # a "replaying n of m entries" line at most this often
RESET_TIMEOUT_S = 5.0
CURRENT_WINDOW_S = 1.0  # caught up this recently still counts as keeping up (/readyz)
GC_YOUNG_THRESHOLD = 20_000  # allocations between young GC collections (Python: 700)


@dataclass
class _Prepared:
    """A stepped batch whose outputs are not yet confirmed (a live one is served already)."""

    outputs: Outputs
    cursor: tuple[int, int]
    live: bool  # its outputs are to be written (False: replayed, in Redis already)
    entries: int
    tickers_changed: bool
    step_seconds: float = 0.0
    started: float = 0.0  # perf_counter() when its preparation began
    sent_at: float = 0.0  # time.monotonic() when its commit went out (it renews the lease)
    first_ms: int = 0  # stream-ID time of its first (oldest) entry, epoch ms
    packed: bytes = b""  # a live batch's commit, built once the batch is served


class Engine:
    """Consumes the tick stream into the row-pinned LSTM; serves snapshots of predictions."""

    def __init__(self, settings: Settings, artifact: Artifact, redis_url: str) -> None:
        self.settings = settings
        self.artifact = artifact
        self.base_version = artifact.meta.model_version
        self._learner = OnlineLearner(artifact.model, settings.learn_config, 1)
        if settings.learn:  # part of loading the model: the first update must not stall
            self._learner.warm_up()  # the loop for its tracing (~0.5 s)
        self._row_floats = artifact.stepper(1).row_state_size
        self._layout = Layout.from_settings(settings)
        self._client = connect(redis_url, settings.block_ms)
        self._link = Link(self._client)  # the loop's pipelined connection
        self._lease = Lease(self._client, self._layout.owner, settings.lease_ttl_s)
        self._reader = TickReader(self._link, settings.stream, settings.batch_count,
                                  settings.block_ms)
        self._store = SnapshotStore(self._client, self._layout, self._lease.token,
                                    settings.tick_retention_ms)
        self._snapshots = SnapshotWriter(self._store)
        self._commit_sha = ""
        self._standby = False  # another engine holds the lease: wait, read nothing
        self._names = TickerCache(shard=settings.shard)
        # loop-thread state, replaced whole by _restore
        self._state = RowState.empty(artifact, settings, self._learner)
        self._output_cursor = NO_CURSOR  # outputs of entries up to here are in Redis
        self._in_hand: Sequence[RawEntry] = []  # read, not yet prepared
        self._unsent: _Prepared | None = None  # stepped and published, commit not yet sent
        self._in_flight: _Prepared | None = None  # sent, not yet confirmed
        self._snapshot_cursor: tuple[int, int] | None = None  # of the last snapshot
        self._snapshot_due = 0.0  # time.monotonic() when the next one is due
        self._since_snapshot = 0  # entries since the last snapshot was taken
        self._lag_polled_at = 0.0
        # what other threads read, each part swapped whole (service/publish.py)
        self.published = Published(self._state.registry, self._state.evaluator)
        self._health = Health()  # status(), /readyz
        self._counters = Counters()
        self._applied_to = NO_CURSOR  # committed (or replayed) up to this entry
        self._progress = threading.Condition()  # notified when _applied_to moves
        self._captures: queue.SimpleQueue[Future[SnapshotData]] = queue.SimpleQueue()
        self._stale = False  # the state in memory may be behind Redis: restore first
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def start(self, standby: bool = True) -> bool:
        """Take the lease (or, with `standby`, stand by until it is free), load the
        snapshot, start the loop thread. False: the lease is held and `standby` is off.

        Raises if Redis is unreachable or holds state this model must not resume.
        """
        if self._thread is not None:
            raise RuntimeError("engine already started")
        if not self.open(standby):
            return False
        shard = self.settings.shard
        name = "tickstream-ingest" + ("" if shard is None else f"-{shard.index}")
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        return True

    def open(self, standby: bool = True, blocking: bool = True) -> bool:
        """`start` without a thread: whoever calls `iterate` runs the loop (one thread for
        several shards' engines: service/sharded.py). Not `blocking`: reads never wait in
        Redis for new entries, the caller paces an idle loop."""
        malloc.keep_freed_memory()  # the loop's temporaries, reused warm (see the module)
        # TensorFlow and Keras leave ~300k objects to the cyclic GC: a full collection walks
        # them all (~0.3 s here) holding the GIL, stalling the loop and HTTP alike. They
        # live as long as the process: out of the collector's sight with them.
        gc.freeze()
        # A batch allocates thousands of tuples and lists (a prediction per moved ticker):
        # at the default threshold of 700 that is a young collection every few hundred
        # ticks. Fewer of them: ~5% of the drain at N = 5,000 (BENCHMARKS.md).
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        self._reader.blocking = blocking
        if self._lease.acquire():
            self._restore()
        elif standby:
            self._enter_standby()
        else:
            return False
        return True

    def stop(self, timeout: float | None = 30.0) -> None:
        """Let the current batch finish and commit, write a last snapshot, end the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.close()

    def close(self) -> None:
        """Let go of the snapshot writer and Redis (after `finish`, or a stopped thread)."""
        self._snapshots.close()
        self._client.close()

    # ---- read API (any thread; never waits for the model)

    @property
    def snapshot(self) -> Snapshot:
        return self.published.snapshot

    def snapshot_of(self, ticker: str) -> Snapshot:
        """The snapshot that holds `ticker`'s prediction, if any engine here has one."""
        return self.published.snapshot

    def served_of(self, ticker: str) -> ServedWaits:
        """Where a reader waits to see `ticker`'s outputs of a stream entry."""
        return self.published.served

    def tickers(self) -> dict[str, Row]:
        return dict(self.published.tickers)

    @property
    def capacity(self) -> int:
        return self.published.capacity

    @property
    def model_version(self) -> str:
        return self._state.model_version

    @property
    def scores(self) -> Evaluator:
        """The live scores as of the last copy (at most SCORES_EVERY_S behind the loop);
        row r is the ticker `tickers()` maps to r. Never changed once published."""
        return self.published.scores

    def quality(self, ticker: str) -> Quality | None:
        return self.published.quality(ticker)

    def skills(self) -> Callable[[str], float | None]:
        return self.published.skills()

    def model_info(self) -> dict[str, Any]:
        """The weights being served and how the learner is doing, for GET /v1/model."""
        state = self._state
        return describe_model(self.settings, self.base_version, state.model_version,
                              state.learner.counts)

    @property
    def max_tickers(self) -> int:
        return self.settings.max_tickers

    @property
    def ready(self) -> bool:
        """Redis reachable, replay done, caught up (the last read drained the stream) and
        every output committed."""
        return (self._health.serving and self._reader.caught_up and self._unsent is None
                and self._in_flight is None)

    @property
    def current(self) -> bool:
        """Keeping up: `ready` now or within the last CURRENT_WINDOW_S. Under a steady
        feed `ready` blinks (a commit is in flight most of the time); /readyz asks this."""
        h = self._health
        return (h.serving and not self._standby
                and time.monotonic() - h.current_at < CURRENT_WINDOW_S)

    def counters(self) -> Counters:
        """A copy, consistent enough for metrics (each field is one atomic read)."""
        c = self._counters
        return replace(c, dead_lettered=dict(c.dead_lettered))

    def snapshot_status(self) -> dict[str, Any]:
        w, last = self._snapshots, self._snapshots.last
        return {"written": w.written, "failed": w.failed,
                "cursor": last.cursor if last else None,
                "age_s": round(time.time() - last.at, 3) if last else None,
                "size_bytes": last.size_bytes if last else None,
                "seconds": round(last.seconds, 4) if last else None}

    def status(self) -> dict[str, Any]:
        """For /readyz and operators; `last_ok_at` (time.time()) says how stale reads may be."""
        c = self.counters()
        h = self._health
        replay = h.replay
        return {
            "connected": h.connected, "ready": self.ready, "current": self.current,
            "standby": self._standby,
            "refusing_writes": h.refusing,
            "last_ok_at": h.last_ok_at,
            "last_error": h.last_error, "lag": c.lag,
            "replaying": None if replay is None else {"done": replay.done,
                                                      "total": replay.total,
                                                      "says": str(replay)},
            "batches": c.batches, "applied": c.applied, "replayed": c.replayed,
            "dead_lettered": c.dead_lettered, "errors": c.errors,
            "gap_entries": c.gap_entries,
            "last_batch_seconds": c.last_batch_seconds, "stream_id": self.snapshot.stream_id,
            "snapshot": self.snapshot_status(),
            "capacity": self.capacity, "tickers": len(self.published.tickers),
            "model_version": self.model_version,
        }  # fmt: skip

    def shards(self) -> list[dict[str, Any]]:
        """This engine's one shard, as GET /v1/shards shows each shard."""
        holder, mine = self._lease.holder(), not self._standby
        return [{"shard": 0, "stream": self.settings.stream,
                 "owner": None if holder is None else process_of(holder), "here": mine,
                 "cursor": format_id(self._output_cursor) if self._output_cursor != NO_CURSOR
                 else None,
                 "lag": self._counters.lag if mine else None,
                 "tickers": len(self.published.tickers),
                 "ready": self.ready if mine else None}]

    def engines_live(self) -> int | None:
        """None: an unsharded engine keeps no count of the others (they stand by)."""
        return None

    def capture(self, timeout: float = 10.0) -> SnapshotData:
        """A copy of the whole state (rows' h and c, last ticks, steps, cursor), taken by
        the loop thread between batches: what a snapshot would hold now."""
        done: Future[SnapshotData] = Future()
        self._captures.put(done)
        return done.result(timeout)

    def reset_ticker(self, ticker: str, timeout: float = RESET_TIMEOUT_S) -> bool:
        """Zero one ticker's h and c (Keras can only reset every row), through the log.

        Appends a control entry (`control=reset ticker=T`) to the tick stream and waits
        until the loop has applied it, so a replay resets the row at the same place.
        False for an unknown ticker; TimeoutError if it was not applied within `timeout`
        (the entry stays in the stream and is applied once the loop gets to it).
        """
        try:
            ticker = normalize_ticker(ticker)
        except InvalidTick:
            return False
        if ticker not in self.published.tickers:
            return False
        entry_id = self._client.xadd(self.settings.stream,
                                     {CONTROL: b"reset", b"ticker": ticker.encode()})
        target = parse_id(entry_id.decode())
        with self._progress:
            if not self._progress.wait_for(lambda: self._applied_to >= target, timeout):
                raise TimeoutError(f"reset of {ticker} ({entry_id.decode()}) is in the "
                                   f"stream but not applied after {timeout:g}s")
        return True

    # ---- the loop

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.iterate()
            if wait:
                self._stop.wait(wait)
        self.finish()

    @property
    def idle(self) -> bool:
        """The last turn found nothing to read and left nothing in flight."""
        return self._reader.caught_up and self._in_flight is None and not self._in_hand

    def iterate(self) -> float:
        """One turn of the loop: read, step, commit, publish, snapshot if due. Never
        raises (Redis has the truth: after a failure the next turn reloads from it).
        Returns the seconds to wait before the next turn: 0 to go on."""
        try:
            if self._standby:
                if not self._lease.acquire():
                    self._enter_standby()
                    return min(1.0, self.settings.lease_ttl_s / 3)
                self._standby, self._stale = False, True
            if self._stale:
                self._restore()
                self._stale = False
            if self._in_flight is None:  # else the commit in flight renews it
                self._lease.renew_if_due()
            self._cycle()
            self._maybe_snapshot()
            self._serve_captures()
            self._poll_lag()
            self._health.ok()
            return 0.0
        except LeaseLost as e:  # another engine took over: it has the truth now
            log.warning("ingest: %s; standing by", e)
            self._drop_pipeline()
            self._enter_standby()
            return 0.0
        except Exception as e:  # the loop must outlive anything; Redis has the truth
            self._drop_pipeline()
            wait = self._health.failed(e, self._counters)
            log.warning("ingest: %s; reloading from Redis in %.2fs", self._health.last_error,
                        wait, exc_info=not isinstance(e, redis.ConnectionError))
            self._stale = True
            return wait

    def finish(self) -> None:
        """At a clean stop: the last commit confirmed, a last snapshot, the lease released
        (a standby engine may take over at once)."""
        if not self._standby and not self._stale:
            try:
                self._settle()
                self._final_snapshot()
                self._lease.release()
            except Exception as e:
                log.warning("ingest: last commit or snapshot not confirmed at stop: %s", e)
        self._drop_pipeline()
        self._health.connected = False

    def _enter_standby(self) -> None:
        self._standby = self._health.connected = True
        self.published.served.close()  # nothing more is served here until it takes over again
        self._reader.caught_up = False
        self._health.last_error = (f"standby: the lease {self._lease.key} is held by "
                                   f"{self._lease.holder()}; taking over once it is "
                                   f"released or {self.settings.lease_ttl_s:g}s pass "
                                   "unrenewed")

    def _restore(self) -> None:
        """Replace all loop state with the current snapshot; the loop then replays."""
        published = self.published
        published.served.resume()  # after a standby: readers may wait on this engine again
        if self._snapshots.busy:
            self._snapshots.collect(wait=True)
        self._commit_sha = self._client.script_load(COMMIT_LUA)
        r = restore(self._client, self._layout, self._store, self.settings, self.artifact,
                    self._learner, self._row_floats, published.snapshot.stream_id)
        self._counters.gap_entries += r.gone
        self._state = state = r.state
        self._output_cursor = r.output_cursor
        self._reader.start(state.cursor_id,
                           r.output_id if self._output_cursor > state.cursor else None)
        self._in_hand, self._unsent, self._in_flight = [], None, None
        self._snapshot_cursor = state.cursor
        self._snapshot_due = time.monotonic() + self.settings.snapshot_every_s
        self._since_snapshot = 0
        self._health.replay = Replay(total=r.behind)
        published.restored(r.predictions, r.output_id, self._output_cursor)
        published.registry(state.registry)
        published.scores_of(state, force=True)
        self._set_applied(state.cursor)
        self._health.connected = True
        todo = "an unknown number of" if r.behind is None else f"{r.behind:,}"
        if r.fresh:
            log.info("ingest: a new state, reading %s from %s (%s entries)", self.settings.stream,
                     state.cursor_id or "its first entry", todo)
        else:
            log.info("ingest: restored the snapshot at %s (%d tickers); replaying %s entries",
                     state.cursor_id, len(state.registry), todo)

    def _cycle(self) -> None:
        """Prepare the batch in hand while Redis runs what was sent before; then confirm
        the previous commit and send this one right behind it.

        On the link, in order: [commit k-1] [read k+1], both in Redis while batch k is
        stepped; [commit k] goes once k-1 is confirmed, then [read k+2]. Behind (a full
        batch), the read ahead does not block; caught up, it waits in Redis (up to
        block_ms) for the next tick right behind the commit. A batch is published as soon
        as it is stepped.
        """
        reader = self._reader
        if not self._in_hand and self._in_flight is None and not reader.ahead:
            self._in_hand = reader.read()
        entries, self._in_hand = self._in_hand, []
        prepared = self._prepare(entries) if entries else None
        if prepared is not None and prepared.live:
            self._unsent = prepared  # first: `ready` must not see it as committed
            # Served at once: every prediction is a function of ticks already durable in
            # the stream, so a replay after any failure recomputes the very same ones. The
            # commit only makes its outputs durable (and fences them); waiting for its
            # fsync, or the previous batch's, before serving would add one or two fsyncs.
            self.published.batch(prepared.outputs, prepared.cursor)
            if prepared.tickers_changed:  # the rows of the tickers just served
                self.published.registry(self._state.registry)
            prepared.packed = commit_command(self._layout, self._commit_sha, self._lease.token,
                                             self._lease.ttl_ms, prepared.outputs)
        self._confirm()
        if prepared is not None:
            if not prepared.live:
                self._committed(prepared)
            else:
                prepared.sent_at = time.monotonic()
                self._link.send(prepared.packed, 1)
                self._in_flight = prepared
                self._unsent = None
        last_read = entries
        if reader.ahead:
            if self.idle:  # all read is committed, the last read was short: current now,
                self._mark_current()  # before a read ahead that may wait for the next tick
            self._in_hand = last_read = reader.take_ahead()
        if len(last_read) == self.settings.batch_count:
            reader.send_ahead()
        elif self._in_flight is not None and not self._in_hand:
            # caught up, a commit in flight: the next read waits in Redis behind it (when
            # an fsync is slow, a tick added meanwhile is not held until the commit's reply)
            reader.send_ahead(wait=True)
        if self.idle:
            self._mark_current()
        else:
            self.published.scores_of(self._state)

    def _mark_current(self) -> None:
        """Everything read is published and the stream had nothing more: current."""
        h = self._health
        if h.replay is not None:
            log.info("ingest: replayed %d entries; live", h.replay.done)
            h.replay = None
        self.published.current()
        h.current_at = time.monotonic()
        self.published.scores_of(self._state, force=True)

    def _confirm(self) -> None:
        """Wait for the commit in flight; once Redis has it, count the batch."""
        prepared = self._in_flight
        if prepared is not None:
            t0 = time.perf_counter()
            try:
                self._link.read()
            except redis.ResponseError as e:
                self._in_flight = None
                raise_if_lease_lost(e)
                raise
            except BaseException:
                self._in_flight = None
                raise
            self._counters.commit_seconds += time.perf_counter() - t0
            self._lease.renewed_at = max(self._lease.renewed_at, prepared.sent_at)
            self._health.refusing = None  # Redis took a write
            self._committed(prepared)
            self._in_flight = None  # last: `ready` then sees the batch counted

    def _settle(self) -> None:
        """Nothing left in flight: the last commit confirmed, the read ahead taken."""
        self._confirm()
        if self._reader.ahead:  # it reads on from the batch in hand: keep both, in order
            self._in_hand = [*self._in_hand, *self._reader.take_ahead()]

    def _drop_pipeline(self) -> None:
        """Forget everything sent and read ahead: the next restore starts from Redis."""
        self._link.close()
        self._reader.owed = 0
        self._in_hand, self._unsent, self._in_flight = [], None, None

    def _prepare(self, entries: Sequence[RawEntry]) -> _Prepared:
        """Admit, step once and build the commit; in memory only until confirmed."""
        t0 = time.perf_counter()
        state = self._state
        ids = ids_of(entries)
        last = ids[-1].decode()
        cursor = parse_id(last)
        replayed = cursor <= self._output_cursor  # its outputs are in Redis already
        parsed = parse_entries(entries, self._names)
        registry_size = len(state.registry)
        publish = not replayed and bool(self._layout.predictions_maxlen)
        outputs, step_s = apply_entries(state, self.artifact, self._names, entries, parsed,
                                        publish)
        outputs.cursor = last
        state.cursor = cursor
        if state.entries_read is not None:
            state.entries_read += len(entries)
        self._since_snapshot += len(entries)
        return _Prepared(outputs, cursor, not replayed, len(entries), first_ms=stream_ms(ids[0]),
                         tickers_changed=(len(state.registry) != registry_size
                                          or bool(outputs.evicted)),
                         step_seconds=step_s, started=t0)

    def _committed(self, p: _Prepared) -> None:
        """Its outputs are in Redis (or were, before a restore): the batch counts."""
        c = self._counters
        if not p.live:
            c.replayed += p.entries
        else:
            c.batches += 1
            c.applied += p.outputs.applied
            for d in p.outputs.dead:
                c.dead_lettered[d.reason] = c.dead_lettered.get(d.reason, 0) + 1
            self._output_cursor = p.cursor
            c.batch_seconds.observe(time.perf_counter() - p.started)
            c.tick_to_commit.observe(max(0.0, time.time() - p.first_ms / 1000))
        replay = self._health.replay
        if replay is not None:
            replay.done += p.entries
            if time.monotonic() - replay.logged_at >= REPLAY_LOG_S:
                replay.logged_at = time.monotonic()
                log.info("ingest: %s", replay)
        if p.tickers_changed and not p.live:  # a live batch's went with its outputs
            self.published.registry(self._state.registry)
        c.step_seconds += p.step_seconds
        c.last_batch_seconds = time.perf_counter() - p.started
        self._set_applied(p.cursor)

    def _set_applied(self, cursor: tuple[int, int]) -> None:
        with self._progress:
            self._applied_to = cursor
            self._progress.notify_all()

    # ---- snapshots

    def _maybe_snapshot(self) -> None:
        """Hand a copy of the state to the snapshot writer when one is due."""
        writer = self._snapshots
        written = writer.written
        writer.collect()  # a LeaseLost from the last write stops the loop here
        if writer.written > written:
            self._health.refusing = None  # Redis took a write
        if writer.busy:
            return
        due = (time.monotonic() >= self._snapshot_due
               or self._since_snapshot >= self.settings.snapshot_every_ticks)
        if not due:
            return
        self._snapshot_due = time.monotonic() + self.settings.snapshot_every_s
        self._settle()  # the state covers no entry whose outputs are not yet written
        if self._state.cursor == self._snapshot_cursor:
            return
        self._snapshot_cursor, self._since_snapshot = self._state.cursor, 0
        writer.submit(self._state.capture())

    def _final_snapshot(self) -> None:
        """At a clean stop: everything applied goes into a snapshot, so a restart replays
        nothing."""
        self._snapshots.collect(wait=True)
        if self._state.cursor != self._snapshot_cursor:
            self._snapshots.submit(self._state.capture())
            self._snapshots.collect(wait=True)

    def _serve_captures(self) -> None:
        while not self._captures.empty():
            done = self._captures.get_nowait()
            if done.set_running_or_notify_cancel():
                self._settle()
                done.set_result(self._state.capture())

    def _poll_lag(self) -> None:
        """Lag = entries added to the stream and not yet read. Caught up at the stream's
        last entry, the count of entries read is set to Redis's own: entries deleted
        before the engine read them would otherwise count as unread for ever."""
        if self._reader.caught_up:
            self._counters.lag = 0  # the last read took everything there was
        now = time.monotonic()
        if now - self._lag_polled_at < LAG_POLL_S:
            return
        self._lag_polled_at = now
        state = self._state
        _, added, last = stream_counts(self._client, self.settings.stream)
        if added is None or state.entries_read is None:
            self._counters.lag = 0 if self._reader.caught_up else None
        elif last is not None and last == state.cursor_id:
            state.entries_read = added
            self._counters.lag = 0
        else:
            self._counters.lag = max(0, added - state.entries_read)
