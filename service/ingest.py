"""The ingest loop: read a micro-batch, apply it to the LSTM rows, checkpoint, publish.

One background thread owns the model state. Redis is the source of truth: the in-memory
state only counts once its batch's MULTI/EXEC succeeded, and after any failure the loop
reloads everything from Redis and replays its pending entries, so a tick is applied
exactly once however the failure fell. Readers (the HTTP layer) only ever see immutable
snapshots of committed predictions, so they never wait for the model.

When the loop is behind, it pipelines: while it steps batch k (Python, this core), Redis
(the other core) runs batch k-1's checkpoint and reads batch k+1. Batch k's checkpoint is
sent only once k-1's is confirmed, so Redis never holds a state that skips a batch; the
in-memory state may run one batch ahead of Redis, and any failure reloads it from Redis.
"""

from __future__ import annotations

import bisect
import gc
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from itertools import repeat
from operator import itemgetter
from types import MappingProxyType
from typing import Any

import numpy as np
import redis

from models.artifact import Artifact
from models.features import LastTicks, compute_features
from models.lstm import LSTMStepper
from models.ticks import InvalidTick, normalize_ticker
from service import checkpoint, malloc, prediction_stream
from service.checkpoint import Changes, DeadLetter, Layout
from service.config import Settings
from service.entries import Parsed, RawEntry, TickerCache, fields_of, parse_entries
from service.lease import Lease, LeaseLost
from service.redis_io import Link, connect, entries_of, packed, transaction, xreadgroup
from service.registry import Registry
from service.snapshot import Prediction, Snapshot
from service.types import Row, StreamId

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.05
BACKOFF_CAP_S = 2.0
LAG_POLL_S = 1.0  # XINFO GROUPS at most this often
RESET_TIMEOUT_S = 5.0
NO_CURSOR = (-1, -1)


@dataclass
class Counters:
    """Cumulative figures for /metrics and status(); the loop thread is the only writer."""

    batches: int = 0
    applied: int = 0  # ticks applied to a row
    skipped: int = 0  # redelivered entries at or below the cursor: acked, not applied
    dead_lettered: dict[str, int] = field(default_factory=dict)  # reason -> count
    step_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    last_batch_seconds: float = 0.0
    errors: int = 0  # failed iterations (each followed by a reload from Redis)
    lag: int | None = None  # entries not yet delivered to the group (XINFO GROUPS)
    pending: int | None = None  # delivered to the group, not yet acknowledged


@dataclass
class _Batch:
    """One micro-batch: what to apply (columns, in stream order) and what it changes."""

    ack: list[bytes]
    skipped: int = 0
    dead: list[tuple[int, str]] = field(default_factory=list)  # (position in batch, reason)
    ticks: Parsed = field(default_factory=Parsed)  # the ones to apply
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.intp))  # of each tick
    ids: list[bytes] = field(default_factory=list)  # of each tick
    added: dict[str, Row] = field(default_factory=dict)
    evicted: list[str] = field(default_factory=list)
    last_id: StreamId | None = None


@dataclass
class _Prepared:
    """A stepped batch whose checkpoint is not yet confirmed (nothing of it is published)."""

    changes: Changes
    packed: bytes  # its checkpoint transaction, ready to send
    n_commands: int
    applied: int = 0
    skipped: int = 0
    step_seconds: float = 0.0
    started: float = 0.0  # perf_counter() when its preparation began
    tickers: Mapping[str, Row] | None = None  # the registry to publish, if it changed


class Engine:
    """Consumes the tick stream into the row-pinned LSTM; serves snapshots of predictions."""

    def __init__(self, settings: Settings, artifact: Artifact, redis_url: str) -> None:
        self.settings = settings
        self.model_version = artifact.meta.model_version
        self._feature_scaler = artifact.meta.feature_scaler
        self._target_scaler = artifact.meta.target_scaler
        self._weights = artifact.stepper(1)  # weights only; real steppers are sized on restore
        self._layout = Layout.from_settings(settings)
        self._recycle_ms = (None if settings.recycle_idle_s is None
                            else round(settings.recycle_idle_s * 1000))
        self._client = connect(redis_url, settings.block_ms)
        self._link = Link(self._client)  # the loop's pipelined connection
        self._lease = Lease(self._client, f"{settings.key_prefix}owner", settings.lease_ttl_s)
        self._standby = False  # another engine holds the lease: wait, read nothing
        self._ticker_names = TickerCache()
        # loop-thread state, replaced whole by _restore
        self._registry = Registry(settings.initial_rows, settings.max_tickers, self._recycle_ms)
        self._stepper = self._new_stepper(self._registry.capacity)
        self._last = LastTicks.empty(self._registry.capacity)
        self._steps = np.zeros(self._registry.capacity, np.int64)
        self._cursor: tuple[int, int] = NO_CURSOR  # of the last batch prepared
        self._reading_pending = True
        self._in_hand: list[RawEntry] = []  # read, not yet prepared
        self._reading_ahead = False  # an XREADGROUP is on its way (its reply owed)
        self._in_flight: _Prepared | None = None  # sent, not yet confirmed
        self._lag_polled_at = 0.0
        # published to other threads (each attribute swapped whole)
        self._snapshot = Snapshot.of({}, time.time(), None)
        self._tickers: Mapping[str, Row] = MappingProxyType({})
        self._capacity = self._registry.capacity
        self._connected = False
        self._caught_up = False
        self._last_error: str | None = None
        self._last_ok_at: float | None = None  # time.time() of the last good iteration
        self._counters = Counters()
        self._resets: queue.SimpleQueue[tuple[str, Future[bool]]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> None:
        """Create the group if missing, restore state from Redis, start the loop thread.

        Raises if Redis is unreachable or holds a checkpoint this model must not resume.
        """
        if self._thread is not None:
            raise RuntimeError("engine already started")
        malloc.keep_freed_memory()  # the loop's temporaries, reused warm (see the module)
        # TensorFlow and Keras leave ~300k objects to the cyclic GC: a full collection walks
        # them all (~0.3 s here) holding the GIL, stalling the loop and HTTP alike. They
        # live as long as the process: out of the collector's sight with them.
        gc.freeze()
        if self._lease.acquire():
            self._restore()
        else:
            self._enter_standby()
        self._thread = threading.Thread(target=self._run, name="tickstream-ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Let the current batch finish and checkpoint, then end the loop thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._client.close()

    # ---- read API (any thread; never waits for the model)

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def tickers(self) -> dict[str, Row]:
        return dict(self._tickers)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def max_tickers(self) -> int:
        return self.settings.max_tickers

    @property
    def ready(self) -> bool:
        """Redis reachable and caught up (the last read did not fill a whole batch)."""
        return self._connected and self._caught_up

    def counters(self) -> Counters:
        """A copy, consistent enough for metrics (each field is one atomic read)."""
        c = self._counters
        return replace(c, dead_lettered=dict(c.dead_lettered))

    def status(self) -> dict[str, Any]:
        """For /readyz and operators; `last_ok_at` (time.time()) says how stale reads may be."""
        c = self.counters()
        return {
            "connected": self._connected, "ready": self.ready, "last_ok_at": self._last_ok_at,
            "last_error": self._last_error, "lag": c.lag, "pending": c.pending,
            "batches": c.batches, "applied": c.applied, "skipped": c.skipped,
            "dead_lettered": c.dead_lettered, "errors": c.errors,
            "last_batch_seconds": c.last_batch_seconds, "stream_id": self._snapshot.stream_id,
            "capacity": self._capacity, "tickers": len(self._tickers),
            "model_version": self.model_version,
        }  # fmt: skip

    def reset_ticker(self, ticker: str, timeout: float = RESET_TIMEOUT_S) -> bool:
        """Zero one ticker's h and c (Keras can only reset every row), durably.

        The loop thread does it between batches and checkpoints it. False for an unknown
        ticker; TimeoutError if it was not committed within `timeout` (Redis down, engine
        stopped); a request that times out before the loop picks it up is dropped.
        """
        try:
            ticker = normalize_ticker(ticker)
        except InvalidTick:
            return False
        done: Future[bool] = Future()
        self._resets.put((ticker, done))
        try:
            return done.result(timeout)
        except TimeoutError:
            done.cancel()
            raise
        except Exception as e:
            raise TimeoutError(f"reset of {ticker} not committed: {e}") from e

    # ---- the loop

    def _run(self) -> None:
        backoff = BACKOFF_FIRST_S
        stale = False
        while not self._stop.is_set():
            try:
                if self._standby:
                    if not self._lease.acquire():
                        self._enter_standby()
                        self._stop.wait(min(1.0, self.settings.lease_ttl_s / 3))
                        continue
                    self._standby, stale = False, True
                if stale:
                    self._restore()
                    stale = False
                self._lease.renew_if_due()
                self._apply_resets()
                self._cycle()
                self._poll_lag()
                self._last_ok_at = time.time()
                backoff = BACKOFF_FIRST_S
            except LeaseLost as e:  # another engine took over: it has the truth now
                log.warning("ingest: %s; standing by", e)
                self._drop_pipeline()
                self._enter_standby()
            except Exception as e:  # the loop must outlive anything; Redis has the truth
                self._drop_pipeline()
                self._connected = not isinstance(e, redis.RedisError)
                self._caught_up = False
                self._last_error = f"{type(e).__name__}: {e}"
                self._counters.errors += 1
                log.warning("ingest: %s; reloading from Redis in %.2fs", self._last_error,
                            backoff, exc_info=not isinstance(e, redis.ConnectionError))
                stale = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)
        try:
            if not self._standby:
                self._settle()  # the last checkpoint sent is committed and published
                self._lease.release()  # a standby engine may take over at once
        except Exception as e:
            log.warning("ingest: last checkpoint not confirmed at stop: %s", e)
        self._drop_pipeline()
        self._connected = False
        self._fail_resets(RuntimeError("engine stopped"))

    def _enter_standby(self) -> None:
        self._standby, self._caught_up, self._connected = True, False, True
        self._last_error = (f"standby: the lease {self._lease.key} is held by "
                            f"{self._lease.holder()}; taking over once it is released or "
                            f"{self.settings.lease_ttl_s:g}s pass unrenewed")

    def _restore(self) -> None:
        """Replace all loop state with what Redis holds, then replay pending entries."""
        r = checkpoint.load(self._client, self._layout, self._weights.row_state_size,
                            self.model_version)
        self._ensure_group(r.cursor)
        self._claim_pending()
        s = self.settings
        registry = Registry(s.initial_rows, s.max_tickers, self._recycle_ms, r.rows)
        n = registry.capacity
        stepper = self._new_stepper(n)
        stepper.set_rows(r.state_rows, r.state)
        last = LastTicks.empty(n)
        last.price[r.last_rows] = r.last_price
        last.ts_ms[r.last_rows] = r.last_ts
        steps = np.zeros(n, np.int64)
        for ticker, p in r.predictions.items():
            steps[r.rows[ticker]] = p.steps
        self._registry, self._stepper, self._last, self._steps = registry, stepper, last, steps
        self._cursor = checkpoint.parse_id(r.cursor) if r.cursor else NO_CURSOR
        self._reading_pending = True
        self._in_hand, self._reading_ahead, self._in_flight = [], False, None
        self._snapshot = Snapshot.of(r.predictions, time.time(), r.cursor)
        self._publish_registry()
        self._connected = True
        self._caught_up = False

    def _ensure_group(self, cursor: StreamId | None) -> None:
        """A missing group starts after the checkpoint's cursor if there is one (so a lost
        group skips nothing), else where `start_from` says."""
        start = cursor or ("0" if self.settings.start_from == "begin" else "$")
        try:
            self._client.xgroup_create(self._layout.stream, self._layout.group, start,
                                       mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def _claim_pending(self) -> None:
        """Take over entries other consumer names read and never committed (a renamed
        consumer, an earlier owner that died): only the lease holder reads, so nobody else
        is working on them, and they lie above the cursor."""
        s, start = self.settings, "0-0"
        while True:
            reply = self._client.xautoclaim(s.stream, s.group, s.consumer, 0, start,
                                            count=1000)  # justid=True drops the next ID
            start = reply[0].decode()
            if start == "0-0":
                return

    def _cycle(self) -> None:
        """Prepare the batch in hand while Redis runs what was sent before; then confirm
        the previous checkpoint and send this one right behind it.

        On the link, in order: [checkpoint k-1] [read k+1], both in Redis while batch k is
        stepped; [checkpoint k] goes once k-1 is confirmed, then [read k+2]. A read is
        sent ahead only after a full batch, i.e. while the loop is behind; caught up,
        each batch goes alone and is published as soon as it is committed.
        """
        if not self._in_hand and self._in_flight is None and not self._reading_ahead:
            self._in_hand = self._read()
        entries, self._in_hand = self._in_hand, []
        prepared = self._prepare(entries) if entries else None
        self._confirm()
        if prepared is not None:
            self._link.send(prepared.packed, prepared.n_commands + 2)
            self._in_flight = prepared
        last_read = entries
        if self._reading_ahead:
            self._reading_ahead = False
            self._in_hand = last_read = self._took(entries_of(self._link.read()))
        if len(last_read) == self.settings.batch_count and not self._reading_pending:
            self._link.send(packed(self._read_command(block=False)), 1)
            self._reading_ahead = True

    def _confirm(self) -> None:
        """Wait for the checkpoint in flight; once Redis has it, publish it."""
        if self._in_flight is not None:
            prepared, self._in_flight = self._in_flight, None
            t0 = time.perf_counter()
            self._link.read_transaction(prepared.n_commands)
            self._counters.checkpoint_seconds += time.perf_counter() - t0
            self._committed(prepared)

    def _settle(self) -> None:
        """Nothing left in flight: the last checkpoint confirmed, the read ahead taken."""
        self._confirm()
        if self._reading_ahead:
            self._reading_ahead = False
            self._in_hand = self._took(entries_of(self._link.read()))

    def _drop_pipeline(self) -> None:
        """Forget everything sent and read ahead: Redis still has it (pending, uncommitted)."""
        self._link.close()
        self._in_hand, self._reading_ahead, self._in_flight = [], False, None

    def _read_command(self, block: bool, count: int | None = None) -> tuple:
        s = self.settings
        start = "0" if self._reading_pending else ">"
        block_ms = s.block_ms if block and not self._reading_pending else None
        return xreadgroup(s.group, s.consumer, s.stream, start, count or s.batch_count,
                          block_ms)

    def _read(self) -> list[RawEntry]:
        """Own pending entries first (after a start or failure), then new ones."""
        if self._reading_pending:
            entries = entries_of(self._link.call(self._read_command(block=True)))
            if entries:
                return entries
            self._reading_pending = False
        n = self.settings.batch_count
        if n == 1:  # no room to split (COUNT 0 would mean no limit)
            return self._took(entries_of(self._link.call(self._read_command(block=True))))
        # Redis answers a blocked XREADGROUP at the first XADD that reaches the stream, also
        # when it came with others in one write (a producer's pipelined burst): alone, the
        # burst would make two batches (1 + the rest), each with its own read and fsynced
        # EXEC. A non-blocking read sent right behind runs once the burst is in, before the
        # same fsync: one batch, no extra round trip. Half the count each keeps the batch
        # within batch_count.
        self._link.send(packed(self._read_command(block=True, count=n - n // 2),
                               self._read_command(block=False, count=n // 2)), 2)
        first = entries_of(self._link.read())
        rest = entries_of(self._link.read())
        return self._took(first + rest if rest else first)

    def _took(self, entries: list[RawEntry]) -> list[RawEntry]:
        """Note whether a read of new entries found the stream drained."""
        self._caught_up = len(entries) < self.settings.batch_count
        if self._caught_up:
            self._counters.lag = 0  # this read took everything there was
        return entries

    def _prepare(self, entries: list[RawEntry]) -> _Prepared:
        """Validate, step once and build the checkpoint; in memory only until confirmed."""
        t0 = time.perf_counter()
        b = self._collect(entries)
        dead = [DeadLetter(fields_of(entries[i][1]), reason, entries[i][0].decode())
                for i, reason in b.dead]
        changes = Changes(added=b.added, evicted=b.evicted, cursor=b.last_id, dead=dead,
                          ack=b.ack)
        step_s = self._step(b, changes) if len(b.rows) else 0.0
        if b.last_id is not None:
            self._cursor = checkpoint.parse_id(b.last_id)
        tickers = MappingProxyType(self._registry.as_dict()) if b.added else None
        cmds = checkpoint.commands(self._layout, self.model_version, changes)
        return _Prepared(changes, transaction(cmds), len(cmds), applied=len(b.rows),
                         skipped=b.skipped, step_seconds=step_s, started=t0, tickers=tickers)

    def _committed(self, p: _Prepared) -> None:
        """Its checkpoint is in Redis: from here on the batch is part of the state."""
        self._publish(p.changes)
        if p.tickers is not None:
            self._tickers = p.tickers
            self._capacity = self._registry.capacity
        c = self._counters
        c.batches += 1
        c.applied += p.applied
        c.skipped += p.skipped
        for d in p.changes.dead:
            c.dead_lettered[d.reason] = c.dead_lettered.get(d.reason, 0) + 1
        c.step_seconds += p.step_seconds
        c.last_batch_seconds = time.perf_counter() - p.started

    def _collect(self, entries: Sequence[RawEntry]) -> _Batch:
        """Skip what was already applied, validate, then find each tick's row.

        Entries come in stream-ID order (both a pending and a new read), so those at or
        below the cursor (applied before a crash or a lost reply) are a prefix.
        """
        first = 0
        if self._cursor != NO_CURSOR:
            first = bisect.bisect_right(entries, self._cursor,
                                        key=lambda e: checkpoint.parse_id(e[0].decode()))
        b = _Batch(ack=list(map(itemgetter(0), entries)), skipped=first)
        todo = entries[first:]
        if not todo:
            return b
        b.last_id = todo[-1][0].decode()
        ticks = parse_entries(todo, self._ticker_names)
        b.dead = [(first + i, reason) for i, reason in ticks.rejected]
        rows = self._registry.rows_of(ticks.ticker)
        if None in rows or not self._in_order(np.array(rows, np.intp), ticks.ts_ms):
            keep, rows = self._admit_in_order(ticks, b, first)
            ticks = _take(ticks, keep)
        b.ticks, b.rows = ticks, np.array(rows, np.intp)
        b.ids = (b.ack[first:] if len(ticks.index) == len(todo)
                 else [todo[i][0] for i in ticks.index])
        return b

    def _in_order(self, rows: np.ndarray, ts_ms: np.ndarray) -> bool:
        """No tick older than the last applied tick of its row (in the batch or before)."""
        if not len(rows):
            return True
        order = np.argsort(rows, kind="stable")
        r, t = rows[order], ts_ms[order]
        first_of_row = np.concatenate(([True], r[1:] != r[:-1]))
        before = np.where(self._last.price[r] > 0, self._last.ts_ms[r], -1)
        # each tick against the tick before it in its row, or the row's last applied tick
        return bool((t[1:] >= t[:-1])[~first_of_row[1:]].all()
                    and (t >= before)[first_of_row].all())

    def _admit_in_order(self, ticks: Parsed, b: _Batch, first: int
                        ) -> tuple[list[int], list[Row]]:
        """Tick by tick, in stream order: register new tickers (growing or recycling rows)
        and reject ticks beyond capacity or out of order. Returns the kept ticks (indices
        into `ticks`) and their rows."""
        seen: dict[str, tuple[Row | None, int]] = {}  # ticker -> (row, ts of its last tick)
        keep: list[int] = []
        rows: list[Row] = []
        for j, (ticker, ts_ms) in enumerate(zip(ticks.ticker, ticks.ts_ms.tolist(),
                                                strict=True)):
            known = seen.get(ticker)
            if known is None:
                known = seen[ticker] = self._admit(ticker, ts_ms, seen, b)
            row, prev_ts = known
            if row is None:
                b.dead.append((first + ticks.index[j], "capacity"))
            elif ts_ms < prev_ts:
                b.dead.append((first + ticks.index[j], "out_of_order"))
            else:
                seen[ticker] = (row, ts_ms)
                keep.append(j)
                rows.append(row)
        b.dead.sort()
        return keep, rows

    def _admit(self, ticker: str, ts_ms: int, seen: dict[str, tuple[Row | None, int]],
               b: _Batch) -> tuple[Row | None, int]:
        """The ticker's row and last applied ts (-1: none); a new ticker gets a row if any."""
        registry = self._registry
        row = registry.row(ticker)
        if row is not None:
            has_last = self._last.price[row] > 0
            return row, int(self._last.ts_ms[row]) if has_last else -1
        row = registry.assign(ticker)
        if row is None:
            busy = {r for r, _ in seen.values() if r is not None}
            recycled = registry.recycle(ticker, ts_ms, self._last.ts_ms, busy)
            if recycled is None:
                return None, -1
            row, evicted = recycled
            rows = np.array([row])
            self._stepper.reset_rows(rows)
            self._last.reset_rows(rows)
            self._steps[rows] = 0
            b.evicted.append(evicted)
        elif registry.capacity > self._stepper.n_rows:
            self._grow(registry.capacity)
        b.added[ticker] = row
        return row, -1

    def _grow(self, n_rows: int) -> None:
        """More batch rows; existing rows keep their state bit-exactly."""
        self._stepper.grow(n_rows)
        self._last = self._last.grown(n_rows)
        self._steps = np.concatenate([self._steps, np.zeros(n_rows - len(self._steps), np.int64)])

    def _step(self, b: _Batch, changes: Changes) -> float:
        """Features, ONE step over every tick of the batch, and the predictions it makes."""
        t = b.ticks
        rows = b.rows  # (M,)
        raw, self._last = compute_features(rows, t.price, t.volume, t.ts_ms, self._last)
        t0 = time.perf_counter()
        out = self._stepper.step_ticks(rows, self._feature_scaler.transform(raw))  # (M,)
        step_s = time.perf_counter() - t0
        ret = self._target_scaler.inverse(out)  # (M,) next log return
        next_price = t.price * np.exp(ret)

        m = len(rows)
        order = np.argsort(rows, kind="stable")  # each row's ticks together, in order
        sorted_rows = rows[order]
        starts = np.flatnonzero(np.concatenate(([True], sorted_rows[1:] != sorted_rows[:-1])))
        ends = np.append(starts[1:], m)
        rank = np.empty(m, np.intp)
        rank[order] = np.arange(m) - np.repeat(starts, ends - starts)
        steps = self._steps[rows] + rank + 1  # (M,) ticks applied to the row after each tick
        changed = sorted_rows[starts]  # (k,) rows that moved, ascending
        last_of_row = order[ends - 1]  # (k,) each moved row's last tick
        self._steps[changed] = steps[last_of_row]

        changes.rows = changed
        changes.state = self._stepper.get_rows(changed)
        changes.last_price = self._last.price[changed]
        changes.last_ts = self._last.ts_ms[changed]
        self._predictions(b, changes, ret, next_price, steps, last_of_row)
        return step_s

    def _predictions(self, b: _Batch, changes: Changes, ret: np.ndarray,
                     next_price: np.ndarray, steps: np.ndarray, last_of_row: np.ndarray
                     ) -> None:
        """Each moved row's latest prediction, and every tick's for the predictions stream.

        Nothing here formats a float: Redis gets binary records and columns, HTTP formats
        the one prediction it serves.
        """
        t, version = b.ticks, self.model_version
        latest = last_of_row.tolist()
        tickers = [t.ticker[i] for i in latest]
        ids = [b.ids[i].decode() for i in latest]
        rets, next_prices, prices, ts, all_steps = (
            col[last_of_row].tolist() for col in (ret, next_price, t.price, t.ts_ms, steps))
        # tuple.__new__ builds each NamedTuple in C; Prediction(...) goes through Python
        changes.latest = list(map(tuple.__new__, repeat(Prediction),
                                  zip(tickers, rets, next_prices, prices, ts, ids, all_steps,
                                      repeat(version), strict=False)))
        if self._layout.predictions_maxlen:
            changes.published = prediction_stream.entry_fields(
                version, b.last_id or "", t.ticker, b.ids, t.ts_ms, steps, ret, next_price,
                t.price)

    def _publish(self, changes: Changes) -> None:
        """Swap in a new snapshot holding the committed predictions."""
        old = self._snapshot
        predictions = old.predictions
        if changes.latest or changes.evicted:
            fresh = dict(predictions)
            for ticker in changes.evicted:
                fresh.pop(ticker, None)
            fresh.update((p.ticker, p) for p in changes.latest)
            predictions = MappingProxyType(fresh)
        stream_id = changes.cursor or old.stream_id
        self._snapshot = Snapshot(predictions, time.time(), stream_id)

    def _publish_registry(self) -> None:
        """After a reload: the registry as Redis holds it."""
        self._tickers = MappingProxyType(self._registry.as_dict())
        self._capacity = self._registry.capacity

    def _apply_resets(self) -> None:
        """Zero the rows asked for and checkpoint them before the next batch."""
        requests = self._take_resets()
        if not requests:
            return
        try:
            self._settle()  # nothing in flight: memory and Redis agree before the reset
            found = [self._registry.row(t) for t, _ in requests]
            rows = np.array(sorted({r for r in found if r is not None}), np.intp)
            if len(rows):
                self._stepper.reset_rows(rows)
                cmds = checkpoint.commands(self._layout, self.model_version, Changes(
                    rows=rows, state=self._stepper.get_rows(rows),
                    last_price=self._last.price[rows], last_ts=self._last.ts_ms[rows]))
                self._link.send(transaction(cmds), len(cmds) + 2)
                self._link.read_transaction(len(cmds))
        except BaseException as e:
            for _, done in requests:
                done.set_exception(e)
            raise
        for (_, done), row in zip(requests, found, strict=True):
            done.set_result(row is not None)

    def _take_resets(self) -> list[tuple[str, Future[bool]]]:
        """Queued reset requests whose callers still wait for them."""
        requests = []
        while True:
            try:
                ticker, done = self._resets.get_nowait()
            except queue.Empty:
                return requests
            if done.set_running_or_notify_cancel():
                requests.append((ticker, done))

    def _fail_resets(self, error: Exception) -> None:
        for _, done in self._take_resets():
            done.set_exception(error)

    def _poll_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_polled_at < LAG_POLL_S:
            return
        self._lag_polled_at = now
        for g in self._client.xinfo_groups(self._layout.stream):
            if g["name"].decode() == self._layout.group:
                self._counters.lag = g.get("lag")
                self._counters.pending = g["pending"]

    def _new_stepper(self, n_rows: int) -> LSTMStepper:
        w = self._weights
        return LSTMStepper(w.layers, w.head_w, w.head_b, n_rows)


def _take(ticks: Parsed, keep: list[int]) -> Parsed:
    """The ticks at `keep` (indices into the columns), as columns again."""
    return Parsed([ticks.index[j] for j in keep], [ticks.ticker[j] for j in keep],
                  ticks.price[keep], ticks.volume[keep], ticks.ts_ms[keep], ticks.rejected)
