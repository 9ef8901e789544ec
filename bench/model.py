"""The model the benchmarks serve: untrained weights are as costly to step as trained ones."""

from __future__ import annotations

from pathlib import Path

from models.artifact import ModelMeta, save_artifact
from models.features import FEATURES

UNITS = 64  # H of issue 4


def untrained_artifact(directory: Path, units: int = UNITS, seed: int = 0) -> Path:
    """Save a one-layer LSTM(units) artifact with a plausible normalisation; returns `directory`."""
    import keras  # TensorFlow takes seconds to import: only when a model is made

    from models.lstm import build_model

    keras.utils.set_random_seed(seed)
    meta = ModelMeta(features=list(FEATURES), feature_mean=[0.0, 8.0, 0.0],
                     feature_std=[1e-3, 1.5, 0.01], target_mean=0.0, target_std=1e-3,
                     units=[units], look_back=16)
    save_artifact(directory, build_model(1, [units], len(FEATURES)), meta)
    return directory
