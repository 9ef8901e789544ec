"""Offline training, the classic stateful way: batch = tickers, row i = ticker i.

Each ticker's feature sequence is cut into consecutive windows of `look_back` steps; batch
k holds window k of every ticker, so with `shuffle=False` the state a row ends one batch
with is the state it starts the next with. Tickers with fewer ticks are padded at the end
and the padding is masked, which leaves their state bit-exactly as it was.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from models.artifact import (
    META_FILE,
    MODEL_FILE,
    Artifact,
    ModelMeta,
    load_artifact,
    save_artifact,
)
from models.features import FEATURES, LastTicks, Scaler, compute_features
from models.lstm import build_model
from models.synthetic import SyntheticMarket
from models.ticks import TickTable

PAD = -1e4  # input value the training model masks out; never a normalised feature


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20  # an upper bound: early stopping usually ends sooner
    units: tuple[int, ...] = (32,)  # one LSTM layer is enough for AR-like structure
    look_back: int = 32  # steps per window = truncated-BPTT length
    val_fraction: float = 0.2  # the last 20% of each ticker's ticks, in time
    patience: int = 3  # epochs without val_loss improvement before stopping
    learning_rate: float = 3e-3  # Adam; the series are short, so learn fast
    seed: int = 0  # weight init and anything else random in training


@dataclass(frozen=True)
class Sequences:
    """Per-ticker sequences in row order: normalised inputs, raw targets, and lengths."""

    inputs: list[np.ndarray]  # each (L_i, F) float64, raw features
    targets: list[np.ndarray]  # each (L_i,) next log return, NaN for the last tick


def ticker_sequences(ticks: TickTable) -> tuple[list[str], Sequences]:
    """Features of each ticker's ticks computed the way the service computes them."""
    tickers = ticks.tickers()
    row_of = {t: i for i, t in enumerate(tickers)}
    rows = np.array([row_of[t] for t in ticks.ticker], np.intp)
    feats, _ = compute_features(rows, ticks.price, ticks.volume, ticks.ts_ms,
                                LastTicks.empty(len(tickers)))
    inputs, targets = [], []
    for i in range(len(tickers)):
        f = feats[rows == i]
        inputs.append(f)
        targets.append(np.r_[f[1:, 0], np.nan])  # next tick's log return
    return tickers, Sequences(inputs, targets)


def _windows(parts: list[np.ndarray], look_back: int, fill: float) -> np.ndarray:
    """Pad each (L_i, ...) part to a whole number of windows and lay out window-major:
    sample w * N + i is window w of row i, so batch w (size N) is window w of every row."""
    n_windows = max(1, -(-max(len(p) for p in parts) // look_back))
    tail = parts[0].shape[1:]
    out = np.full((n_windows, len(parts), look_back, *tail), fill, np.float32)
    for i, p in enumerate(parts):
        padded = np.full((n_windows * look_back, *tail), fill, np.float32)
        padded[: len(p)] = p
        out[:, i] = padded.reshape(n_windows, look_back, *tail)
    return out.reshape(n_windows * len(parts), look_back, *tail)


def _arrays(seq: Sequences, feat: Scaler, target: Scaler, look_back: int):
    x = _windows([feat.transform(s) for s in seq.inputs], look_back, PAD)
    y_parts = [np.nan_to_num(target.transform(t))[:, None] for t in seq.targets]
    w_parts = [(~np.isnan(t)).astype(np.float32) for t in seq.targets]
    return x, _windows(y_parts, look_back, 0.0), _windows(w_parts, look_back, 0.0)


class ResetStatesAtEpochStart(keras.callbacks.Callback):
    """Each epoch reads every sequence from its first tick again, from zero state."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        for layer in self.model.layers:
            if isinstance(layer, keras.layers.LSTM):
                layer.reset_state()


def _split(seq: Sequences, val_fraction: float) -> tuple[Sequences, Sequences]:
    cuts = [round(len(s) * (1 - val_fraction)) for s in seq.inputs]
    train = Sequences([s[:c] for s, c in zip(seq.inputs, cuts, strict=True)],
                      [np.r_[t[: c - 1], np.nan] if c else t[:0]
                       for t, c in zip(seq.targets, cuts, strict=True)])
    val = Sequences([s[c:] for s, c in zip(seq.inputs, cuts, strict=True)],
                    [t[c:] for t, c in zip(seq.targets, cuts, strict=True)])
    return train, val


def train(ticks: TickTable, config: TrainConfig, out_dir: Path, verbose: int = 1,
          source: str = "") -> tuple[Artifact, keras.callbacks.History]:
    """Fit on `ticks` (any order of tickers, time-ordered) and save the artifact."""
    keras.utils.set_random_seed(config.seed)
    tickers, seq = ticker_sequences(ticks)
    train_seq, val_seq = _split(seq, config.val_fraction)
    n_train = sum(len(s) for s in train_seq.inputs)
    if n_train < 2 * len(tickers):
        raise ValueError(f"too little data: {n_train} training ticks for {len(tickers)} tickers")
    targets = np.concatenate(train_seq.targets)
    feat = Scaler.fit(np.concatenate(train_seq.inputs))
    target = Scaler.fit(targets[~np.isnan(targets)])
    x, y, w = _arrays(train_seq, feat, target, config.look_back)
    has_val = sum(len(s) for s in val_seq.inputs) > 0
    val_data = _arrays(val_seq, feat, target, config.look_back) if has_val else None

    n = len(tickers)
    trainer = build_model(n, config.units, len(FEATURES), mask_value=PAD)
    trainer.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    monitor = "val_loss" if has_val else "loss"
    history = trainer.fit(
        x, y, sample_weight=w, batch_size=n, epochs=config.epochs, shuffle=False,
        validation_data=val_data, verbose=verbose,
        callbacks=[ResetStatesAtEpochStart(),
                   keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience,
                                                 restore_best_weights=True)],
    )
    model = build_model(n, config.units, len(FEATURES))  # zero state, no Masking layer
    model.set_weights(trainer.get_weights())

    meta = ModelMeta(
        features=list(FEATURES), feature_mean=feat.mean.tolist(), feature_std=feat.std.tolist(),
        target_mean=float(target.mean), target_std=float(target.std), units=list(config.units),
        look_back=config.look_back,
        training={
            "source": source, "tickers": n, "ticks": len(ticks), "train_ticks": n_train,
            "first_ts_ms": int(ticks.ts_ms.min()), "last_ts_ms": int(ticks.ts_ms.max()),
            "epochs_run": len(history.history["loss"]),
            "loss": [round(v, 6) for v in history.history["loss"]],
            "config": {k: list(v) if isinstance(v, tuple) else v
                       for k, v in asdict(config).items()},
        },
    )
    save_artifact(out_dir, model, meta)
    artifact = load_artifact(out_dir)
    if has_val:
        model_rmse, zero_rmse = evaluate(artifact, ticks, from_fraction=1 - config.val_fraction)
        artifact.meta.training.update(val_rmse=model_rmse, val_zero_rmse=zero_rmse)
        save_artifact(out_dir, model, artifact.meta)
        artifact = load_artifact(out_dir)
    return artifact, history


def predict_sequences(artifact: Artifact, ticks: TickTable) -> tuple[list[str], Sequences,
                                                                     list[np.ndarray]]:
    """Each ticker's de-normalised predictions, stepped online through the serving path."""
    tickers, seq = ticker_sequences(ticks)
    stepper = artifact.stepper(len(tickers))
    feat, target = artifact.meta.feature_scaler, artifact.meta.target_scaler
    preds = []
    for i, s in enumerate(seq.inputs):
        out = stepper.step_ticks(np.full(len(s), i), feat.transform(s))
        preds.append(target.inverse(out))
    return tickers, seq, preds


def evaluate(artifact: Artifact, ticks: TickTable, from_fraction: float = 0.0
             ) -> tuple[float, float]:
    """RMSE of the model's next-return predictions and of always predicting 0, over each
    ticker's ticks from `from_fraction` of its sequence on (the state warms up before)."""
    _, seq, preds = predict_sequences(artifact, ticks)
    err, zero = [], []
    for t, p in zip(seq.targets, preds, strict=True):
        start = round(len(t) * from_fraction)
        ok = ~np.isnan(t[start:])
        err.append((p[start:] - t[start:])[ok])
        zero.append(t[start:][ok])
    e, z = np.concatenate(err), np.concatenate(zero)
    return float(np.sqrt(np.mean(e**2))), float(np.sqrt(np.mean(z**2)))


def synthetic_ticks(n_tickers: int, ticks_per_ticker: int, seed: int,
                    regime_every: int | None = None) -> TickTable:
    market = SyntheticMarket(n_tickers, seed, regime_every=regime_every)
    return market.ticks(n_tickers * ticks_per_ticker)


def ensure_default_model(directory: Path) -> Path:
    """The model `serve` uses when none is given: trained once on the synthetic market.

    Only missing files trigger training; an artifact that is there but refused (tampered,
    carrying code) raises, instead of being silently replaced.
    """
    if (directory / MODEL_FILE).exists() or (directory / META_FILE).exists():
        load_artifact(directory)
    else:
        print(f"no model at {directory}: training a small default on the synthetic market")
        config = TrainConfig(epochs=8, units=(32,), look_back=32)
        staging = directory.with_name(directory.name + ".training")
        shutil.rmtree(staging, ignore_errors=True)
        train(synthetic_ticks(20, 400, seed=0), config, staging, verbose=2,
              source="synthetic tickers=20 seed=0")
        staging.rename(directory)  # a crash mid-training leaves no half artifact behind
    return directory
