"""Per-tick features, the same code for training and serving.

Every feature of a tick is computed against the previous tick *of the same row*; that
previous tick is explicit state (`LastTicks`) so the service can persist it alongside the
LSTM state and a restart computes the very same features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.rows import grouped

FEATURES = ("log_return", "log_volume", "log_gap")
STD_FLOOR = 1e-6  # a constant feature must not divide by zero


@dataclass
class LastTicks:
    """Each row's previous tick. A price of 0 means the row has not seen a tick yet."""

    price: np.ndarray  # (N,) float64
    ts_ms: np.ndarray  # (N,) int64

    @classmethod
    def empty(cls, n_rows: int) -> LastTicks:
        return cls(np.zeros(n_rows, np.float64), np.zeros(n_rows, np.int64))

    def __len__(self) -> int:
        return len(self.price)

    def copy(self) -> LastTicks:
        return LastTicks(self.price.copy(), self.ts_ms.copy())

    def grown(self, n_rows: int) -> LastTicks:
        extra = n_rows - len(self)
        if extra < 0:
            raise ValueError(f"cannot shrink LastTicks from {len(self)} to {n_rows} rows")
        return LastTicks(np.concatenate([self.price, np.zeros(extra)]),
                         np.concatenate([self.ts_ms, np.zeros(extra, np.int64)]))

    def reset_rows(self, rows: np.ndarray) -> None:
        self.price[rows] = 0.0
        self.ts_ms[rows] = 0


def compute_features(
    rows: np.ndarray,  # (M,) int: the row of each tick, ticks in arrival order
    price: np.ndarray,  # (M,) float64, > 0
    volume: np.ndarray,  # (M,) float64, >= 0
    ts_ms: np.ndarray,  # (M,) int64
    last: LastTicks,
) -> tuple[np.ndarray, LastTicks]:
    """Raw (unnormalised) features (M, F) float64, and `last` advanced past these ticks.

    `last` itself is not modified, so a caller can drop the result if its checkpoint fails.
    """
    m = len(rows)
    after = last.copy()
    if m == 0:
        return np.zeros((0, len(FEATURES))), after
    order = grouped(rows)  # groups each row's ticks, keeps their order
    r, p, t = rows[order], price[order], ts_ms[order]
    same_row_before = np.zeros(m, bool)
    same_row_before[1:] = r[1:] == r[:-1]
    prev_p = np.where(same_row_before, _shifted(p), last.price[r])
    prev_t = np.where(same_row_before, _shifted(t), last.ts_ms[r])
    has_prev = prev_p > 0

    feats = np.empty((m, len(FEATURES)), np.float64)
    feats[order, 0] = np.where(has_prev, np.log(p / np.where(has_prev, prev_p, 1.0)), 0.0)
    feats[order, 1] = np.log1p(volume[order])
    gap_s = np.where(has_prev, np.maximum(t - prev_t, 0) / 1000.0, 0.0)
    feats[order, 2] = np.log1p(gap_s)

    is_last_of_row = np.ones(m, bool)
    is_last_of_row[:-1] = r[1:] != r[:-1]
    after.price[r[is_last_of_row]] = p[is_last_of_row]
    after.ts_ms[r[is_last_of_row]] = t[is_last_of_row]
    return feats, after


def _shifted(a: np.ndarray) -> np.ndarray:
    """a[i - 1] at i (a[0] at 0, never used): np.roll's result at a fraction of its cost."""
    out = np.empty_like(a)
    out[0] = a[0]
    out[1:] = a[:-1]
    return out


@dataclass(frozen=True)
class Scaler:
    """(x - mean) / std, with std floored; fitted on training data, stored with the model."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, weights: np.ndarray | None = None) -> Scaler:
        x = np.asarray(x, np.float64)
        mean = np.average(x, axis=0, weights=weights)
        var = np.average((x - mean) ** 2, axis=0, weights=weights)
        return cls(np.asarray(mean), np.maximum(np.sqrt(var), STD_FLOOR))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, np.float64) * self.std + self.mean
