"""What open dashboards cost the HTTP reads (issue 11): requests/s of the one-ticker read
with no dashboard open and with 10, rounds interleaved, the ratio of medians.

A dashboard, as dashboard.js behaves: one Server-Sent Events connection to /v1/stream
(every committed batch pushed to it) and a GET /readyz every 2 s. The service is a real
`tickstream serve` fed at --rate ticks/s (bench.fed_service); the load is wrk (Debian's).

Run: `python -m bench.dashboards [--rounds 3] [--seconds 10] [--dashboards 10] [--rate 2000]`.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench.fed_service import FedOptions, fed_service, machine
from bench.http_load import requests_per_s, wrk_available
from bench.service import get_json

POLL_S = 2.0  # dashboard.js polls /readyz this often


class Dashboard(threading.Thread):
    """One open dashboard: reads its event stream and polls /readyz until stopped."""

    def __init__(self, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.stop, self.events = port, stop, 0

    def run(self) -> None:
        stream = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        stream.request("GET", "/v1/stream")
        body = stream.getresponse()
        poll = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        next_poll = 0.0
        while not self.stop.is_set():
            line = body.readline()
            self.events += line.startswith(b"id: ")
            if time.monotonic() >= next_poll:
                poll.request("GET", "/readyz")
                poll.getresponse().read()
                next_poll = time.monotonic() + POLL_S
        stream.close()
        poll.close()


@contextmanager
def dashboards(port: int, n: int) -> Iterator[list[Dashboard]]:
    stop = threading.Event()
    opened = [Dashboard(port, stop) for _ in range(n)]
    for d in opened:
        d.start()
    try:
        time.sleep(1.0)  # connected and receiving
        yield opened
    finally:
        stop.set()
        for d in opened:
            d.join(15)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0, help="per wrk run")
    p.add_argument("--dashboards", type=int, default=10)
    p.add_argument("--rate", type=float, default=2000.0, help="ticks/s fed meanwhile")
    p.add_argument("--tickers", type=int, default=500)
    a = p.parse_args()
    if not wrk_available():
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    opts = FedOptions(rate=a.rate, tickers=a.tickers, retention_s=120)
    idle: list[float] = []
    watched: list[float] = []
    events = 0
    with fed_service("dashboards", opts, print) as fed:
        time.sleep(3.0)
        ticker = sorted(get_json(fed.svc.port, "/v1/tickers")["tickers"])[0]
        url = f"http://127.0.0.1:{fed.svc.port}/v1/predictions/{ticker}"
        for r in range(a.rounds):
            idle.append(requests_per_s(url, a.seconds))
            with dashboards(fed.svc.port, a.dashboards) as opened:
                watched.append(requests_per_s(url, a.seconds))
                events += sum(d.events for d in opened)
            print(f"round {r + 1}: {idle[-1]:,.0f} req/s alone, {watched[-1]:,.0f} with "
                  f"{a.dashboards} dashboards ({watched[-1] / idle[-1]:.2f}x)")
            fed.check_alive()
    ratio = statistics.median(w / i for w, i in zip(watched, idle, strict=True))
    print(f"\n{machine()}\n`python -m bench.dashboards --rounds {a.rounds} --seconds "
          f"{a.seconds:g} --dashboards {a.dashboards} --rate {a.rate:g}`, feed "
          f"{a.rate:,.0f} ticks/s over {a.tickers} tickers\n")
    print("| GET /v1/predictions/{ticker} | req/s (median) |\n|---|---:|")
    print(f"| no dashboard | {statistics.median(idle):,.0f} |")
    print(f"| {a.dashboards} dashboards open (SSE + /readyz every 2 s) | "
          f"{statistics.median(watched):,.0f} |")
    print(f"| ratio (median of per-round ratios) | {ratio:.2f}x |")
    print(f"\n{events:,} batch events pushed to the dashboards while measured")


if __name__ == "__main__":
    main()
