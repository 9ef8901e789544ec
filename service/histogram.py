"""A latency histogram the loop adds to and /metrics reads: no lock, no label lookup.

prometheus-client's Histogram takes a lock per observation; the loop thread is the only
writer here, and a scrape copies the buckets (a torn read can only be one batch off).
"""

from __future__ import annotations

import bisect

# seconds: 1 ms to 10 s, the range of a batch and of a tick's wait for its commit
BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    def __init__(self, bounds: tuple[float, ...] = BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def add(self, other: Histogram) -> None:
        """Count `other`'s observations too (same bounds)."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, count) pairs as Prometheus wants them, ending with +Inf."""
        out, total = [], 0
        for bound, n in zip([*map(str, self.bounds), "+Inf"], list(self.counts), strict=True):
            total += n
            out.append((bound, float(total)))
        return out
