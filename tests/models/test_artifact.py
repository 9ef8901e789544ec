"""Artifacts load safely: code-carrying files and tampered files are refused."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from models.artifact import META_FILE, ArtifactError, ModelMeta, load_artifact, save_artifact
from models.features import FEATURES
from models.lstm import build_model


def meta(units: list[int]) -> ModelMeta:
    return ModelMeta(features=list(FEATURES), feature_mean=[0.0, 1.0, 2.0],
                     feature_std=[1.0, 2.0, 3.0], target_mean=0.5, target_std=2.0,
                     units=units, look_back=8, training={"tickers": 4})


def test_round_trip_keeps_weights_and_metadata(tmp_path: Path):
    model = build_model(4, [8, 4], 3)
    saved = save_artifact(tmp_path, model, meta([8, 4]))
    loaded = load_artifact(tmp_path)
    assert len(saved.model_version) == 16
    assert loaded.meta == saved
    for a, b in zip(model.get_weights(), loaded.model.get_weights(), strict=True):
        assert np.array_equal(a, b)
    assert loaded.meta.target_scaler.inverse(np.array([1.0]))[0] == pytest.approx(2.5)


def test_model_version_changes_with_content(tmp_path: Path):
    keras.utils.set_random_seed(0)
    a = save_artifact(tmp_path / "a", build_model(4, [8], 3), meta([8]))
    keras.utils.set_random_seed(1)
    b = save_artifact(tmp_path / "b", build_model(4, [8], 3), meta([8]))
    assert a.model_version != b.model_version


def test_lambda_layer_is_refused(tmp_path: Path):
    inputs = keras.Input(batch_shape=(4, None, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)  # arbitrary code in the file
    x = keras.layers.LSTM(8, stateful=True, return_sequences=True)(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    save_artifact(tmp_path, model, meta([8]))
    with pytest.raises(ArtifactError, match=r"(?i)refusing to load.*(lambda|safe_mode)"):
        load_artifact(tmp_path)


def test_tampered_metadata_is_refused(tmp_path: Path):
    save_artifact(tmp_path, build_model(4, [8], 3), meta([8]))
    body = json.loads((tmp_path / META_FILE).read_text())
    body["target_std"] = 100.0
    (tmp_path / META_FILE).write_text(json.dumps(body))
    with pytest.raises(ArtifactError, match="does not match"):
        load_artifact(tmp_path)


def test_missing_files_and_foreign_architectures_are_refused(tmp_path: Path):
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path)
    inputs = keras.Input(batch_shape=(4, None, 3))
    x = keras.layers.GRU(8, stateful=True, return_sequences=True)(inputs)
    save_artifact(tmp_path, keras.Model(inputs, keras.layers.Dense(1)(x)), meta([8]))
    with pytest.raises(ArtifactError, match="unexpected layer"):
        load_artifact(tmp_path)
