"""The naive reference: the loop a Keras user writes from the stateful-LSTM tutorials.

One `model.predict` per tick on the stateful batch-size-N model: the tick's row carries
its features, every call runs the whole (N, 1, F) batch. Timed on a sample of ticks, since
each call costs tens of milliseconds.

`python -m bench.naive MODEL_DIR N TICKS RUNS SEED` prints the rate: bench.e2e runs it so,
in a process of its own, with TensorFlow's default threads as a Keras user has them (the
bench's own process runs TensorFlow as `tickstream serve` does: one thread per op).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from models.artifact import load_artifact
from models.features import FEATURES

WARMUP_CALLS = 3  # tracing and first allocations are not per-tick costs


def predict_loop_rate(model_dir: Path, n_rows: int, ticks: int, runs: int,
                      seed: int = 0) -> float:
    """Median over `runs` of ticks/s for `ticks` one-tick predict calls."""
    from models.lstm import build_model

    artifact = load_artifact(model_dir)
    model = build_model(n_rows, artifact.meta.units, len(FEATURES))
    model.set_weights(artifact.model.get_weights())
    rng = np.random.default_rng(seed)
    x = np.zeros((n_rows, 1, len(FEATURES)), np.float32)

    def one_tick() -> None:
        x[rng.integers(n_rows), 0] = rng.standard_normal(len(FEATURES))
        model.predict(x, batch_size=n_rows, verbose=0)

    for _ in range(WARMUP_CALLS):
        one_tick()
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(ticks):
            one_tick()
        rates.append(ticks / (time.perf_counter() - t0))
    return statistics.median(rates)


def predict_loop_rate_apart(model_dir: Path, n_rows: int, ticks: int, runs: int,
                            seed: int = 0) -> float:
    """`predict_loop_rate` in a fresh Python process (TensorFlow's default threads)."""
    out = subprocess.run([sys.executable, "-m", "bench.naive", str(model_dir), str(n_rows),
                          str(ticks), str(runs), str(seed)], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parent.parent).stdout
    return float(out.split()[-1])


if __name__ == "__main__":
    directory, n, t, r, s = sys.argv[1:6]
    print(predict_loop_rate(Path(directory), int(n), int(t), int(r), seed=int(s)))
