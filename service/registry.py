"""The ticker <-> row map: each ticker owns one batch row of the stateful LSTM for life.

Rows are handed out densely (0, 1, 2, ...), so the registry is fully described by its map
and the batch size follows from the growth rule; that is why only the map is persisted.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from service.types import Row


class RegistryError(ValueError):
    """A persisted map that cannot be a registry (duplicate or missing rows)."""


def capacity_for(n_tickers: int, initial_rows: int, max_tickers: int) -> int:
    """Batch rows needed for `n_tickers`: start at initial_rows, double, stop at max_tickers.

    A registry restored with more tickers than a since-lowered max_tickers keeps them all.
    """
    capacity = max(1, min(initial_rows, max_tickers))
    while capacity < n_tickers and capacity < max_tickers:
        capacity = min(capacity * 2, max_tickers)
    return max(capacity, n_tickers)


class Registry:
    """Ticker -> row, growing the batch (doubling) up to `max_tickers`.

    With `recycle_idle_ms` set, a new ticker that finds the registry at `max_tickers` takes
    the row of the ticker idle longest, if that one's last tick is older than the limit.
    Idleness is measured in tick time, not wall time, so a replay decides the same way.
    """

    def __init__(self, initial_rows: int, max_tickers: int,
                 recycle_idle_ms: int | None = None, rows: Mapping[str, Row] | None = None,
                 ) -> None:
        rows = dict(rows or {})
        if sorted(rows.values()) != list(range(len(rows))):
            raise RegistryError(f"rows of {len(rows)} tickers must be exactly 0..{len(rows) - 1}")
        self._rows = rows
        self._tickers = sorted(rows, key=rows.__getitem__)  # row -> ticker
        self.initial_rows = initial_rows
        self.max_tickers = max_tickers
        self.recycle_idle_ms = recycle_idle_ms
        self.capacity = capacity_for(len(rows), initial_rows, max_tickers)

    def __len__(self) -> int:
        return len(self._rows)

    def row(self, ticker: str) -> Row | None:
        return self._rows.get(ticker)

    def rows_of(self, tickers: list[str]) -> list[Row | None]:
        """Each ticker's row (None: not registered), in one pass for a whole batch."""
        return list(map(self._rows.get, tickers))

    def ticker(self, row: Row) -> str:
        return self._tickers[row]

    def as_dict(self) -> dict[str, Row]:
        return dict(self._rows)

    def assign(self, ticker: str) -> Row | None:
        """The next row for a ticker not yet registered (growing if needed); None at the cap."""
        if ticker in self._rows:
            raise ValueError(f"{ticker} already has row {self._rows[ticker]}")
        if len(self._rows) >= self.max_tickers:
            return None
        row = len(self._rows)
        if row >= self.capacity:
            self.capacity = capacity_for(row + 1, self.capacity, self.max_tickers)
        self._rows[ticker] = row
        self._tickers.append(ticker)
        return row

    def recycle(self, ticker: str, now_ms: int, last_ts_ms: np.ndarray,
                busy: Collection[Row]) -> tuple[Row, str] | None:
        """Give `ticker` the row of the ticker idle longest, if recycling is on and one is
        idle past the limit; returns (row, evicted ticker). The caller zeroes the row.

        last_ts_ms: (>= len,) each row's last tick ts; busy: rows that must keep their
        ticker (they already have ticks in the batch being built).
        """
        if self.recycle_idle_ms is None or not self._rows:
            return None
        ts = np.array(last_ts_ms[: len(self._rows)], np.int64)
        ts[list(busy)] = np.iinfo(np.int64).max
        row = int(np.argmin(ts))
        if ts[row] >= now_ms - self.recycle_idle_ms:
            return None
        evicted = self._tickers[row]
        del self._rows[evicted]
        self._rows[ticker] = row
        self._tickers[row] = ticker
        return row, evicted
