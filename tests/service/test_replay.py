"""`tickstream replay`, the offline twin: the engine's loop over a tick table, run as users
run it (the real CLI); what it says about a learner on a changing market and on real prices.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.adapt import market, measure, trained_on_first_regime
from bench.real_prices import vega_stocks
from models.reference import keras_reference
from models.synthetic import SyntheticMarket
from models.ticks import read_csv

TICKSTREAM = str(Path(sys.executable).with_name("tickstream"))


def write_ticks(path: Path, n_tickers: int, n: int, seed: int) -> Path:
    ticks = SyntheticMarket(n_tickers, seed).ticks(n)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ticker", "ts", "price", "volume"])
        for t in ticks.ticks():
            w.writerow([t.ticker, t.ts_ms, repr(t.price), repr(t.volume)])
    return path


def replay(tmp_path: Path, ticks: Path, name: str, *flags: str) -> tuple[list[dict], dict]:
    out = tmp_path / f"{name}.csv"
    done = subprocess.run([TICKSTREAM, "replay", "--csv", str(ticks), "--out", str(out),
                           "--data-dir", str(tmp_path / "data"), *flags],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RMSE model" in done.stdout
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((tmp_path / f"{name}.summary.json").read_text())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small artifact trained by the CLI itself."""
    directory = tmp_path_factory.mktemp("model") / "m"
    subprocess.run([TICKSTREAM, "train", "--synthetic", "--tickers", "6", "--ticks-per-ticker",
                    "300", "--epochs", "2", "--out", str(directory)], check=True,
                   capture_output=True, timeout=300)
    return directory


def test_learning_off_replay_is_keras_over_each_ticker_alone(model_dir, tmp_path) -> None:
    ticks = write_ticks(tmp_path / "ticks.csv", 6, 900, seed=5)
    rows, summary = replay(tmp_path, ticks, "frozen", "--model-dir", str(model_dir),
                           "--no-learn", "--batch-count", "64")
    assert len(rows) == summary["applied"] == 900 and summary["learning"]["updates"] == 0
    table, _ = read_csv(ticks)
    from models.artifact import load_artifact

    meta = load_artifact(model_dir).meta
    reference = keras_reference(model_dir, table)
    for ticker, expected in reference.items():
        mine = [r for r in rows if r["ticker"] == ticker]
        got = (np.array([float(r["prediction"]) for r in mine]) - meta.target_mean) \
            / meta.target_std
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        prices = [float(r["last_price"]) for r in mine]
        realised = [float(r["realised"]) for r in mine[:-1]]
        np.testing.assert_allclose(realised, np.diff(np.log(prices)), rtol=1e-9)
        assert mine[-1]["realised"] == ""


def test_learning_on_replay_is_the_same_whatever_its_batch_cuts(model_dir, tmp_path) -> None:
    ticks = write_ticks(tmp_path / "ticks.csv", 6, 3000, seed=6)
    flags = ["--model-dir", str(model_dir), "--learn", "--learn-batch", "4",
             "--learn-window", "8"]
    end = []
    for cut in ("1000", "45"):
        state = tmp_path / f"state-{cut}.npz"
        _, summary = replay(tmp_path, ticks, f"cut{cut}", *flags, "--batch-count", cut,
                            "--state-out", str(state))
        assert summary["learning"]["updates"] > 20
        with np.load(state, allow_pickle=False) as arrays:
            end.append(dict(arrays))
    learner = [k for k in end[0] if k.startswith("learn.")]
    assert "learn.weight.0" in learner and "learn.opt.1" in learner
    for name in learner:
        assert end[0][name].tobytes() == end[1][name].tobytes(), name


def test_the_online_model_adapts_to_a_regime_change(tmp_path) -> None:
    """The acceptance figures' direction with a fixed seed (BENCHMARKS.md has them)."""
    artifact = trained_on_first_regime(tmp_path / "model", 20, 20_000, seed=1)
    table, bayes = market(20, 40_000, 20_000, seed=1)
    result = measure(artifact, table, bayes, 20_000)
    assert result.updates > 100
    assert result.rmse_online < result.rmse_frozen
    assert result.online_vs_bayes <= 1.15
    assert result.rmse_online < result.rmse_zero


def test_real_prices_with_default_settings_do_no_harm(tmp_path) -> None:
    """vega-datasets' monthly closes of five stocks: the default model and settings must
    not do worse than the random walk (the learner must say ~0 rather than noise)."""
    ticks = vega_stocks(tmp_path / "stocks.csv")
    rows, summary = replay(tmp_path, ticks, "stocks")
    assert summary["applied"] == 560 and summary["tickers"] == 5
    assert summary["rmse_ratio"] <= 1.00
    assert summary["quality"]["scored"] == 555
    assert len(rows) == 560
