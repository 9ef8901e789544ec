"""Live evaluation, test-then-train: each prediction is scored when its target arrives.

When a ticker's next tick comes, the prediction made at its previous tick is scored
against the realised log return before anything learns from that return, so no score
comes from a prediction that saw its own answer (prequential evaluation, as River's
progressive validation with delayed labels). The zero forecast (the random walk) is
scored beside it: skill = 1 - MSE_model / MSE_zero.

Per row: exponentially weighted MSEs (half-life in the row's ticks) and sums since start,
moved once per run of ticks in closed form. How the stream is cut into batches moves them
in the last bits only, as it moves the predictions they score (the stepper's float32 sums).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.rows import grouped, padded

# the per-row floats, one column each: weighted MSEs, then sums since start
FLOATS = ("ewm_model", "ewm_zero", "sum_model", "sum_zero")
INTS = ("count", "hits", "signed")  # scored; signs called right; non-zero returns
QUEUE_TICKS = 65_536  # ticks observed and not yet scored, at most


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
    """Prequential scores per row: a few (N,) and (N, k) arrays."""

    def __init__(self, n_rows: int, halflife: float) -> None:
        self.alpha = 1.0 - 0.5 ** (1.0 / halflife)
        self.pred = np.zeros(n_rows)  # each row's standing prediction
        self.has_pred = np.zeros(n_rows, bool)
        self.floats = np.zeros((n_rows, len(FLOATS)))
        self.ints = np.zeros((n_rows, len(INTS)), np.int64)
        self._queued: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._queued_ticks = 0

    def __len__(self) -> int:
        return len(self.pred)

    def observe(self, rows: np.ndarray, realised: np.ndarray, predicted: np.ndarray) -> None:
        """A run of ticks in stream order: score each row's standing prediction against the
        tick's realised log return, then let the tick's own prediction stand.

        Queued, and scored together when the scores are read (or QUEUE_TICKS wait): scoring
        costs ~45 numpy calls whatever the run's size, ~3% of a 1,000-tick loop iteration.
        """
        self._queued.append((np.array(rows), np.array(realised), np.array(predicted)))
        self._queued_ticks += len(rows)
        if self._queued_ticks >= QUEUE_TICKS:
            self._score_queued()

    def _score_queued(self) -> None:
        if self._queued:
            rows, realised, predicted = (np.concatenate(c)
                                         for c in zip(*self._queued, strict=True))
            self._queued, self._queued_ticks = [], 0
            self._score(rows, realised, predicted)

    def _score(self, rows: np.ndarray, realised: np.ndarray, predicted: np.ndarray) -> None:
        m = len(rows)
        if not m:
            return
        order = grouped(rows)
        r, ret, pred = rows[order], realised[order], predicted[order]
        first = np.ones(m, bool)
        first[1:] = r[1:] != r[:-1]
        standing = np.empty(m)  # what each tick scores: its row's previous prediction
        standing[1:] = pred[:-1]
        standing[first] = self.pred[r[first]]
        scored = ~first | self.has_pred[r]
        last = np.append(first[1:], True)
        self.pred[r[last]] = pred[last]
        self.has_pred[r[last]] = True
        if not scored.any():
            return
        rs, ret, standing = r[scored], ret[scored], standing[scored]
        nonzero = ret != 0
        hit = nonzero & (np.sign(standing) == np.sign(ret))
        starts = np.flatnonzero(np.append(True, rs[1:] != rs[:-1]))
        moved = rs[starts]  # each scored row once, with its scored ticks from `starts` on
        n = np.diff(np.append(starts, len(rs)))
        err_m, err_z = np.square(standing - ret), np.square(ret)
        # weighted MSE after n scores: (1 - alpha)^n x before + sum of alpha (1 - alpha)^(n-j)
        # x err_j; a row's first score ever sets it (weight (1 - alpha)^(n-1), before none)
        decay = 1.0 - self.alpha
        fresh = self.ints[moved, 0] == 0
        after = np.repeat(starts + n, n) - 1 - np.arange(len(rs))  # scores after this one
        weight = self.alpha * decay**after
        weight[starts[fresh]] = decay ** (n[fresh] - 1)
        carried = np.where(fresh, 0.0, decay**n)
        f = self.floats
        f[moved, 0] = carried * f[moved, 0] + np.add.reduceat(weight * err_m, starts)
        f[moved, 1] = carried * f[moved, 1] + np.add.reduceat(weight * err_z, starts)
        f[moved, 2] += np.add.reduceat(err_m, starts)
        f[moved, 3] += np.add.reduceat(err_z, starts)
        self.ints[moved] += np.stack([n, np.add.reduceat(hit, starts),
                                      np.add.reduceat(nonzero, starts)], axis=1)

    def skills(self) -> list[float | None]:
        """Each row's weighted skill (None until scored): what a prediction response shows."""
        self._score_queued()
        ewm_m, ewm_z = self.floats[:, 0], self.floats[:, 1]
        ok = (self.ints[:, 0] > 0) & (ewm_z > 0)
        skill = 1.0 - ewm_m / np.where(ok, ewm_z, 1.0)
        return [v if good else None for v, good in zip(skill.tolist(), ok.tolist(), strict=True)]

    def row(self, r: int) -> Quality:
        self._score_queued()
        ewm_m, ewm_z, sum_m, sum_z = self.floats[r].tolist()
        count, hits, signed = self.ints[r].tolist()
        return Quality.of(count, ewm_m, ewm_z, sum_m, sum_z, hits, signed)

    def overall(self) -> Quality:
        """All rows: since-start sums pooled; the EWMAs averaged over the rows scored so
        far (each ticker weighs the same, busy or quiet)."""
        self._score_queued()
        seen = self.ints[:, 0] > 0
        if not seen.any():
            return Quality.of(0, 0, 0, 0, 0, 0, 0)
        ewm_m, ewm_z = self.floats[seen, :2].mean(axis=0).tolist()
        sum_m, sum_z = self.floats[:, 2:].sum(axis=0).tolist()
        count, hits, signed = self.ints.sum(axis=0).tolist()
        return Quality.of(count, ewm_m, ewm_z, sum_m, sum_z, hits, signed)

    def copy(self, k: int) -> Evaluator:
        """The scores of the first k rows, as they are now, for readers on other threads."""
        self._score_queued()
        out = Evaluator(0, 1.0)
        out.alpha = self.alpha
        out.pred, out.has_pred = self.pred[:k].copy(), self.has_pred[:k].copy()
        out.floats, out.ints = self.floats[:k].copy(), self.ints[:k].copy()
        return out

    @classmethod
    def joined(cls, parts: list[Evaluator], halflife: float) -> Evaluator:
        """Several models' scores as one, row after row (for the overall figures of
        several shards' models)."""
        out = Evaluator(0, halflife)
        for p in parts:
            p._score_queued()
        if parts:
            out.pred = np.concatenate([p.pred for p in parts])
            out.has_pred = np.concatenate([p.has_pred for p in parts])
            out.floats = np.concatenate([p.floats for p in parts])
            out.ints = np.concatenate([p.ints for p in parts])
        return out

    def grow(self, n_rows: int) -> None:
        if n_rows > len(self):
            self.pred, self.has_pred = padded(self.pred, n_rows), padded(self.has_pred, n_rows)
            self.floats, self.ints = padded(self.floats, n_rows), padded(self.ints, n_rows)

    def clear_rows(self, rows: np.ndarray) -> None:
        """A recycled row belongs to a new ticker: its scores start over."""
        self._score_queued()
        self.pred[rows], self.has_pred[rows] = 0.0, False
        self.floats[rows], self.ints[rows] = 0.0, 0

    def export_state(self, k: int) -> dict[str, np.ndarray]:
        """Named (k,) arrays for the snapshot: `eval.pred`, `eval.has_pred`, and one per
        figure of FLOATS and INTS."""
        self._score_queued()
        out = {"eval.pred": self.pred[:k].copy(), "eval.has_pred": self.has_pred[:k].copy()}
        out |= {f"eval.{name}": self.floats[:k, j].copy() for j, name in enumerate(FLOATS)}
        out |= {f"eval.{name}": self.ints[:k, j].copy() for j, name in enumerate(INTS)}
        return out

    def import_state(self, arrays: dict[str, np.ndarray], k: int) -> None:
        self._queued, self._queued_ticks = [], 0
        if "eval.pred" not in arrays:
            return  # a snapshot from before live scores: they start now
        self.pred[:k], self.has_pred[:k] = arrays["eval.pred"], arrays["eval.has_pred"]
        for j, name in enumerate(FLOATS):
            self.floats[:k, j] = arrays[f"eval.{name}"]
        for j, name in enumerate(INTS):
            self.ints[:k, j] = arrays[f"eval.{name}"]
