"""Step benchmark: what one online step costs with `LSTMStepper` versus stepping Keras itself.

The service exists because of one claim (DESIGN.md): stepping the stateful LSTM through
Keras costs milliseconds of fixed overhead per call, so the ingest loop runs the same
equations in numpy and amortises what fixed cost is left over every tick of a (N, T, F)
call. This benchmark measures that claim on this machine, in one process, so the numpy
figures and the Keras baselines share the same load: the machine is small and noisy,
so every figure is a median of several timed runs, each run after a warm-up.

Baselines, both on the same stateful batch-size-N model with input (N, 1, F) = one tick
for every row, the way the classic Keras tutorial loop steps a stateful model:
- `model.predict(x, batch_size=N, verbose=0)`, one call per tick;
- eager `model(x)`, one call per tick (context: the cheapest plain-Keras call).

Two ratios, because "per tick" can be read two ways and they differ by a factor of N:
- `predict call / step tick`: the whole predict call against one ticker-tick of `step`,
  i.e. a loop that spends one predict call per tick of each ticker;
- `predict/N / step tick`: like for like; one predict call advances all N rows by one
  tick, so its cost per ticker-tick is the call time divided by N.

Run: `tickstream bench step`, or `python -m bench.step`.

`tickstream bench step --skew` (or `python -m bench.step skew`) times `step_ticks` alone on
the ingest loop's micro-batches (1,000 ticks over N = 500 tickers) of each traffic shape of
`bench.traffic`: skew turns a batch into a long chain of dependent one-row timesteps (Zipf:
the busiest ticker has ~240 ticks per batch; hot: ~900), so µs per tick there measures
per-timestep overhead.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

N_FEATURES = 3
RUN_SECONDS = 0.2  # target length of one timed run of `step` (several calls)


def _median_run(fn: Callable[[], object], repeats: int) -> float:
    """Median over `repeats` runs of the per-call seconds of `fn`, after a warm-up.

    Each run makes enough calls to last about RUN_SECONDS, so timer resolution and one
    scheduler hiccup do not dominate the fast (sub-millisecond) calls.
    """
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    calls = max(1, math.ceil(RUN_SECONDS / once))
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - t0) / calls)
    return statistics.median(runs)


def _median_call(fn: Callable[[], object], samples: int) -> float:
    """Median seconds of single calls of `fn` (Keras calls are slow enough to time one by one)."""
    for _ in range(3):  # tracing and first-call allocation are not per-tick costs
        fn()
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_step_bench(
    sizes: Sequence[int] = (10, 100, 500, 2000),
    units: int = 64,
    steps: Sequence[int] = (1, 4, 16),
    repeats: int = 5,
    predict_sample: int = 20,
    progress: Callable[[str], None] = print,
) -> list[dict]:
    """One row per (N, T): `LSTMStepper.step` timings next to Keras per-tick baselines.

    Keys: n, units, t, step_call_ms, step_tick_us, predict_ms, eager_ms, ratio_call,
    ratio_row (see the module docstring for what the two ratios mean).
    """
    import keras  # imported here: loading TensorFlow takes seconds, keep module import cheap

    from models.lstm import LSTMStepper, build_model

    rng = np.random.default_rng(0)
    rows: list[dict] = []
    for n in sizes:
        keras.utils.set_random_seed(0)
        model = build_model(n, [units], N_FEATURES)
        x1 = rng.standard_normal((n, 1, N_FEATURES)).astype(np.float32)
        progress(f"N={n} H={units}: model.predict per tick ({predict_sample} calls)")
        predict_s = _median_call(
            partial(model.predict, x1, batch_size=n, verbose=0), predict_sample
        )
        progress(f"N={n} H={units}: eager model(x) per tick ({predict_sample} calls)")
        eager_s = _median_call(partial(model, x1, training=False), predict_sample)
        stepper = LSTMStepper.from_keras(model)
        for t in steps:
            x = rng.standard_normal((n, t, N_FEATURES)).astype(np.float32)
            mask = np.ones((n, t), bool)
            progress(f"N={n} H={units} T={t}: stepper.step ({repeats} runs)")
            step_s = _median_run(partial(stepper.step, x, mask), repeats)
            tick_s = step_s / (n * t)
            rows.append(
                {
                    "n": n,
                    "units": units,
                    "t": t,
                    "step_call_ms": step_s * 1e3,
                    "step_tick_us": tick_s * 1e6,
                    "predict_ms": predict_s * 1e3,
                    "eager_ms": eager_s * 1e3,
                    "ratio_call": predict_s / tick_s,
                    "ratio_row": predict_s / n / tick_s,
                }
            )
            progress(
                f"  step {step_s * 1e3:.3f} ms/call, {tick_s * 1e6:.2f} us/tick; "
                f"predict {predict_s * 1e3:.1f} ms/call"
            )
        keras.backend.clear_session()
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """The rows as a Markdown table, the form BENCHMARKS.md keeps."""
    head = (
        "| N | H | T | step / call (ms) | step / tick (µs) | predict / call (ms) "
        "| eager model(x) / call (ms) | predict call / step tick | predict/N / step tick |"
    )
    lines = [head, "|" + "---:|" * 9]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['units']} | {r['t']} | {r['step_call_ms']:.3f} "
            f"| {r['step_tick_us']:.2f} | {r['predict_ms']:.1f} | {r['eager_ms']:.1f} "
            f"| {r['ratio_call']:,.0f}x | {r['ratio_row']:,.1f}x |"
        )
    return "\n".join(lines)


def run_skew_bench(
    shapes: Sequence[str] = ("uniform", "zipf", "hot"),
    n: int = 500,
    units: int = 64,
    batch: int = 1000,
    batches: int = 10,
    repeats: int = 7,
    progress: Callable[[str], None] = print,
) -> list[dict]:
    """One row per traffic shape: `step_ticks` on `batches` batches of `batch` ticks.

    Keys: shape, n, units, busiest (most ticks of one row in a batch, the chain length),
    tick_us (median over `repeats` runs of the µs per tick).
    """
    import keras

    from bench.traffic import ticker_index
    from models.lstm import LSTMStepper, build_model
    from service.malloc import keep_freed_memory

    keep_freed_memory()  # as in the ingest loop: the step's temporaries are reused warm
    keras.utils.set_random_seed(0)
    stepper = LSTMStepper.from_keras(build_model(n, [units], N_FEATURES))
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    for shape in shapes:
        data = [(ticker_index(shape, n, batch, rng),
                 rng.standard_normal((batch, N_FEATURES)).astype(np.float32))
                for _ in range(batches)]

        def drain(data: list[tuple[np.ndarray, np.ndarray]] = data) -> None:
            for r, x in data:
                stepper.step_ticks(r, x)

        progress(f"{shape}: step_ticks on {batches} batches of {batch} ({repeats} runs)")
        tick_s = _median_run(drain, repeats) / (batches * batch)
        busiest = max(int(np.bincount(r).max()) for r, _ in data)
        rows.append({"shape": shape, "n": n, "units": units, "busiest": busiest,
                     "tick_us": tick_s * 1e6})
    return rows


def format_skew_table(rows: Sequence[dict]) -> str:
    lines = ["| shape | N | H | busiest row (ticks / batch) | step_ticks / tick (µs) |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['n']} | {r['units']} | {r['busiest']} "
                     f"| {r['tick_us']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["skew"]:
        print(format_skew_table(run_skew_bench()))
    else:
        print(format_table(run_step_bench()))
