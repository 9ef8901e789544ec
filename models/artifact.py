"""The model artifact: `DIR/model.keras` (weights, architecture) + `DIR/model.json` (the rest).

The JSON carries everything needed to turn ticks into model inputs and outputs back into
returns; `model_version` is a hash of both files' content, so a served prediction names
exactly the weights and normalisation that made it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from pydantic import BaseModel, Field

from models.features import FEATURES, Scaler
from models.lstm import LSTMStepper, lstm_weights

MODEL_FILE = "model.keras"
META_FILE = "model.json"


class ArtifactError(RuntimeError):
    """The artifact is missing, tampered with, or would run code: refuse to serve it."""


class ModelMeta(BaseModel):
    features: list[str]
    feature_mean: list[float]
    feature_std: list[float]
    target_mean: float
    target_std: float
    units: list[int]
    look_back: int
    training: dict[str, Any] = Field(default_factory=dict, description="training data summary")
    model_version: str = ""

    @property
    def feature_scaler(self) -> Scaler:
        return Scaler(np.array(self.feature_mean), np.array(self.feature_std))

    @property
    def target_scaler(self) -> Scaler:
        return Scaler(np.array(self.target_mean), np.array(self.target_std))


@dataclass(frozen=True)
class Artifact:
    model: keras.Model
    meta: ModelMeta

    def stepper(self, n_rows: int) -> LSTMStepper:
        return LSTMStepper.from_keras(self.model, n_rows)


def _content_hash(model_bytes: bytes, meta: ModelMeta) -> str:
    body = json.dumps(meta.model_dump(exclude={"model_version"}), sort_keys=True).encode()
    return hashlib.sha256(model_bytes + b"\0" + body).hexdigest()[:16]


def save_artifact(directory: Path, model: keras.Model, meta: ModelMeta) -> ModelMeta:
    """Write both files; returns the meta with its `model_version` filled in."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / MODEL_FILE)
    meta = meta.model_copy(
        update={"model_version": _content_hash((directory / MODEL_FILE).read_bytes(), meta)}
    )
    (directory / META_FILE).write_text(meta.model_dump_json(indent=2) + "\n")
    return meta


def load_artifact(directory: Path) -> Artifact:
    """Load with `safe_mode=True` and check the pieces agree, or raise `ArtifactError`."""
    model_path, meta_path = directory / MODEL_FILE, directory / META_FILE
    for path in (model_path, meta_path):
        if not path.is_file():
            raise ArtifactError(f"{path} not found: an artifact is {MODEL_FILE} + {META_FILE}")
    try:
        meta = ModelMeta.model_validate_json(meta_path.read_text())
    except ValueError as e:
        raise ArtifactError(f"{meta_path} is not valid model metadata: {e}") from e
    if _content_hash(model_path.read_bytes(), meta) != meta.model_version:
        raise ArtifactError(
            f"{directory}: model_version {meta.model_version!r} does not match the files' "
            "content; they were changed after training or come from different runs"
        )
    try:
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises several types; all mean "do not serve this"
        raise ArtifactError(f"refusing to load {model_path}: {e}") from e
    try:
        layers, _, _ = lstm_weights(model)
    except ValueError as e:
        raise ArtifactError(f"{model_path}: {e}") from e
    if [lw.units for lw in layers] != meta.units or meta.features != list(FEATURES):
        raise ArtifactError(
            f"{directory}: model.json says units={meta.units}, features={meta.features}; "
            f"the model has units={[lw.units for lw in layers]}, this code computes {FEATURES}"
        )
    return Artifact(model, meta)
