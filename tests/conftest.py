"""Shared fixtures: one real redis-server per test session, emptied after every test."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.embedded_redis import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A redis-server on a free 127.0.0.1 port (never the machine's 6379), for the session."""
    data_dir: Path = tmp_path_factory.mktemp("redis")
    with EmbeddedRedis(data_dir) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """The session server's URL; FLUSHALL afterwards so no test sees another's keys."""
    yield redis_server.url
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A bytes-in, bytes-out client (decode_responses=False), as the service uses."""
    with redis.Redis.from_url(redis_url, decode_responses=False) as client:
        yield client


def pytest_configure(config: pytest.Config) -> None:
    """Deterministic TensorFlow for every learner in this process, set before its first op."""
    from models.online import make_deterministic

    make_deterministic()
