"""A steady tick feed at a fixed rate, cheap enough not to compete with what it measures.

The feed writes the Redis protocol straight to a socket with CLIENT REPLY OFF: no reply
parsing, no redis-py per command, so 20,000 ticks/s costs the bench a few percent of a core
(the service under test shares this 2-core machine). Ticks carry no `ts`: the stream ID's
time is their time, so every tick of a ticker is in order.
"""

from __future__ import annotations

import socket
import threading
import time

import numpy as np

from bench.traffic import ticker_names

SEND_EVERY_S = 0.005  # a chunk every 5 ms: 10 ticks at 2,000/s, 100 at 20,000/s
MAXLEN = 1_000_000  # approximate cap: a 10-minute feed must not fill Redis with old ticks


def xadd_protocol(stream: str, tickers: list[str], prices: list[str], volumes: list[str],
                  maxlen: int | None = MAXLEN) -> bytes:
    """XADD commands, each capped at `maxlen` entries (approximately); None: no cap."""
    if maxlen is None:
        head = f"*9\r\n$4\r\nXADD\r\n${len(stream)}\r\n{stream}\r\n$1\r\n*\r\n"
    else:
        cap = str(maxlen)
        head = (f"*12\r\n$4\r\nXADD\r\n${len(stream)}\r\n{stream}\r\n$6\r\nMAXLEN\r\n"
                f"$1\r\n~\r\n${len(cap)}\r\n{cap}\r\n$1\r\n*\r\n")
    return "".join(
        f"{head}$6\r\nticker\r\n${len(t)}\r\n{t}\r\n$5\r\nprice\r\n${len(p)}\r\n{p}\r\n"
        f"$6\r\nvolume\r\n${len(v)}\r\n{v}\r\n"
        for t, p, v in zip(tickers, prices, volumes, strict=True)
    ).encode()


class Feeder:
    """Appends `rate` ticks/s over `n_tickers` tickers to `stream` until stopped, the
    stream capped at `maxlen` entries (approximately; None: uncapped)."""

    def __init__(self, port: int, stream: str, n_tickers: int, rate: float,
                 seed: int = 0, maxlen: int | None = MAXLEN) -> None:
        self.port, self.stream, self.rate, self.maxlen = port, stream, rate, maxlen
        self.names = ticker_names(n_tickers)
        self.rng = np.random.default_rng(seed)
        self.base = self.rng.uniform(10.0, 500.0, n_tickers)
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-feeder", daemon=True)
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.sendall(b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$3\r\nOFF\r\n")

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop feeding; returns how many ticks were sent."""
        self._stop.set()
        self._thread.join()
        self._sock.close()
        return self.sent

    def chunk(self, n: int) -> bytes:
        which = self.rng.integers(0, len(self.names), n)
        prices = self.base[which] * np.exp(self.rng.normal(0.0, 1e-3, n))
        return xadd_protocol(self.stream, self.names[which].tolist(),
                             np.char.mod("%.4f", prices).tolist(),
                             np.char.mod("%d", self.rng.integers(0, 10_000, n)).tolist(),
                             self.maxlen)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - start) * self.rate) - self.sent
            if due > 0:
                self._sock.sendall(self.chunk(due))
                self.sent += due
            self._stop.wait(SEND_EVERY_S)
