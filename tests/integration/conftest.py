"""The engine fixture every integration module shares; each module supplies `artifact`."""

from collections.abc import Callable, Iterator

import pytest

from models.artifact import Artifact
from service.config import Settings
from service.ingest import Engine

StartEngine = Callable[..., Engine]


def settings(**overrides: object) -> Settings:
    # every output is checked over the whole test: keep the predictions stream whole; the
    # oracle is batch-size-1 Keras with the artifact's weights: learning off unless asked
    return Settings(**{"batch_count": 64, "block_ms": 10, "predictions_retention_s": 0,
                       "learn": False, **overrides})


@pytest.fixture
def start_engine(redis_url: str, artifact: Artifact) -> Iterator[StartEngine]:
    """`start_engine(**settings)` starts an Engine on the session Redis; all stop at the end."""
    engines: list[Engine] = []

    def start(url: str = redis_url, **overrides: object) -> Engine:
        engine = Engine(settings(**overrides), artifact, url)
        engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.stop()
