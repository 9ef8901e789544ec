"""A synthetic market whose next return is partly predictable, fully set by its seed.

Each ticker's log returns follow its own AR(1): r_t = phi * r_{t-1} + sigma * eps. The
`phi` part is what a model can learn, so "beats the zero-return baseline" is a real test.
Ticks arrive as a superposition of per-ticker Poisson processes (irregular gaps, busy and
quiet tickers), with log-normal volumes.
"""

from __future__ import annotations

import numpy as np

from models.ticks import TickTable

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class SyntheticMarket:
    def __init__(self, n_tickers: int, seed: int = 0, start_ms: int = START_MS) -> None:
        if n_tickers < 1:
            raise ValueError("n_tickers must be >= 1")
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

    def ticks(self, n: int) -> TickTable:
        """The next `n` ticks of the market, in time order."""
        rng = self.rng
        which = rng.choice(len(self.tickers), size=n, p=self.rate_hz / self.rate_hz.sum())
        ts_s = self.clock_s + np.cumsum(rng.exponential(1.0 / self.rate_hz.sum(), n))
        self.clock_s = ts_s[-1] if n else self.clock_s
        noise = rng.standard_normal(n)
        volume = np.round(rng.lognormal(self.volume_scale[which], 1.0))
        prices = np.empty(n)
        for k, i in enumerate(which):  # AR(1) is sequential per ticker
            r = self.phi[i] * self.last_return[i] + self.sigma[i] * noise[k]
            self.last_return[i] = r
            self.price[i] *= np.exp(r)
            prices[k] = self.price[i]
        ts_ms = np.maximum.accumulate(np.round(ts_s * 1000.0).astype(np.int64))
        return TickTable(self.tickers[which], ts_ms, prices, volume)
