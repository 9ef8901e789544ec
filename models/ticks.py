"""What a valid tick is, and a column-wise table of them.

The rules live here once, so training data, the stream and the HTTP API refuse the same
things for the same reasons.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TICKER_PATTERN = re.compile(r"[A-Z0-9._-]{1,16}")
# A ticker as an HTTP client may write it: any case, nothing around it (the stream's
# rules also strip whitespace); the OpenAPI schema states this pattern.
TICKER_INPUT = r"^[A-Za-z0-9._-]{1,16}$"
MAX_FIELD_CHARS = 64  # a price or ts longer than this is garbage, not a number
# Bounds that keep every feature finite: ln(MAX_PRICE / MIN_PRICE) is ~48, not inf.
MIN_PRICE = 1e-9
MAX_PRICE = 1e12
MAX_TS_MS = 32_503_680_000_000  # year 3000: a larger ts is microseconds or garbage


class InvalidTick(ValueError):
    """A tick that must not reach the state; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Tick:
    ticker: str
    price: float
    volume: float
    ts_ms: int


def normalize_ticker(raw: str) -> str:
    ticker = raw.strip().upper()
    if not TICKER_PATTERN.fullmatch(ticker):
        shown = raw if len(raw) <= 20 else raw[:20] + "…"
        raise InvalidTick("bad_ticker", f"ticker {shown!r} must be 1-16 chars of A-Z 0-9 . _ -")
    return ticker


def _number(name: str, raw: str) -> float:
    if len(raw) > MAX_FIELD_CHARS:
        raise InvalidTick(f"bad_{name}", f"{name} is {len(raw)} chars long, not a number")
    try:
        value = float(raw)
    except ValueError:
        raise InvalidTick(f"bad_{name}", f"{name} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidTick(f"bad_{name}", f"{name} must be finite, got {raw!r}")
    return value


def check_price(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise InvalidTick("bad_price", f"price must be finite and > 0, got {value!r}")
    if not MIN_PRICE <= value <= MAX_PRICE:
        raise InvalidTick("bad_price", f"price must be within [{MIN_PRICE:g}, {MAX_PRICE:g}], "
                                       f"got {value!r}")
    return value


def check_volume(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise InvalidTick("bad_volume", f"volume must be finite and >= 0, got {value!r}")
    return value


def check_ts(value: float) -> int:
    if not math.isfinite(value) or value < 0 or value != int(value) or value > MAX_TS_MS:
        raise InvalidTick("bad_ts", f"ts must be whole epoch milliseconds before the year "
                                    f"3000, got {value!r}")
    return int(value)


def parse_tick(fields: Mapping[str, str], default_ts_ms: int | None = None) -> Tick:
    """Validate one tick given as text fields; extra fields are ignored."""
    if "ticker" not in fields:
        raise InvalidTick("missing_field", "field 'ticker' is required")
    if "price" not in fields:
        raise InvalidTick("missing_field", "field 'price' is required")
    ticker = normalize_ticker(fields["ticker"])
    price = check_price(_number("price", fields["price"]))
    volume = check_volume(_number("volume", fields["volume"])) if "volume" in fields else 0.0
    if "ts" in fields:
        ts_ms = check_ts(_number("ts", fields["ts"]))
    elif default_ts_ms is not None:
        ts_ms = default_ts_ms
    else:
        raise InvalidTick("missing_field", "field 'ts' is required here")
    return Tick(ticker, price, volume, ts_ms)


@dataclass(frozen=True)
class TickTable:
    """Ticks as columns, in arrival order."""

    ticker: np.ndarray  # (M,) str
    ts_ms: np.ndarray  # (M,) int64
    price: np.ndarray  # (M,) float64
    volume: np.ndarray  # (M,) float64

    def __len__(self) -> int:
        return len(self.ts_ms)

    @classmethod
    def from_ticks(cls, ticks: Iterable[Tick]) -> TickTable:
        ticks = list(ticks)
        return cls(
            ticker=np.array([t.ticker for t in ticks], dtype=str),
            ts_ms=np.array([t.ts_ms for t in ticks], dtype=np.int64),
            price=np.array([t.price for t in ticks], dtype=np.float64),
            volume=np.array([t.volume for t in ticks], dtype=np.float64),
        )

    def ticks(self) -> list[Tick]:
        return [
            Tick(str(k), float(p), float(v), int(t))
            for k, p, v, t in zip(self.ticker, self.price, self.volume, self.ts_ms, strict=True)
        ]

    def tickers(self) -> list[str]:
        """Distinct tickers in order of first appearance."""
        _, first = np.unique(self.ticker, return_index=True)
        return [str(self.ticker[i]) for i in sorted(first)]

    def take(self, index: np.ndarray) -> TickTable:
        return TickTable(self.ticker[index], self.ts_ms[index], self.price[index],
                         self.volume[index])

    def sorted_by_time(self) -> TickTable:
        return self.take(np.argsort(self.ts_ms, kind="stable"))


def read_csv(path: Path) -> tuple[TickTable, dict[str, int]]:
    """Read `ticker,ts,price[,volume]` (header row required, any row order).

    Returns the valid ticks in time order and a count of skipped rows per reason, so a
    caller can say what it dropped instead of failing on one bad line.
    """
    skipped: dict[str, int] = {}
    ticks: list[Tick] = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"ticker", "ts", "price"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: header needs ticker, ts, price; missing {sorted(missing)}")
        for row in reader:
            fields = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
            try:
                ticks.append(parse_tick(fields))
            except InvalidTick as e:
                skipped[e.reason] = skipped.get(e.reason, 0) + 1
    if not ticks:
        raise ValueError(f"{path}: no valid ticks")
    return TickTable.from_ticks(ticks).sorted_by_time(), skipped
