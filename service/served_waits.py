"""Readers waiting for the loop to serve a stream position: read-your-writes GETs.

A producer that XADDs a tick knows the ID Redis gave it; `GET
/v1/predictions/{t}?after=<id>` answers as soon as the engine serves through that ID,
instead of the client polling (each poll a round trip, and the first one often arriving
while the loop is still stepping the tick). The loop thread announces each position it
serves; waiting readers are asyncio futures, resolved on their own event loop.
"""

from __future__ import annotations

import asyncio
import threading

from service.state import NO_CURSOR

Cursor = tuple[int, int]  # a parsed stream ID (service.records.parse_id)


class ServedWaits:
    """The position served so far, and the readers waiting for a later one."""

    def __init__(self) -> None:
        self._served: Cursor = NO_CURSOR
        self._lock = threading.Lock()
        self._waiting: list[tuple[Cursor, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def served(self) -> Cursor:
        return self._served

    def reached(self, cursor: Cursor) -> None:
        """Called by the loop thread once everything up to `cursor` is served.

        Without readers waiting this is an assignment and a check: the position is written
        before the list is read, and a reader appends before it reads the position, so one
        of the two always sees the other (the GIL orders them).
        """
        if cursor <= self._served:
            return
        self._served = cursor
        if not self._waiting:
            return
        with self._lock:
            due = [w for w in self._waiting if w[0] <= cursor]
            self._waiting = [w for w in self._waiting if w[0] > cursor]
        for _, loop, future in due:
            loop.call_soon_threadsafe(_resolve, future)

    async def until(self, cursor: Cursor, timeout: float) -> bool:
        """Wait until `cursor` is served; False if `timeout` seconds pass first."""
        if cursor <= self._served:
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = (cursor, loop, future)
        with self._lock:
            self._waiting.append(waiter)
        if cursor <= self._served:  # served between the first check and the append
            self._forget(waiter)
            return True
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._forget(waiter)

    def _forget(self, waiter: tuple[Cursor, asyncio.AbstractEventLoop,
                                    asyncio.Future[None]]) -> None:
        with self._lock:
            if waiter in self._waiting:
                self._waiting.remove(waiter)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # it may have timed out meanwhile
        future.set_result(None)
