"""The engine of one source tree against the bare consumer, learning off: run it under two
trees' PYTHONPATH, alternating, to compare two versions of the engine on this machine.

    PYTHONPATH=/path/to/other/checkout python bench/engine_ab.py 3
    PYTHONPATH=. python bench/engine_ab.py 3

Each run: an embedded Redis (AOF on, fsync always), 1,000,000 uniform ticks over 500
tickers, then `rounds` x (bare XREADGROUP+XACK drain, engine drain). Uses only what older
trees have too (`bench.drain`, `bench.traffic`, `bench.model`); `learn=False` is ignored
by a tree that has no learning.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

if not __package__:  # run as a file, so that PYTHONPATH picks the tree: its own folder
    sys.path.pop(0)  # comes first on sys.path and holds bench/service.py, not `service`

import redis

import service
from bench.drain import bare_drain, engine_drain
from bench.model import untrained_artifact
from bench.traffic import fill, tick_fields
from models.artifact import load_artifact
from service.config import Settings
from service.embedded_redis import EmbeddedRedis

TICKS, TICKERS = 1_000_000, 500


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    try:  # as `tickstream serve` sets TensorFlow up, where the tree has it
        from models.online import make_deterministic

        make_deterministic()
    except ImportError:
        pass
    tree = Path(service.__file__).parent.parent
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        artifact = load_artifact(untrained_artifact(Path(tmp) / "model"))
        fill(redis.Redis.from_url(server.url), server.port, "ticks",
             tick_fields("uniform", TICKERS, TICKS))
        engines, ratios = [], []
        for r in range(rounds):
            bare = bare_drain(server.url, "ticks", f"bare-{r}", 1000)
            settings = Settings(redis_url=server.url, stream="ticks", name=f"ab-{r}",
                                group=f"ab-{r}", batch_count=1000, predictions_stream=f"p-{r}",
                                tick_retention="none", learn=False)
            engine = engine_drain(settings, artifact, server.url)
            engines.append(engine.rate())
            ratios.append(engine.rate() / bare.rate())
            print(f"{tree} round {r + 1}/{rounds}: bare {bare.rate():,.0f}/s, engine "
                  f"{engine.rate():,.0f}/s ({ratios[-1]:.2f}x)", flush=True)
    print(f"{tree}: engine median {statistics.median(engines):,.0f} ticks/s, "
          f"{statistics.median(ratios):.2f}x the bare consumer")


if __name__ == "__main__":
    main()
