"""The synthetic market: unchanged without regimes, and with them a market that changes
exactly where it says, whose Bayes-optimal forecast is known."""

from __future__ import annotations

import numpy as np
import pytest

from models.synthetic import SyntheticMarket
from models.ticks import TickTable


def assert_same_ticks(a: TickTable, b: TickTable) -> None:
    for column in ("ticker", "ts_ms", "price", "volume"):
        assert np.array_equal(getattr(a, column), getattr(b, column)), column


def head(table: TickTable, n: int) -> TickTable:
    return TickTable(table.ticker[:n], table.ts_ms[:n], table.price[:n], table.volume[:n])


def rows(market: SyntheticMarket, table: TickTable) -> np.ndarray:
    return np.searchsorted(market.tickers, table.ticker)


def realised_returns(start_price: np.ndarray, row: np.ndarray, price: np.ndarray) -> np.ndarray:
    """Each tick's log return from its ticker's previous price (or the price it started at)."""
    last, out = start_price.copy(), np.empty(len(price))
    for k, (i, p) in enumerate(zip(row, price, strict=True)):
        out[k], last[i] = np.log(p / last[i]), p
    return out


def next_index(row: np.ndarray) -> np.ndarray:
    """Index of the same ticker's next tick, -1 if none."""
    out, seen = np.full(len(row), -1), {}
    for k in range(len(row) - 1, -1, -1):
        out[k] = seen.get(row[k], -1)
        seen[row[k]] = k
    return out


def schedule(n_tickers: int, seed: int, every: int, regimes: int) -> tuple[np.ndarray, ...]:
    """phi and sigma, each (regime, ticker), read off a twin market as it passes them."""
    twin = SyntheticMarket(n_tickers, seed, regime_every=every)
    phi, sigma = [], []
    for _ in range(regimes):
        phi.append(twin.phi.copy())
        sigma.append(twin.sigma.copy())
        twin.ticks(every)
    return np.array(phi), np.array(sigma)


def test_without_regimes_the_market_is_the_one_the_default_model_was_trained_on() -> None:
    ticks = SyntheticMarket(20, seed=0).ticks(8000)
    assert ticks.ticker[:5].tolist() == ["SYN0009", "SYN0004", "SYN0015", "SYN0017", "SYN0005"]
    assert ticks.ts_ms[[0, -1]].tolist() == [1767225600015, 1767225846882]
    assert ticks.volume[:3].tolist() == [207.0, 638.0, 44.0]
    np.testing.assert_allclose(
        ticks.price[[0, 1, 2, -1]],
        [366.9673072318201, 213.3887699505195, 479.3867903071518, 337.56614774780667],
        rtol=1e-12)
    assert_same_ticks(ticks, SyntheticMarket(20, seed=0, regime_every=10**9).ticks(8000))


def test_ticks_before_the_first_change_are_bit_identical_to_a_market_without_regimes() -> None:
    plain = SyntheticMarket(7, seed=3).ticks(1000)
    changing = SyntheticMarket(7, seed=3, regime_every=400).ticks(1000)
    assert_same_ticks(head(plain, 400), head(changing, 400))
    assert not np.array_equal(plain.price[400:], changing.price[400:])
    # Only the returns change: who ticks, when and how much is the same market.
    for column in ("ticker", "ts_ms", "volume"):
        assert np.array_equal(getattr(plain, column), getattr(changing, column))


def test_coefficients_change_exactly_at_the_boundaries_counted_across_calls() -> None:
    market = SyntheticMarket(5, seed=1, regime_every=100)
    base = market.sigma.copy()
    before = (0, market.phi.copy(), market.sigma.copy())
    # 99 then 1 lands on a boundary; 150 ends mid-regime, past one change.
    for n in (99, 1, 60, 40, 150, 50, 49, 1):
        market.ticks(n)
        regime = market.n_ticks // 100
        assert market.regime == regime
        changed = not np.array_equal(market.phi, before[1])
        assert changed == (regime != before[0])
        assert changed == (not np.array_equal(market.sigma, before[2]))
        before = (regime, market.phi.copy(), market.sigma.copy())
        signed, scale = (-1 if regime % 2 else 1) * market.phi, market.sigma / base
        assert np.all((signed >= 0.3) & (signed <= 0.7))
        assert np.all((scale >= 0.5) & (scale <= 2.0))
    assert (market.regime, market.n_ticks) == (4, 450)


@pytest.mark.parametrize("calls", [(1000,), (600, 400), (250, 1, 749)])
def test_forecast_is_phi_at_the_next_tick_times_this_return(calls: tuple[int, ...]) -> None:
    every = 250
    phi, _ = schedule(4, 2, every, 4)
    market, offset, crossings = SyntheticMarket(4, seed=2, regime_every=every), 0, 0
    for n in calls:
        start_price = market.price.copy()
        ticks, forecasts = market.ticks_and_forecasts(n)
        row = rows(market, ticks)
        r, nxt = realised_returns(start_price, row, ticks.price), next_index(row)
        has_next = nxt >= 0
        assert np.array_equal(np.isnan(forecasts), ~has_next)
        j = nxt[has_next]
        expected = phi[(offset + j) // every, row[j]]
        np.testing.assert_allclose(forecasts[has_next], expected * r[has_next],
                                   rtol=1e-9, atol=1e-15)
        crossings += np.sum((offset + np.flatnonzero(has_next)) // every
                            != (offset + j) // every)
        offset += n
    assert crossings > 0  # some forecasts look across a change and use the new phi


def test_lag1_autocorrelation_flips_sign_across_a_boundary() -> None:
    every, market = 15_000, SyntheticMarket(3, seed=4, regime_every=15_000)
    start_price = market.price.copy()
    ticks = market.ticks(2 * every)
    row = rows(market, ticks)
    r = realised_returns(start_price, row, ticks.price)
    for i in range(3):
        k = np.flatnonzero(row == i)
        pairs = k[:-1], k[1:]
        for regime, sign in [(0, 1), (1, -1)]:
            inside = (pairs[0] // every == regime) & (pairs[1] // every == regime)
            corr = np.corrcoef(r[pairs[0][inside]], r[pairs[1][inside]])[0, 1]
            assert sign * corr > 0.2, (i, regime, corr)


def test_bayes_forecast_rmse_is_the_innovations_and_beats_zero_and_a_regime_blind_one() -> None:
    n_tickers, every, n = 10, 5000, 20_000
    phi, sigma = schedule(n_tickers, 6, every, n // every)
    market = SyntheticMarket(n_tickers, seed=6, regime_every=every)
    start_price = market.price.copy()
    ticks, forecasts = market.ticks_and_forecasts(n)
    row = rows(market, ticks)
    r, nxt = realised_returns(start_price, row, ticks.price), next_index(row)
    k = np.flatnonzero(nxt >= 0)
    j = nxt[k]
    actual = r[j]

    def rmse(forecast: np.ndarray) -> float:
        return float(np.sqrt(np.mean((actual - forecast) ** 2)))

    innovations = np.sqrt(np.mean(sigma[j // every, row[j]] ** 2))
    bayes = rmse(forecasts[k])
    assert bayes == pytest.approx(innovations, rel=0.03)
    assert bayes < 0.95 * rmse(np.zeros(len(k)))
    assert bayes < 0.9 * rmse(phi[0, row[k]] * r[k])  # the first regime's phi forever


def test_same_seed_same_output_across_calls() -> None:
    def run(seed: int) -> list[tuple[TickTable, np.ndarray]]:
        market = SyntheticMarket(6, seed=seed, regime_every=300)
        return [market.ticks_and_forecasts(n) for n in (700, 0, 500)]

    for (ta, fa), (tb, fb) in zip(run(5), run(5), strict=True):
        assert_same_ticks(ta, tb)
        assert np.array_equal(fa, fb, equal_nan=True)
    assert not np.array_equal(run(5)[0][0].price, run(6)[0][0].price)


def test_ticks_are_the_first_element_of_ticks_and_forecasts() -> None:
    a, b = (SyntheticMarket(4, seed=8, regime_every=50) for _ in range(2))
    for n in (120, 30):
        assert_same_ticks(a.ticks(n), b.ticks_and_forecasts(n)[0])


def test_a_split_reaches_the_same_regime_as_one_call() -> None:
    """The draws of ticks(a) + ticks(b) are not those of ticks(a + b) (the market always
    drew per call, and the default model's data must not change), but the regime clock,
    and so every coefficient, is the same."""
    one = SyntheticMarket(5, seed=9, regime_every=70)
    split = SyntheticMarket(5, seed=9, regime_every=70)
    one.ticks(500)
    for n in (69, 1, 140, 0, 290):
        split.ticks(n)
    assert (one.regime, one.n_ticks) == (split.regime, split.n_ticks) == (7, 500)
    assert np.array_equal(one.phi, split.phi) and np.array_equal(one.sigma, split.sigma)


def test_regime_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="regime_every"):
        SyntheticMarket(3, regime_every=0)
