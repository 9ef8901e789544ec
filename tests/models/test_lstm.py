"""The stepping core against Keras itself: online = offline, untouched rows stay put."""

from pathlib import Path

import keras
import numpy as np
import pytest

from models.artifact import ModelMeta, load_artifact, save_artifact
from models.features import FEATURES, LastTicks, compute_features
from models.lstm import LSTMStepper, build_model
from models.reference import keras_reference
from models.synthetic import SyntheticMarket
from models.ticks import TickTable

N_TICKERS = 24


def make_artifact(directory: Path, units: list[int], ticks: TickTable, seed: int = 0) -> Path:
    """An untrained model with normalisation fitted on `ticks`: the core must match Keras
    for any weights, and random ones exercise every gate."""
    keras.utils.set_random_seed(seed)
    model = build_model(4, units, len(FEATURES))
    raw, _ = compute_features(np.zeros(len(ticks), np.intp), ticks.price, ticks.volume,
                              ticks.ts_ms, LastTicks.empty(1))
    meta = ModelMeta(features=list(FEATURES), feature_mean=raw.mean(0).tolist(),
                     feature_std=(raw.std(0) + 1e-3).tolist(), target_mean=0.0,
                     target_std=1.0, units=units, look_back=8)
    save_artifact(directory, model, meta)
    return directory


def random_interleaving(ticks: TickTable, rng: np.random.Generator) -> TickTable:
    """A random merge of the tickers' sequences: order across tickers is random, each
    ticker's own order is kept."""
    keys = rng.random(len(ticks))
    for ticker in ticks.tickers():
        mine = np.flatnonzero(ticks.ticker == ticker)
        keys[mine] = np.sort(keys[mine])  # increasing keys keep the ticker's own order
    return ticks.take(np.argsort(keys, kind="stable"))


def run_online(artifact_dir: Path, ticks: TickTable, rng: np.random.Generator,
               initial_rows: int = 4) -> dict[str, list[float]]:
    """Feed ticks block by block the way the service does, growing rows as tickers arrive."""
    artifact = load_artifact(artifact_dir)
    stepper = artifact.stepper(initial_rows)
    last = LastTicks.empty(initial_rows)
    row_of: dict[str, int] = {}
    served: dict[str, list[float]] = {t: [] for t in ticks.tickers()}
    start = 0
    while start < len(ticks):
        block = ticks.take(np.arange(start, min(len(ticks), start + int(rng.integers(1, 300)))))
        start += len(block)
        for t in block.ticker:
            row_of.setdefault(str(t), len(row_of))
        if len(row_of) > stepper.n_rows:
            stepper.grow(2 * len(row_of))
            last = last.grown(stepper.n_rows)
        rows = np.array([row_of[str(t)] for t in block.ticker], np.intp)
        raw, last = compute_features(rows, block.price, block.volume, block.ts_ms, last)
        x = artifact.meta.feature_scaler.transform(raw)
        before = stepper.get_state()
        if rng.random() < 0.5:
            preds = stepper.step_ticks(rows, x)
        else:  # the Keras-shaped (N, T, F) + mask entry point
            preds = step_via_mask(stepper, rows, x)
        untouched = np.setdiff1d(np.arange(stepper.n_rows), rows)
        for a, b in zip(before, stepper.get_state(), strict=True):
            assert a[untouched].tobytes() == b[untouched].tobytes()
        for t, p in zip(block.ticker, preds, strict=True):
            served[str(t)].append(float(p))
    return served


def step_via_mask(stepper: LSTMStepper, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Pack ticks into (N, T, F) + mask, step, and read each tick's prediction back."""
    rank = np.zeros(len(rows), np.intp)
    seen: dict[int, int] = {}
    for i, r in enumerate(rows):
        rank[i] = seen.get(int(r), 0)
        seen[int(r)] = rank[i] + 1
    block = np.zeros((stepper.n_rows, rank.max() + 1, x.shape[1]), np.float32)
    mask = np.zeros(block.shape[:2], bool)
    block[rows, rank], mask[rows, rank] = x, True
    return stepper.step(block, mask)[rows, rank]


@pytest.mark.parametrize("units", [[16], [16, 8]], ids=["1-layer", "2-layer"])
@pytest.mark.parametrize("seed", [1, 2])
def test_online_equals_batch_size_one_keras(tmp_path: Path, units: list[int], seed: int):
    rng = np.random.default_rng(seed)
    ticks = random_interleaving(SyntheticMarket(N_TICKERS, seed).ticks(3000), rng)
    artifact_dir = make_artifact(tmp_path, units, ticks, seed)

    served = run_online(artifact_dir, ticks, rng)
    reference = keras_reference(artifact_dir, ticks)

    assert len(reference) == N_TICKERS
    worst = 0.0
    for ticker, expected in reference.items():
        assert len(served[ticker]) == len(expected)
        worst = max(worst, float(np.abs(np.array(served[ticker]) - expected).max()))
    assert worst < 1e-5, f"online vs batch-size-1 Keras: max abs diff {worst:.3g}"
    assert np.std(np.concatenate(list(reference.values()))) > 1e-3  # not a constant model


def small_stepper(n_rows: int = 6) -> LSTMStepper:
    keras.utils.set_random_seed(0)
    return LSTMStepper.from_keras(build_model(n_rows, [8, 4], 3))


def test_row_without_tick_keeps_state_bit_exactly():
    stepper = small_stepper()
    rng = np.random.default_rng(0)
    stepper.step_ticks(np.arange(6), rng.normal(size=(6, 3)).astype(np.float32))
    before = stepper.get_state()
    x = rng.normal(size=(6, 5, 3)).astype(np.float32)
    mask = np.ones((6, 5), bool)
    mask[[1, 4]] = False  # rows 1 and 4 get nothing in this block
    preds = stepper.step(x, mask)
    after = stepper.get_state()
    for a, b in zip(before, after, strict=True):
        assert a[[1, 4]].tobytes() == b[[1, 4]].tobytes()
        assert not np.array_equal(a[[0, 2, 3, 5]], b[[0, 2, 3, 5]])
    assert np.isnan(preds[[1, 4]]).all() and np.isfinite(preds[[0, 2, 3, 5]]).all()


def test_get_set_rows_and_grow_round_trip_bit_exactly():
    stepper = small_stepper()
    rng = np.random.default_rng(1)
    stepper.step_ticks(rng.integers(0, 6, 40), rng.normal(size=(40, 3)).astype(np.float32))
    state = stepper.get_state()
    packed = stepper.get_rows(np.array([5, 0, 3]))
    assert packed.shape == (3, stepper.row_state_size) == (3, 2 * (8 + 4))

    other = small_stepper()
    other.set_state(state)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(state, other.get_state(), strict=True))
    fresh = small_stepper()
    fresh.set_rows(np.array([5, 0, 3]), packed)
    assert fresh.get_rows(np.array([5, 0, 3])).tobytes() == packed.tobytes()
    assert not fresh.get_rows(np.array([1])).any()

    stepper.grow(11)
    grown = stepper.get_state()
    assert stepper.n_rows == 11
    for a, b in zip(state, grown, strict=True):
        assert b[:6].tobytes() == a.tobytes()
        assert not b[6:].any()


def test_growth_does_not_change_any_prediction():
    a, b = small_stepper(), small_stepper()
    rng = np.random.default_rng(2)
    rows, x = rng.integers(0, 6, 30), rng.normal(size=(30, 3)).astype(np.float32)
    a.step_ticks(rows, x)
    b.step_ticks(rows, x)
    b.grow(40)
    rows2, x2 = rng.integers(0, 6, 30), rng.normal(size=(30, 3)).astype(np.float32)
    assert a.step_ticks(rows2, x2).tobytes() == b.step_ticks(rows2, x2).tobytes()


def test_reset_rows_zeroes_only_those_rows():
    stepper = small_stepper()
    rng = np.random.default_rng(3)
    stepper.step_ticks(np.arange(6), rng.normal(size=(6, 3)).astype(np.float32))
    before = stepper.get_rows(np.array([0, 1, 3, 4, 5]))
    stepper.reset_rows(np.array([2]))
    assert not stepper.get_rows(np.array([2])).any()
    assert stepper.get_rows(np.array([0, 1, 3, 4, 5])).tobytes() == before.tobytes()


def test_bad_shapes_and_rows_are_refused():
    stepper = small_stepper()
    with pytest.raises(IndexError):
        stepper.step_ticks(np.array([6]), np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="expected x"):
        stepper.step(np.zeros((5, 2, 3), np.float32), np.ones((5, 2), bool))
    with pytest.raises(ValueError, match="cannot shrink"):
        stepper.grow(3)


@pytest.mark.parametrize("units", [[16], [16, 8]], ids=["1-layer", "2-layer"])
def test_every_timestep_path_equals_batch_size_one_keras(tmp_path: Path, units: list[int]):
    """One block whose timesteps shrink from many rows to a few to one (the long tail of
    a busy ticker, the 1-D path of `step_ticks`)."""
    wide = 40
    market = SyntheticMarket(wide, seed=4).ticks(40 * wide)
    per_ticker = {t: market.take(np.flatnonzero(market.ticker == t)) for t in market.tickers()}
    counts = {t: 1 for t in per_ticker}  # timestep 1: every row
    counts.update({t: 4 for t in list(per_ticker)[:3]})  # timesteps 2-4: a few rows
    counts[next(iter(per_ticker))] = 12  # timesteps 5-12: one row
    parts = [per_ticker[t].take(np.arange(n)) for t, n in counts.items()]
    ticks = TickTable(*(np.concatenate(c) for c in zip(
        *[(p.ticker, p.ts_ms, p.price, p.volume) for p in parts], strict=True)))
    ticks = random_interleaving(ticks, np.random.default_rng(0))
    artifact_dir = make_artifact(tmp_path, units, ticks)

    artifact = load_artifact(artifact_dir)
    row_of = {t: i for i, t in enumerate(ticks.tickers())}
    rows = np.array([row_of[str(t)] for t in ticks.ticker], np.intp)
    raw, _ = compute_features(rows, ticks.price, ticks.volume, ticks.ts_ms,
                              LastTicks.empty(len(row_of)))
    preds = artifact.stepper(len(row_of)).step_ticks(
        rows, artifact.meta.feature_scaler.transform(raw))
    for ticker, expected in keras_reference(artifact_dir, ticks).items():
        np.testing.assert_allclose(preds[rows == row_of[ticker]], expected, atol=1e-5, rtol=0,
                                   err_msg=ticker)
