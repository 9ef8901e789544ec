"""Stateful training learns the synthetic market's predictable part."""

from pathlib import Path

import numpy as np
import pytest

from models.artifact import load_artifact
from models.synthetic import SyntheticMarket
from models.train import TrainConfig, evaluate, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    market = SyntheticMarket(20, seed=7)
    ticks = market.ticks(20 * 400)
    out = tmp_path_factory.mktemp("model")
    artifact, history = train(ticks, TrainConfig(epochs=10, units=(32,), look_back=32), out,
                              verbose=0, source="synthetic seed=7")
    return out, artifact, history, market


def test_beats_zero_return_baseline_on_held_out_ticks(trained, capsys):
    out, _, _, market = trained
    held_out = market.ticks(20 * 200)  # the market's future: never seen in training
    model_rmse, zero_rmse = evaluate(load_artifact(out), held_out)
    with capsys.disabled():
        print(f"\nheld-out RMSE: model {model_rmse:.6f} vs zero-return {zero_rmse:.6f} "
              f"({model_rmse / zero_rmse:.3f}x)")
    assert model_rmse < 0.97 * zero_rmse


def test_loss_falls_and_summary_is_recorded(trained):
    out, artifact, history, _ = trained
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    summary = artifact.meta.training
    assert summary["tickers"] == 20 and summary["ticks"] == 8000
    assert summary["val_rmse"] < summary["val_zero_rmse"]
    assert summary["source"] == "synthetic seed=7"
    assert load_artifact(out).meta.model_version == artifact.meta.model_version


def test_too_little_data_is_refused(tmp_path: Path):
    ticks = SyntheticMarket(20, seed=1).ticks(10)
    with pytest.raises(ValueError, match="too little data"):
        train(ticks, TrainConfig(epochs=1), tmp_path, verbose=0)


def test_synthetic_market_is_determined_by_its_seed():
    a, b, c = (SyntheticMarket(5, s).ticks(300) for s in (3, 3, 4))
    assert a.price.tobytes() == b.price.tobytes() and a.ticker.tolist() == b.ticker.tolist()
    assert a.price.tobytes() != c.price.tobytes()
    assert np.all(np.diff(a.ts_ms) >= 0) and np.all(a.price > 0) and np.all(a.volume >= 0)
    assert len(set(a.ticker.tolist())) == 5
