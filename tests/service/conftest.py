"""A small untrained model for tests that need a model to serve, not a good one."""

from pathlib import Path

import pytest

from models.artifact import Artifact, ModelMeta, load_artifact, save_artifact
from models.features import FEATURES
from models.lstm import build_model


@pytest.fixture(scope="session")
def small_artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("model")
    meta = ModelMeta(features=list(FEATURES), feature_mean=[0.0] * 3, feature_std=[1.0] * 3,
                     target_mean=0.0, target_std=1.0, units=[16], look_back=8)
    save_artifact(directory, build_model(1, [16], len(FEATURES)), meta)
    return directory


@pytest.fixture(scope="session")
def artifact(small_artifact_dir: Path) -> Artifact:
    return load_artifact(small_artifact_dir)
