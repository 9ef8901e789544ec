"""Admitting a batch: validate its entries, then give each tick its row, in stream order.

What is admitted, and which row a tick gets, depends only on the entries and the state
before them (the registry, each row's last tick): the same in a live run and a replay,
whatever the batch cuts. Bad entries become dead letters with their reason; a tick older
than its row's last, or a new ticker beyond MAX_TICKERS, too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from models.rows import grouped
from service.entries import Parsed, RawEntry, TickerCache, ids_of, parse_entries
from service.types import Row

if TYPE_CHECKING:
    from service.state import RowState


@dataclass
class Batch:
    """Entries admitted: the ticks to apply (columns, in stream order) and their rows."""

    dead: list[tuple[int, str]] = field(default_factory=list)  # (position in batch, reason)
    ticks: Parsed = field(default_factory=Parsed)  # the ones to apply
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.intp))  # of each tick
    ids: list[bytes] = field(default_factory=list)  # of each tick
    added: dict[str, Row] = field(default_factory=dict)
    evicted: list[str] = field(default_factory=list)
    last_id: str | None = None


def admit(entries: Sequence[RawEntry], parsed: Parsed | None, state: RowState,
          names: TickerCache) -> Batch:
    """Validate `entries` (or take them `parsed` already) and find each tick's row,
    registering new tickers. Control entries must have been split off by the caller."""
    b = Batch()
    if not entries:
        return b
    ids = ids_of(entries)
    b.last_id = ids[-1].decode()
    ticks = parsed or parse_entries(entries, names)
    b.dead = list(ticks.rejected)
    rows = state.registry.rows_of(ticks.ticker)
    if None in rows or not _in_order(state, np.array(rows, np.intp), ticks.ts_ms):
        keep, rows = _admit_in_order(state, ticks, b)
        ticks = _take(ticks, keep)
    b.ticks, b.rows = ticks, np.array(rows, np.intp)
    b.ids = ids if len(ticks.index) == len(entries) else [ids[i] for i in ticks.index]
    return b


def _in_order(state: RowState, rows: np.ndarray, ts_ms: np.ndarray) -> bool:
    """No tick older than the last applied tick of its row (in the batch or before)."""
    if not len(rows):
        return True
    order = grouped(rows)
    r, t = rows[order], ts_ms[order]
    first_of_row = np.concatenate(([True], r[1:] != r[:-1]))
    before = np.where(state.last.price[r] > 0, state.last.ts_ms[r], -1)
    # each tick against the tick before it in its row, or the row's last applied tick
    return bool((t[1:] >= t[:-1])[~first_of_row[1:]].all()
                and (t >= before)[first_of_row].all())


def _admit_in_order(state: RowState, ticks: Parsed, b: Batch) -> tuple[list[int], list[Row]]:
    """Tick by tick, in stream order: register new tickers (growing or recycling rows)
    and reject ticks beyond capacity or out of order. Returns the kept ticks (indices
    into `ticks`) and their rows."""
    seen: dict[str, tuple[Row | None, int]] = {}  # ticker -> (row, ts of its last tick)
    keep: list[int] = []
    rows: list[Row] = []
    for j, (ticker, ts_ms) in enumerate(zip(ticks.ticker, ticks.ts_ms.tolist(), strict=True)):
        known = seen.get(ticker)
        if known is None:
            known = seen[ticker] = _admit_ticker(state, ticker, ts_ms, seen, b)
        row, prev_ts = known
        if row is None:
            b.dead.append((ticks.index[j], "capacity"))
        elif ts_ms < prev_ts:
            b.dead.append((ticks.index[j], "out_of_order"))
        else:
            seen[ticker] = (row, ts_ms)
            keep.append(j)
            rows.append(row)
    b.dead.sort()
    return keep, rows


def _admit_ticker(state: RowState, ticker: str, ts_ms: int,
                  seen: dict[str, tuple[Row | None, int]], b: Batch) -> tuple[Row | None, int]:
    """The ticker's row and last applied ts (-1: none); a new ticker gets a row if any."""
    registry = state.registry
    row = registry.row(ticker)
    if row is not None:
        has_last = state.last.price[row] > 0
        return row, int(state.last.ts_ms[row]) if has_last else -1
    row = registry.assign(ticker)
    if row is None:
        busy = {r for r, _ in seen.values() if r is not None}
        recycled = registry.recycle(ticker, ts_ms, state.last.ts_ms, busy)
        if recycled is None:
            return None, -1
        row, evicted = recycled
        state.clear_rows(np.array([row]))
        b.evicted.append(evicted)
    elif registry.capacity > state.stepper.n_rows:
        state.grow(registry.capacity)
    b.added[ticker] = row
    return row, -1


def _take(ticks: Parsed, keep: list[int]) -> Parsed:
    """The ticks at `keep` (indices into the columns), as columns again."""
    return Parsed([ticks.index[j] for j in keep], [ticks.ticker[j] for j in keep],
                  ticks.price[keep], ticks.volume[keep], ticks.ts_ms[keep], ticks.rejected)
