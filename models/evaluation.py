"""Live evaluation, test-then-train: each prediction is scored when its target arrives.

When a ticker's next tick comes, the prediction made at its previous tick is scored
against the realised log return before anything learns from that return, so no score
comes from a prediction that saw its own answer (prequential evaluation, as River's
progressive validation with delayed labels). The zero forecast (the random walk) is
scored beside it: skill = 1 - MSE_model / MSE_zero.

Per row: exponentially weighted MSEs (half-life in the row's ticks) and sums since start.
Rows are updated one rank at a time (a row's 1st tick of the run, then its 2nd, ...), each
an elementwise operation, so the figures do not depend on how the stream was cut into
batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# each array of the state, with its dtype; all (N,)
FIELDS = {"pred": np.float64, "has_pred": bool, "ewm_model": np.float64,
          "ewm_zero": np.float64, "sum_model": np.float64, "sum_zero": np.float64,
          "count": np.int64, "hits": np.int64, "signed": np.int64}


@dataclass(frozen=True)
class Quality:
    """Scores of one ticker or of all: EWMA and since-start MSEs, skill, signs called."""

    scored: int
    mse_model: float | None
    mse_zero: float | None
    skill: float | None
    mse_model_total: float | None
    mse_zero_total: float | None
    skill_total: float | None
    sign_hit_rate: float | None

    @classmethod
    def of(cls, scored: int, ewm_m: float, ewm_z: float, sum_m: float, sum_z: float,
           hits: int, signed: int) -> Quality:
        if scored == 0:
            return cls(0, None, None, None, None, None, None, None)
        return cls(scored, ewm_m, ewm_z, _skill(ewm_m, ewm_z), sum_m / scored, sum_z / scored,
                   _skill(sum_m, sum_z), hits / signed if signed else None)


def _skill(model: float, zero: float) -> float | None:
    return 1.0 - model / zero if zero > 0 else None


class Evaluator:
    """Prequential scores per row; the state is a handful of (N,) arrays."""

    def __init__(self, n_rows: int, halflife: float) -> None:
        self.alpha = 1.0 - 0.5 ** (1.0 / halflife)
        self.arrays = {name: np.zeros(n_rows, dtype) for name, dtype in FIELDS.items()}

    def observe(self, rows: np.ndarray, realised: np.ndarray, predicted: np.ndarray) -> None:
        """A run of ticks in stream order: score each row's standing prediction against the
        tick's realised log return, then let the tick's own prediction stand."""
        if not len(rows):
            return
        a = self.arrays
        order = np.argsort(rows, kind="stable")
        r = rows[order]
        first = np.ones(len(r), bool)
        first[1:] = r[1:] != r[:-1]
        starts = np.flatnonzero(first)
        rank = np.arange(len(r)) - np.repeat(starts, np.diff(np.append(starts, len(r))))
        for s in range(int(rank.max()) + 1):
            at = order[rank == s]  # each row's s-th tick of the run, one per row
            rr, ret = rows[at], realised[at]
            scored = a["has_pred"][rr]
            if scored.any():
                rs, ret_s = rr[scored], ret[scored]
                err_m = np.square(a["pred"][rs] - ret_s)
                err_z = np.square(ret_s)
                fresh = a["count"][rs] == 0
                for name, err in (("ewm_model", err_m), ("ewm_zero", err_z)):
                    old = a[name][rs]
                    a[name][rs] = np.where(fresh, err, old + self.alpha * (err - old))
                a["sum_model"][rs] += err_m
                a["sum_zero"][rs] += err_z
                a["count"][rs] += 1
                nonzero = ret_s != 0
                a["signed"][rs] += nonzero
                a["hits"][rs] += nonzero & (np.sign(a["pred"][rs]) == np.sign(ret_s))
            a["pred"][rr] = predicted[at]
            a["has_pred"][rr] = True

    def skills(self) -> list[float | None]:
        """Each row's weighted skill (None until scored): what a prediction response shows."""
        a = self.arrays
        ok = (a["count"] > 0) & (a["ewm_zero"] > 0)
        skill = 1.0 - a["ewm_model"] / np.where(ok, a["ewm_zero"], 1.0)
        return [v if good else None for v, good in zip(skill.tolist(), ok.tolist(), strict=True)]

    def row(self, r: int) -> Quality:
        a = self.arrays
        return Quality.of(int(a["count"][r]), float(a["ewm_model"][r]), float(a["ewm_zero"][r]),
                          float(a["sum_model"][r]), float(a["sum_zero"][r]), int(a["hits"][r]),
                          int(a["signed"][r]))

    def overall(self, k: int) -> Quality:
        """All of the first k rows: since-start sums pooled; the EWMAs averaged over the
        tickers scored so far (each ticker weighs the same, busy or quiet)."""
        a = {name: v[:k] for name, v in self.arrays.items()}
        seen = a["count"] > 0
        if not seen.any():
            return Quality.of(0, 0, 0, 0, 0, 0, 0)
        return Quality.of(int(a["count"].sum()), float(a["ewm_model"][seen].mean()),
                          float(a["ewm_zero"][seen].mean()), float(a["sum_model"].sum()),
                          float(a["sum_zero"].sum()), int(a["hits"].sum()),
                          int(a["signed"].sum()))

    def copy(self, k: int) -> Evaluator:
        """The scores of the first k rows, as they are now, for readers on other threads."""
        out = Evaluator.__new__(Evaluator)
        out.alpha = self.alpha
        out.arrays = {name: v[:k].copy() for name, v in self.arrays.items()}
        return out

    def grow(self, n_rows: int) -> None:
        for name, v in self.arrays.items():
            if n_rows > len(v):
                self.arrays[name] = np.concatenate([v, np.zeros(n_rows - len(v), v.dtype)])

    def clear_rows(self, rows: np.ndarray) -> None:
        """A recycled row belongs to a new ticker: its scores start over."""
        for v in self.arrays.values():
            v[rows] = 0

    def export_state(self, k: int) -> dict[str, np.ndarray]:
        return {f"eval.{name}": v[:k].copy() for name, v in self.arrays.items()}

    def import_state(self, arrays: dict[str, np.ndarray], k: int) -> None:
        for name, v in self.arrays.items():
            if f"eval.{name}" in arrays:
                v[:k] = arrays[f"eval.{name}"]
