"""Does the online learner adapt? A synthetic market whose regime changes, scored against
its Bayes-optimal forecast, the frozen model and the zero forecast.

The market (models/synthetic.py, `regime_every`) flips the sign of every ticker's AR(1)
coefficient and rescales its volatility at the change; the Bayes-optimal forecast knows
the true coefficients. The model is trained offline on the first regime (as `tickstream
train --synthetic` would), then `replay` runs it over the whole stream, learning on and
off. Figures are over the second half of the span after the change: time to adapt is
spent, what is left is what the learner settled at.

    python -m bench.adapt [--tickers 20] [--ticks 40000] [--change 20000] [--seed 1]
"""

from __future__ import annotations

import argparse
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.artifact import Artifact
from models.synthetic import SyntheticMarket
from models.ticks import TickTable
from service.config import Settings
from service.replay import csv_entries, replay


@dataclass(frozen=True)
class Adaptation:
    rmse_online: float
    rmse_frozen: float
    rmse_bayes: float
    rmse_zero: float
    updates: int
    scored: int

    @property
    def online_vs_bayes(self) -> float:
        return self.rmse_online / self.rmse_bayes

    def table(self) -> str:
        rows = [("online (learning on)", self.rmse_online), ("frozen (learning off)",
                self.rmse_frozen), ("Bayes-optimal", self.rmse_bayes),
                ("zero forecast", self.rmse_zero)]
        lines = ["| forecast | RMSE | x Bayes |", "|---|---:|---:|"]
        lines += [f"| {name} | {v:.6g} | {v / self.rmse_bayes:.3f} |" for name, v in rows]
        return "\n".join(lines)


def market(tickers: int, ticks: int, change: int, seed: int) -> tuple[TickTable, np.ndarray]:
    return SyntheticMarket(tickers, seed, regime_every=change).ticks_and_forecasts(ticks)


def predictions_by_tick(artifact: Artifact, settings: Settings, table: TickTable) -> np.ndarray:
    """The replay's prediction after each tick of `table`, in table order."""
    out = io.StringIO()
    replay(artifact, settings, csv_entries(table, settings.batch_count), out)
    out.seek(0)
    rows = out.read().splitlines()[1:]
    by_id = {}
    for line in rows:
        _, stream_id, _, _, prediction, *_ = line.split(",")
        by_id[stream_id] = float(prediction)
    ids = [entry_id.decode() for batch in csv_entries(table, len(table)) for entry_id, _ in batch]
    return np.array([by_id[i] for i in ids])


def measure(artifact: Artifact, table: TickTable, bayes: np.ndarray, change: int,
            settings: Settings | None = None) -> Adaptation:
    """RMSEs over the second half after the change (ticks whose next tick is known)."""
    settings = settings or Settings()
    online_settings = settings.model_copy(update={"learn": True})
    frozen_settings = settings.model_copy(update={"learn": False})
    online = predictions_by_tick(artifact, online_settings, table)
    frozen = predictions_by_tick(artifact, frozen_settings, table)
    realised = next_returns(table)
    start = change + (len(table) - change) // 2
    window = np.zeros(len(table), bool)
    window[start:] = True
    ok = window & ~np.isnan(realised) & ~np.isnan(bayes)

    def rmse(forecast: np.ndarray) -> float:
        return float(np.sqrt(np.mean((forecast[ok] - realised[ok]) ** 2)))

    counts = _updates(artifact, online_settings, table)
    return Adaptation(rmse(online), rmse(frozen), rmse(bayes), rmse(np.zeros(len(table))),
                      counts, int(ok.sum()))


def _updates(artifact: Artifact, settings: Settings, table: TickTable) -> int:
    state, _ = replay(artifact, settings, csv_entries(table, settings.batch_count), io.StringIO())
    return state.learner.counts.updates


def next_returns(table: TickTable) -> np.ndarray:
    """Each tick's ticker's next log return (NaN for its last tick)."""
    out = np.full(len(table), np.nan)
    last: dict[str, int] = {}
    for i, ticker in enumerate(table.ticker.tolist()):
        j = last.get(ticker)
        if j is not None:
            out[j] = np.log(table.price[i] / table.price[j])
        last[ticker] = i
    return out


def trained_on_first_regime(directory: Path, tickers: int, change: int, seed: int) -> Artifact:
    """The model as `tickstream train --synthetic` makes it, from the first regime only."""
    from models.train import TrainConfig, train

    table, _ = market(tickers, change, change, seed)
    artifact, _ = train(table, TrainConfig(epochs=8), directory, verbose=0,
                        source=f"synthetic tickers={tickers} seed={seed} first regime")
    return artifact


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tickers", type=int, default=20)
    p.add_argument("--ticks", type=int, default=40_000)
    p.add_argument("--change", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    from models.online import make_deterministic

    make_deterministic()
    with tempfile.TemporaryDirectory() as tmp:
        artifact = trained_on_first_regime(Path(tmp) / "model", args.tickers, args.change,
                                           args.seed)
        table, bayes = market(args.tickers, args.ticks, args.change, args.seed)
        result = measure(artifact, table, bayes, args.change)
    print(f"{args.tickers} tickers, {args.ticks:,} ticks, regime change at {args.change:,}, "
          f"seed {args.seed}; {result.updates} updates; scored over the last "
          f"{result.scored:,} ticks (second half after the change)")
    print(result.table())


if __name__ == "__main__":
    main()
