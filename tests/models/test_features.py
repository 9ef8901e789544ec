"""Features: per-row previous tick, any batch split gives the same features."""

import numpy as np
import pytest

from models.features import STD_FLOOR, LastTicks, Scaler, compute_features


def test_first_tick_has_zero_return_and_gap_and_later_ticks_use_their_own_row():
    rows = np.array([0, 1, 0, 1, 0])
    price = np.array([100.0, 50.0, 110.0, 25.0, 99.0])
    volume = np.array([0.0, 9.0, 1.0, 0.0, 3.0])
    ts = np.array([1000, 1000, 3000, 1500, 3000])
    feats, last = compute_features(rows, price, volume, ts, LastTicks.empty(3))
    np.testing.assert_allclose(feats[:, 0], [0, 0, np.log(1.1), np.log(0.5), np.log(0.9)])
    np.testing.assert_allclose(feats[:, 1], np.log1p(volume))
    np.testing.assert_allclose(feats[:, 2], [0, 0, np.log1p(2.0), np.log1p(0.5), 0.0])
    assert last.price.tolist() == [99.0, 25.0, 0.0]
    assert last.ts_ms.tolist() == [3000, 1500, 0]


def test_any_split_into_batches_gives_the_same_features():
    rng = np.random.default_rng(0)
    m = 500
    rows = rng.integers(0, 7, m)
    price = np.exp(rng.normal(size=m).cumsum() * 0.01) * 50
    volume = rng.integers(0, 1000, m).astype(float)
    ts = np.cumsum(rng.integers(0, 2000, m))
    whole, last_whole = compute_features(rows, price, volume, ts, LastTicks.empty(7))
    parts, last = [], LastTicks.empty(7)
    cuts = np.sort(rng.choice(np.arange(1, m), 20, replace=False))
    for idx in np.split(np.arange(m), cuts):
        f, last = compute_features(rows[idx], price[idx], volume[idx], ts[idx], last)
        parts.append(f)
    assert np.concatenate(parts).tobytes() == whole.tobytes()
    assert last.price.tobytes() == last_whole.price.tobytes()


def test_compute_features_does_not_mutate_its_input_state():
    last = LastTicks.empty(2)
    compute_features(np.array([1]), np.array([5.0]), np.array([0.0]), np.array([9]), last)
    assert not last.price.any() and not last.ts_ms.any()


def test_scaler_floors_a_constant_feature_and_inverts():
    x = np.column_stack([np.ones(10), np.arange(10.0)])
    scaler = Scaler.fit(x)
    assert scaler.std[0] == STD_FLOOR
    z = scaler.transform(x)
    assert np.isfinite(z).all() and z.dtype == np.float32
    np.testing.assert_allclose(scaler.inverse(z), x, atol=1e-5)


def test_grown_last_ticks_keep_existing_rows():
    last = LastTicks(np.array([1.0, 2.0]), np.array([10, 20]))
    grown = last.grown(4)
    assert grown.price.tolist() == [1.0, 2.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        grown.grown(1)
