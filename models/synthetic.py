"""A synthetic market whose next return is partly predictable, fully set by its seed.

Each ticker's log returns follow its own AR(1): r_t = phi * r_{t-1} + sigma * eps. The
`phi` part is what a model can learn, so "beats the zero-return baseline" is a real test.
Ticks arrive as a superposition of per-ticker Poisson processes (irregular gaps, busy and
quiet tickers), with log-normal volumes.

With `regime_every`, the market also changes: every that many ticks every ticker's `phi`
flips sign and gets a new size, and its `sigma` is rescaled, so an online learner has
something to adapt to; `ticks_and_forecasts` gives the Bayes-optimal forecast to score
that adaptation against.
"""

from __future__ import annotations

import numpy as np

from models.ticks import TickTable

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
# Mixed into the seed of the regime draws: a stream of its own, so turning regimes on
# leaves every tick before the first change as it was.
_REGIMES_KEY = int.from_bytes(b"regimes", "big")


class SyntheticMarket:
    """`phi` and `sigma` are the coefficients the next tick of each ticker will use.

    Regime g (ticks g * regime_every .. (g + 1) * regime_every - 1 of the whole market,
    counted across calls) has phi = s_g * U(0.3, 0.7), s_g = -1 for odd g and +1 for
    even g, and sigma = base_sigma * U(0.5, 2.0); regime 0 is the market's initial draw.
    """

    def __init__(self, n_tickers: int, seed: int = 0, start_ms: int = START_MS,
                 regime_every: int | None = None) -> None:
        if n_tickers < 1:
            raise ValueError("n_tickers must be >= 1")
        if regime_every is not None and regime_every < 1:
            raise ValueError("regime_every must be >= 1 (or None: no regime changes)")
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        self.tickers = np.array([f"SYN{i:04d}" for i in range(n_tickers)])
        self.phi = rng.uniform(0.3, 0.7, n_tickers)  # the learnable part
        self.sigma = rng.uniform(5e-4, 2e-3, n_tickers)
        self.rate_hz = rng.uniform(0.5, 3.0, n_tickers)  # ticks per second
        self.volume_scale = rng.uniform(4.0, 8.0, n_tickers)
        self.price = rng.uniform(10.0, 500.0, n_tickers)
        self.last_return = np.zeros(n_tickers)
        self.clock_s = start_ms / 1000.0
        self.base_sigma = self.sigma.copy()
        self.regime_every = regime_every
        self.regime = 0  # the regime of the next tick
        self.n_ticks = 0  # ticks generated so far, all tickers, all calls
        self.regime_rng = np.random.default_rng([seed, _REGIMES_KEY])

    def ticks(self, n: int) -> TickTable:
        """The next `n` ticks of the market, in time order."""
        return self.ticks_and_forecasts(n)[0]

    def ticks_and_forecasts(self, n: int) -> tuple[TickTable, np.ndarray]:
        """The next `n` ticks, and for each the Bayes-optimal forecast of the log return of
        its ticker's next tick: phi (as of that next tick, so across a regime change the
        new one) times this tick's return — the best any model can do, to score one by.

        NaN where the ticker has no next tick among these `n`. One code path with
        `ticks`, so the ticks are the same whichever is called.
        """
        rng = self.rng
        which = rng.choice(len(self.tickers), size=n, p=self.rate_hz / self.rate_hz.sum())
        ts_s = self.clock_s + np.cumsum(rng.exponential(1.0 / self.rate_hz.sum(), n))
        self.clock_s = ts_s[-1] if n else self.clock_s
        noise = rng.standard_normal(n)
        volume = np.round(rng.lognormal(self.volume_scale[which], 1.0))
        prices = np.empty(n)
        returns = np.empty(n)
        phi_used = np.empty(n)
        start = 0
        for stop in self._regime_ends(n):
            # Within a segment the coefficients are fixed, so the loop is the plain one.
            phi, sigma, last, price = self.phi, self.sigma, self.last_return, self.price
            for k, i in enumerate(which[start:stop], start):  # AR(1) is sequential per ticker
                r = phi[i] * last[i] + sigma[i] * noise[k]
                last[i] = r
                price[i] *= np.exp(r)
                prices[k] = price[i]
                returns[k] = r
            phi_used[start:stop] = phi[which[start:stop]]
            self.n_ticks += stop - start
            if self.regime_every is not None and stop > start and \
                    self.n_ticks % self.regime_every == 0:
                self._next_regime()
            start = stop
        ts_ms = np.maximum.accumulate(np.round(ts_s * 1000.0).astype(np.int64))
        return TickTable(self.tickers[which], ts_ms, prices, volume), \
            self._next_forecasts(which, returns, phi_used)

    def _regime_ends(self, n: int) -> list[int]:
        """Where this call's segments of constant coefficients end: each regime change, n."""
        if self.regime_every is None:
            return [n]
        first = self.regime_every - self.n_ticks % self.regime_every
        return [*range(first, n, self.regime_every), n]

    def _next_regime(self) -> None:
        """Draw the next regime's coefficients, in order, from their own generator."""
        self.regime += 1
        sign = -1.0 if self.regime % 2 else 1.0
        n_tickers = len(self.tickers)
        self.phi = sign * self.regime_rng.uniform(0.3, 0.7, n_tickers)
        self.sigma = self.base_sigma * self.regime_rng.uniform(0.5, 2.0, n_tickers)

    @staticmethod
    def _next_forecasts(which: np.ndarray, returns: np.ndarray,
                        phi_used: np.ndarray) -> np.ndarray:
        """phi of each tick's ticker's next tick times the tick's return (NaN: no next)."""
        forecasts = np.full(len(which), np.nan)
        order = np.argsort(which, kind="stable")  # per ticker, in time order
        same = which[order[1:]] == which[order[:-1]]
        now, after = order[:-1][same], order[1:][same]
        forecasts[now] = phi_used[after] * returns[now]
        return forecasts
