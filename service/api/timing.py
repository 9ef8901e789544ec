"""HTTP request durations per route, as plain ASGI: one clock read and one observe."""

from __future__ import annotations

import time

from prometheus_client import Histogram
from starlette.types import ASGIApp, Receive, Scope, Send


class RequestTimer:
    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram
        self._children: dict[tuple[str, str], object] = {}  # labels() is a lock + lookup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            key = (getattr(route, "path", "unmatched"), scope["method"])
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.histogram.labels(*key)
            child.observe(time.perf_counter() - t0)  # type: ignore[attr-defined]
