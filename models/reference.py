"""The oracle for online = offline: a fresh batch-size-1 Keras model per ticker.

This is deliberately the slow, obvious way — Keras itself, loaded from the artifact file,
one ticker's ticks alone — so the fast online path can be checked against it.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from models.artifact import META_FILE, MODEL_FILE, ModelMeta
from models.features import FEATURES, LastTicks, compute_features
from models.lstm import build_model
from models.ticks import TickTable


def keras_reference(artifact_dir: Path, ticks: TickTable) -> dict[str, np.ndarray]:
    """Ticker -> model outputs (normalised next return) after each of its ticks, in order."""
    meta = ModelMeta.model_validate_json((artifact_dir / META_FILE).read_text())
    loaded = keras.saving.load_model(artifact_dir / MODEL_FILE, compile=False, safe_mode=True)
    single = build_model(1, meta.units, len(FEATURES))
    single.set_weights(loaded.get_weights())
    out = {}
    for ticker in ticks.tickers():
        mine = ticks.take(np.flatnonzero(ticks.ticker == ticker))
        raw, _ = compute_features(np.zeros(len(mine), np.intp), mine.price, mine.volume,
                                  mine.ts_ms, LastTicks.empty(1))
        for layer in single.layers:
            if isinstance(layer, keras.layers.LSTM):
                layer.reset_state()
        x = meta.feature_scaler.transform(raw)[None]  # (1, L, F)
        out[ticker] = np.asarray(single.predict_on_batch(x))[0, :, 0]
    return out
