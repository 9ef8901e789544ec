"""Real processes for end-to-end and crash tests: a redis-server and `tickstream serve`
(real uvicorn) that the tests start, SIGKILL and restart themselves."""

from collections.abc import Iterator
from pathlib import Path

import keras
import pytest
from harness import ServiceProcess

from models.artifact import ModelMeta, save_artifact
from models.features import FEATURES
from models.lstm import build_model
from service.embedded_redis import EmbeddedRedis


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A private redis-server (AOF on, fsync always) that a test may kill and restart."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def artifact_dir(tmp_path: Path) -> Path:
    """A small model with identity target scaling, so served = raw model outputs."""
    keras.utils.set_random_seed(5)
    meta = ModelMeta(features=list(FEATURES), feature_mean=[0.0, 5.0, 0.5],
                     feature_std=[1e-3, 2.0, 0.5], target_mean=0.0, target_std=1.0,
                     units=[16], look_back=8)
    save_artifact(tmp_path / "model", build_model(8, [16], len(FEATURES)), meta)
    return tmp_path / "model"


@pytest.fixture
def service_factory(tmp_path: Path, redis_proc: EmbeddedRedis, artifact_dir: Path):
    made: list[ServiceProcess] = []

    def make(**settings: str) -> ServiceProcess:
        env = {"TICKSTREAM_REDIS_URL": redis_proc.url, "TICKSTREAM_MODEL_DIR": str(artifact_dir),
               "TICKSTREAM_DATA_DIR": str(tmp_path / "data"), "TICKSTREAM_INITIAL_ROWS": "4",
               # every output is checked over the whole run: keep them all
               "TICKSTREAM_PREDICTIONS_RETENTION_S": "0",
               # the oracle is batch-size-1 Keras with the artifact's weights
               "TICKSTREAM_LEARN": "false",
               **{f"TICKSTREAM_{k.upper()}": v for k, v in settings.items()}}
        service = ServiceProcess(tmp_path, env)
        made.append(service)
        return service

    yield make
    for service in made:
        service.stop()


