"""Raw stream entries -> validated tick columns, a column at a time for the common case.

An entry is an ID and a flat [field, value, ...] list (None for an entry deleted while
pending). Almost every entry looks the same: the known fields, ASCII numbers, a ticker
seen before. Those are checked column-wise; every entry the fast path cannot vouch for
goes through `parse_tick`, so every rejection and its reason come from models/ticks.py
itself. The ingest loop reads a `ReadBatch`: its columns come from Redis's reply bytes in
C (service/_resp.c) and its entries are built only where needed; a list of entries (a
replay, a test) takes the same checks in Python.

The column checks restate the rules of models/ticks.py with its own constants;
tests/service/test_entries.py fuzzes both against each other, so the two cannot drift.
Vouching is exact because `float()` on ASCII bytes parses exactly as on the decoded text
and fails on any non-ASCII byte; a ticker is cached only after `normalize_ticker` accepted
its decoded text; an entry with another field, a repeated field or a value the checks
refuse goes to `parse_tick` whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import NamedTuple, overload

import numpy as np

from models.ticks import (
    MAX_FIELD_CHARS,
    MAX_PRICE,
    MAX_TS_MS,
    MIN_PRICE,
    InvalidTick,
    normalize_ticker,
    parse_tick,
)
from service import _resp
from service.shards import Shard

RawEntry = tuple[bytes, Sequence[bytes] | None]  # (stream ID, [k1, v1, k2, v2, ...])
CONTROL = b"control"  # a control entry's field: control=reset ticker=T (see `Control`)
CONTROL_ACTIONS = frozenset(("reset",))
KNOWN = frozenset((b"ticker", b"price", b"volume", b"ts"))  # the tick's fields
WRONG_SHARD = "wrong_shard"  # a tick or control of a ticker another shard owns
TICKER_CACHE_MAX = 100_000  # distinct raw tickers remembered; a flood of new ones clears it


@dataclass
class Parsed:
    """A batch's entries split into valid ticks (columns, in stream order) and rejects."""

    index: list[int] = field(default_factory=list)  # position in the batch of each tick
    ticker: list[str] = field(default_factory=list)
    price: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (M,) float64
    volume: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (M,) float64
    ts_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (M,)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (position, reason)
    controls: list[tuple[int, Control]] = field(default_factory=list)  # (position, control)


class Control(NamedTuple):
    """A control entry: a change of state that travels in the stream like a tick, so a
    replay makes it at the same place. `control=reset ticker=T` zeroes T's h and c."""

    action: str
    ticker: str


class TickerCache:
    """Raw ticker bytes -> normalised ticker, for tickers `normalize_ticker` accepted (and,
    for one shard's engine, that `shard` owns: the slow path dead-letters the others)."""

    def __init__(self, max_size: int = TICKER_CACHE_MAX, shard: Shard | None = None) -> None:
        self._names: dict[bytes, str] = {}
        self.max_size = max_size
        self.shard = shard

    def foreign(self, ticker: str) -> bool:
        """Whether `ticker` belongs to another shard than this engine's."""
        return self.shard is not None and not self.shard.owns(ticker)

    def lookup(self, raw: Sequence[bytes | None]) -> list[str | None]:
        found = list(map(self._names.get, raw))
        if None in found:
            for i, r in enumerate(raw):
                if found[i] is None and r is not None:
                    found[i] = self._learn(r)
        return found

    def _learn(self, raw: bytes) -> str | None:
        try:
            name = normalize_ticker(raw.decode())
        except (UnicodeDecodeError, InvalidTick):
            return None  # parse_tick will say why
        if self.foreign(name):
            return None  # parse_entries will say why
        if len(self._names) >= self.max_size:
            self._names.clear()
        self._names[raw] = name
        return name


def fields_of(raw: Sequence[bytes] | None) -> dict[bytes, bytes]:
    """The entry's fields as a dict, the last value winning like redis-py's own parser."""
    it = iter(raw or ())
    return dict(zip(it, it, strict=False))


def stream_ms(entry_id: bytes) -> int:
    return int(entry_id.partition(b"-")[0])


Columns = tuple[np.ndarray, list[str | None], np.ndarray, np.ndarray, np.ndarray]
FAST, HAS_VOLUME, HAS_TS = 1, 2, 4  # an entry's flags in a ReadBatch (service/_resp.c)


class ReadBatch(Sequence[RawEntry]):
    """Entries as one stream read returned them: each entry's ID, the columns of those the
    C scan vouched for (known fields, each once, numbers in plain decimals), and any entry
    as (ID, fields) on demand, built from the reply exactly as hiredis would build it."""

    __slots__ = ("_offsets", "_reply", "flags", "id_ms", "ids", "price", "tickers", "ts",
                 "volume")

    def __init__(self, reply: bytes, ids: list[bytes], offsets: np.ndarray, flags: np.ndarray,
                 tickers: list[bytes | None], price: np.ndarray, volume: np.ndarray,
                 ts: np.ndarray, id_ms: np.ndarray) -> None:
        self._reply, self._offsets = reply, offsets
        self.ids, self.flags, self.tickers = ids, flags, tickers  # tickers: raw, None if slow
        self.price, self.volume, self.ts, self.id_ms = price, volume, ts, id_ms

    @classmethod
    def of_reply(cls, reply: bytes, xread: bool) -> ReadBatch:
        """An XREAD (of one stream) or XRANGE reply, in the protocol's bytes."""
        ids, offsets, flags, tickers, price, volume, ts, id_ms = _resp.columns(
            reply, xread, MAX_FIELD_CHARS)
        return cls(reply, ids, np.frombuffer(offsets, np.int64), np.frombuffer(flags, np.uint8),
                   tickers, np.frombuffer(price), np.frombuffer(volume), np.frombuffer(ts),
                   np.frombuffer(id_ms, np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, i: int) -> RawEntry: ...
    @overload
    def __getitem__(self, i: slice) -> ReadBatch: ...
    def __getitem__(self, i: int | slice) -> RawEntry | ReadBatch:
        if isinstance(i, slice):
            return ReadBatch(self._reply, self.ids[i], self._offsets[i], self.flags[i],
                             self.tickers[i], self.price[i], self.volume[i], self.ts[i],
                             self.id_ms[i])
        return _resp.entry_at(self._reply, int(self._offsets[i]))

    def columns(self, cache: TickerCache) -> Columns:
        """What `_list_columns` finds for the same entries, from the C scan's columns."""
        flags = self.flags
        return _vouched((flags & FAST) != 0, cache.lookup(self.tickers), self.price,
                        self.volume, (flags & HAS_VOLUME) != 0, self.ts, (flags & HAS_TS) != 0,
                        self.id_ms)


def ids_of(entries: Sequence[RawEntry]) -> list[bytes]:
    return entries.ids if isinstance(entries, ReadBatch) else list(map(itemgetter(0), entries))


def parse_one(entry: RawEntry) -> tuple[str, float, float, int] | Control | str:
    """The slow path, one entry: (ticker, price, volume, ts_ms), a Control, or the reason
    to reject it."""
    entry_id, raw = entry
    fields = fields_of(raw)
    if CONTROL in fields:
        return parse_control(fields)
    try:
        tick = parse_tick({k.decode(): v.decode() for k, v in fields.items()
                           if k in KNOWN}, stream_ms(entry_id))  # extras ignored
    except UnicodeDecodeError:
        return "bad_encoding"
    except InvalidTick as e:
        return e.reason if fields else "deleted"  # XDELed while pending
    return tick.ticker, tick.price, tick.volume, tick.ts_ms


def parse_control(fields: dict[bytes, bytes]) -> Control | str:
    try:
        action = fields[CONTROL].decode()
        ticker = normalize_ticker(fields[b"ticker"].decode())
    except (KeyError, UnicodeDecodeError, InvalidTick):
        return "bad_control"
    return Control(action, ticker) if action in CONTROL_ACTIONS else "bad_control"


def _floats(raw: list[bytes]) -> np.ndarray:
    """float() of each value; NaN where it fails or is too long (the slow path decides)."""
    lengths = np.fromiter(map(len, raw), np.int64, len(raw))
    try:
        values = np.array(list(map(float, raw)), np.float64)
    except ValueError:
        values = np.array([_float_or_nan(r) for r in raw], np.float64)
    values[lengths > MAX_FIELD_CHARS] = np.nan
    return values


def _float_or_nan(raw: bytes) -> float:
    try:
        return float(raw)
    except ValueError:
        return float("nan")


def _fast_layout(names: tuple[bytes, ...] | None) -> bool:
    """Whether the fast path can take entries with these field names, in this order."""
    return (names is not None and len(set(names)) == len(names) and KNOWN.issuperset(names)
            and b"ticker" in names and b"price" in names)


def _by_layout(entries: Sequence[RawEntry]) -> dict[tuple[bytes, ...] | None, list[int]]:
    """Positions of the entries grouped by their field names (None: deleted)."""
    raws = list(map(itemgetter(1), entries))
    sizes = set(map(len, filter(None, raws)))
    if len(sizes) == 1 and all(raws):  # the usual case, one producer format: C-level check
        (size,) = sizes
        layouts = set(map(itemgetter(*range(0, size, 2)), raws))
        if len(layouts) == 1:
            (names,) = layouts
            return {names if size > 2 else (names,): list(range(len(raws)))}
    keys = [tuple(raw[0::2]) if raw else None for raw in raws]
    groups: dict[tuple[bytes, ...] | None, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


def _fast_group(entries: Sequence[RawEntry], where: list[int], names: tuple[bytes, ...],
                cache: TickerCache) -> Columns:
    """Column checks for entries sharing one field layout: (ok mask, tickers, columns)."""
    if len(where) == len(entries):
        fields = list(map(itemgetter(1), entries))
    else:
        fields = [entries[i][1] for i in where]
    pos = {name: 2 * names.index(name) + 1 for name in names}

    def column(name: bytes) -> list[bytes]:
        return list(map(itemgetter(pos[name]), fields))

    n = len(where)
    has_volume, has_ts = b"volume" in pos, b"ts" in pos
    zeros = np.zeros(n)
    return _vouched(True, cache.lookup(column(b"ticker")), _floats(column(b"price")),
                    _floats(column(b"volume")) if has_volume else zeros, has_volume,
                    _floats(column(b"ts")) if has_ts else zeros, has_ts,
                    None if has_ts else np.array([stream_ms(entries[i][0]) for i in where],
                                                 np.int64))


def _vouched(fast: np.ndarray | bool, tickers: list[str | None], price: np.ndarray,
             volume: np.ndarray, has_volume: np.ndarray | bool, ts: np.ndarray,
             has_ts: np.ndarray | bool, id_ms: np.ndarray | None) -> Columns:
    """The fast path's verdict on parsed columns: models/ticks.py's value rules, column-wise.
    `has_*`: whether each entry (or every entry) has the field; an absent volume is 0, an
    absent ts the stream ID's milliseconds (`id_ms`, needed only where ts is absent)."""
    ok = fast & (price >= MIN_PRICE) & (price <= MAX_PRICE)
    if None in tickers:
        ok &= np.array([t is not None for t in tickers])
    ok &= np.logical_not(has_volume) | (np.isfinite(volume) & (volume >= 0))
    ok &= np.logical_not(has_ts) | ((ts >= 0) & (ts <= MAX_TS_MS) & (ts == np.floor(ts)))
    ts_ms = np.where(ok & has_ts, ts, 0).astype(np.int64)
    if id_ms is not None:
        ts_ms = np.where(has_ts, ts_ms, id_ms)
    return ok, tickers, price, volume, ts_ms


def _list_columns(entries: Sequence[RawEntry], cache: TickerCache) -> Columns:
    """The fast path over a list of entries: (vouched mask, tickers, price, volume, ts)."""
    n = len(entries)
    ok = np.zeros(n, bool)
    tickers: list[str | None] = [None] * n
    price, volume, ts_ms = np.zeros(n), np.zeros(n), np.zeros(n, np.int64)
    for names, where in _by_layout(entries).items():
        if not _fast_layout(names):
            continue
        g_ok, g_tickers, g_price, g_volume, g_ts = _fast_group(entries, where, names, cache)
        if len(where) == n:  # one layout: the columns are already in stream order
            return g_ok, g_tickers, g_price, g_volume, g_ts
        ok[where], price[where], volume[where], ts_ms[where] = g_ok, g_price, g_volume, g_ts
        for i, t in zip(where, g_tickers, strict=True):
            tickers[i] = t
    return ok, tickers, price, volume, ts_ms


def parse_entries(entries: Sequence[RawEntry], cache: TickerCache) -> Parsed:
    """Validate every entry; valid ones come back as columns in stream order."""
    n = len(entries)
    ok, tickers, price, volume, ts_ms = (entries.columns(cache) if isinstance(entries, ReadBatch)
                                         else _list_columns(entries, cache))
    rejected: list[tuple[int, str]] = []
    controls: list[tuple[int, Control]] = []
    if not ok.all():
        ok, price, volume, ts_ms = ok.copy(), price.copy(), volume.copy(), ts_ms.copy()
    for i in np.flatnonzero(~ok).tolist():  # everything the fast path did not vouch for
        result = parse_one(entries[i])
        if not isinstance(result, str) and cache.foreign(
                result.ticker if isinstance(result, Control) else result[0]):
            result = WRONG_SHARD
        if isinstance(result, str):
            rejected.append((i, result))
        elif isinstance(result, Control):
            controls.append((i, result))
        else:
            ok[i] = True
            tickers[i], price[i], volume[i], ts_ms[i] = result
    if not rejected and not controls:
        return Parsed(list(range(n)), tickers, price, volume, ts_ms)  # type: ignore[arg-type]
    keep = np.flatnonzero(ok)
    return Parsed(keep.tolist(), [tickers[i] for i in keep.tolist()],  # type: ignore[misc]
                  price[keep], volume[keep], ts_ms[keep], rejected, controls)
