"""The ingest loop: read a micro-batch, apply it to the LSTM rows, checkpoint, publish.

One background thread owns the model state. Redis is the source of truth: the in-memory
state only counts once its batch's MULTI/EXEC succeeded, and after any failure the loop
reloads everything from Redis and replays its pending entries, so a tick is applied
exactly once however the failure fell. Readers (the HTTP layer) only ever see immutable
snapshots of committed predictions, so they never wait for the model.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from models.artifact import Artifact
from models.features import LastTicks, compute_features
from models.lstm import LSTMStepper
from models.ticks import InvalidTick, Tick, TickTable, normalize_ticker, parse_tick
from service import checkpoint
from service.checkpoint import Changes, DeadLetter, Layout
from service.config import Settings
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
    """What one pass over a batch's entries collected (plain lists: per-entry work is hot)."""

    ack: list[bytes] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)  # the ones to apply, in order
    ids: list[StreamId] = field(default_factory=list)  # of each of `ticks`
    rows: list[Row] = field(default_factory=list)  # of each of `ticks`
    added: dict[str, Row] = field(default_factory=dict)
    evicted: list[str] = field(default_factory=list)
    last_id: StreamId | None = None
    skipped: int = 0


def connect(redis_url: str, block_ms: int) -> redis.Redis:
    """A client that never retries on its own: a retried EXEC or XREADGROUP could apply a
    batch twice or strand delivered entries; the loop's reload-and-replay handles failures."""
    return redis.Redis.from_url(
        redis_url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2.0,
        socket_timeout=block_ms / 1000 + 5.0, decode_responses=False,
    )


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
        # loop-thread state, replaced whole by _restore
        self._registry = Registry(settings.initial_rows, settings.max_tickers, self._recycle_ms)
        self._stepper = self._new_stepper(self._registry.capacity)
        self._last = LastTicks.empty(self._registry.capacity)
        self._steps = np.zeros(self._registry.capacity, np.int64)
        self._cursor: tuple[int, int] = NO_CURSOR
        self._reading_pending = True
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
        self._restore()
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
                if stale:
                    self._restore()
                    stale = False
                self._apply_resets()
                self._apply(self._read())
                self._poll_lag()
                self._last_ok_at = time.time()
                backoff = BACKOFF_FIRST_S
            except Exception as e:  # the loop must outlive anything; Redis has the truth
                self._connected = not isinstance(e, redis.RedisError)
                self._caught_up = False
                self._last_error = f"{type(e).__name__}: {e}"
                self._counters.errors += 1
                log.warning("ingest: %s; reloading from Redis in %.2fs", self._last_error,
                            backoff, exc_info=not isinstance(e, redis.ConnectionError))
                stale = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)
        self._connected = False
        self._fail_resets(RuntimeError("engine stopped"))

    def _restore(self) -> None:
        """Replace all loop state with what Redis holds, then replay pending entries."""
        self._ensure_group()
        r = checkpoint.load(self._client, self._layout, self._weights.row_state_size,
                            self.model_version)
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
        self._snapshot = Snapshot.of(r.predictions, time.time(), r.cursor)
        self._publish_registry()
        self._connected = True
        self._caught_up = False

    def _ensure_group(self) -> None:
        start = "0" if self.settings.start_from == "begin" else "$"
        try:
            self._client.xgroup_create(self._layout.stream, self._layout.group, start,
                                       mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def _read(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Own pending entries first (after a start or failure), then new ones."""
        s = self.settings
        if self._reading_pending:
            entries = self._xreadgroup("0", None)
            if entries:
                return entries
            self._reading_pending = False
        entries = self._xreadgroup(">", s.block_ms)
        self._caught_up = len(entries) < s.batch_count
        if self._caught_up:
            self._counters.lag = 0  # this read took everything there was
        return entries

    def _xreadgroup(self, start: str, block_ms: int | None) -> list[Any]:
        s = self.settings
        resp = self._client.xreadgroup(s.group, s.consumer, {s.stream: start},
                                       count=s.batch_count, block=block_ms)
        return resp[0][1] if resp else []

    def _apply(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """One micro-batch: validate, step once, checkpoint, then publish."""
        if not entries:
            return
        t0 = time.perf_counter()
        b = self._collect(entries)
        changes = Changes(added=b.added, evicted=b.evicted, cursor=b.last_id, dead=b.dead,
                          ack=b.ack)
        step_s = 0.0
        if b.rows:
            step_s = self._step(b, changes)
        t1 = time.perf_counter()
        checkpoint.commit(self._client, self._layout, self.model_version, changes)
        t2 = time.perf_counter()
        # committed: from here on the batch is part of the state
        if b.last_id is not None:
            self._cursor = checkpoint.parse_id(b.last_id)
        self._publish(changes)
        if b.added:
            self._publish_registry()
        c = self._counters
        c.batches += 1
        c.applied += len(b.rows)
        c.skipped += b.skipped
        for d in b.dead:
            c.dead_lettered[d.reason] = c.dead_lettered.get(d.reason, 0) + 1
        c.step_seconds += step_s
        c.checkpoint_seconds += t2 - t1
        c.last_batch_seconds = t2 - t0

    def _collect(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> _Batch:
        """Per entry: skip if already applied, decode, validate, order-check, find its row."""
        b = _Batch(ack=[raw_id for raw_id, _ in entries])
        cursor = self._cursor
        seen: dict[str, tuple[Row | None, int]] = {}  # ticker -> (row, ts of its last tick)
        dead, ticks, ids, rows = b.dead, b.ticks, b.ids, b.rows
        for raw_id, raw_fields in entries:
            sid = raw_id.decode()
            ms_s, _, seq_s = sid.partition("-")
            ms = int(ms_s)
            if (ms, int(seq_s)) <= cursor:  # applied before a crash or a lost reply
                b.skipped += 1
                continue
            b.last_id = sid
            try:
                tick = parse_tick({k.decode(): v.decode() for k, v in raw_fields.items()}, ms)
            except UnicodeDecodeError:
                dead.append(DeadLetter(raw_fields, "bad_encoding", sid))
                continue
            except InvalidTick as e:
                reason = e.reason if raw_fields else "deleted"  # XDELed while pending
                dead.append(DeadLetter(raw_fields, reason, sid))
                continue
            known = seen.get(tick.ticker)
            if known is None:
                known = seen[tick.ticker] = self._admit(tick.ticker, tick.ts_ms, seen, b)
            row, prev_ts = known
            if row is None:
                dead.append(DeadLetter(raw_fields, "capacity", sid))
            elif tick.ts_ms < prev_ts:
                dead.append(DeadLetter(raw_fields, "out_of_order", sid))
            else:
                seen[tick.ticker] = (row, tick.ts_ms)
                ticks.append(tick)
                ids.append(sid)
                rows.append(row)
        return b

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
        t = TickTable.from_ticks(b.ticks)
        rows = np.array(b.rows, np.intp)  # (M,)
        raw, self._last = compute_features(rows, t.price, t.volume, t.ts_ms, self._last)
        t0 = time.perf_counter()
        out = self._stepper.step_ticks(rows, self._feature_scaler.transform(raw))  # (M,)
        step_s = time.perf_counter() - t0
        ret = self._target_scaler.inverse(out)  # (M,) next log return
        next_price = t.price * np.exp(ret)

        m = len(rows)
        order = np.argsort(rows, kind="stable")  # each row's ticks together, in order
        sorted_rows = rows[order]
        starts = np.r_[0, np.flatnonzero(sorted_rows[1:] != sorted_rows[:-1]) + 1]
        rank = np.empty(m, np.intp)
        rank[order] = np.arange(m) - np.repeat(starts, np.diff(np.r_[starts, m]))
        steps = self._steps[rows] + rank + 1  # (M,) ticks applied to the row after each tick
        changed = sorted_rows[starts]  # (k,) rows that moved, ascending
        last_of_row = order[np.r_[starts[1:], m] - 1]  # (k,) each moved row's last tick
        self._steps[changed] = steps[last_of_row]

        changes.rows = changed
        changes.state = self._stepper.get_rows(changed)
        changes.last_price = self._last.price[changed]
        changes.last_ts = self._last.ts_ms[changed]
        cols = (t.ticker.tolist(), ret.tolist(), next_price.tolist(), t.price.tolist(),
                t.ts_ms.tolist(), b.ids, steps.tolist())
        version = self.model_version
        changes.latest = [Prediction(*(col[i] for col in cols), version)
                          for i in last_of_row.tolist()]
        if self._layout.predictions_maxlen:
            changes.published = cols
        return step_s

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
        self._tickers = MappingProxyType(self._registry.as_dict())
        self._capacity = self._registry.capacity

    def _apply_resets(self) -> None:
        """Zero the rows asked for and checkpoint them before the next batch."""
        requests = self._take_resets()
        if not requests:
            return
        try:
            found = [self._registry.row(t) for t, _ in requests]
            rows = np.array(sorted({r for r in found if r is not None}), np.intp)
            if len(rows):
                self._stepper.reset_rows(rows)
                checkpoint.commit(self._client, self._layout, self.model_version, Changes(
                    rows=rows, state=self._stepper.get_rows(rows),
                    last_price=self._last.price[rows], last_ts=self._last.ts_ms[rows]))
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
