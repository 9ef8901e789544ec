"""Readers waiting for the loop to serve a stream position: read-your-writes GETs.

A producer that XADDs a tick knows the ID Redis gave it; `GET
/v1/predictions/{t}?after=<id>` answers as soon as the engine serves through that ID,
instead of the client polling (each poll a round trip, and the first one often arriving
while the loop is still stepping the tick). The loop thread announces each position it
serves; waiting readers are asyncio futures, resolved on their own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading

from service.state import NO_CURSOR
from service.types import Cursor

NONE_WAITING: Cursor = (2**64, 0)  # past any stream ID
# (position, arrival: orders equal positions, never the loop), its loop, its future
Waiter = tuple[Cursor, int, asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class ServedWaits:
    """The position served so far, and the readers waiting for a later one: a heap by
    position, so a batch wakes its k readers in O(k log W), whatever W others wait on."""

    def __init__(self) -> None:
        self._served: Cursor = NO_CURSOR
        self._lock = threading.Lock()
        self._waiting: list[Waiter] = []  # a heap
        self._arrivals = itertools.count()
        self._first_due: Cursor = NONE_WAITING  # the lowest position a reader waits for
        self._serving = True  # False while the engine stands by: nothing to wait for

    def reached(self, cursor: Cursor) -> None:
        """Called by the loop thread once everything up to `cursor` is served.

        While no reader waits for a position this far, this is an assignment and a
        comparison: the position is written before `_first_due` is read, and a reader
        lowers `_first_due` before it reads the position, so one of the two always sees
        the other (the GIL orders them).
        """
        if cursor <= self._served:
            return
        self._served = cursor
        if cursor >= self._first_due:
            self._wake_through(cursor)

    def _wake_through(self, cursor: Cursor) -> None:
        due = []
        with self._lock:
            waiting = self._waiting
            while waiting and waiting[0][0] <= cursor:
                due.append(heapq.heappop(waiting))
            self._first_due = waiting[0][0] if waiting else NONE_WAITING
        _wake(due)

    @property
    def position(self) -> Cursor:
        """Served up to here."""
        return self._served

    @property
    def waiting(self) -> bool:
        """Some reader waits for a later position."""
        return bool(self._waiting)

    def restart(self, cursor: Cursor) -> None:
        """Served up to `cursor`, even if that is before the position so far: Redis lost
        what was served (FLUSHALL, the stream deleted and written anew). Readers wait on."""
        self._served = cursor
        self._wake_through(cursor)

    def close(self) -> None:
        """Wake every reader now, and answer later ones at once (`until` returns False):
        this engine stops serving (it stands by, or hands the shard over), so nothing they
        would wait for comes here. `resume` when it serves again."""
        self._serving = False
        with self._lock:
            due, self._waiting, self._first_due = self._waiting, [], NONE_WAITING
        _wake(due)

    def resume(self) -> None:
        self._serving = True

    async def until(self, cursor: Cursor, timeout: float) -> bool:
        """Wait until `cursor` is served; False if `timeout` seconds pass first, or if the
        engine does not serve (`close`)."""
        if cursor <= self._served:
            return True
        if not self._serving:
            return False
        loop = asyncio.get_running_loop()
        waiter: Waiter = (cursor, next(self._arrivals), loop, loop.create_future())
        with self._lock:
            heapq.heappush(self._waiting, waiter)
            self._first_due = self._waiting[0][0]
        # served, or closed (`close` clears the heap after it stops serving), between the
        # first checks and the push
        if cursor <= self._served or not self._serving:
            self._forget(waiter)
            return cursor <= self._served
        woken = False
        try:
            await asyncio.wait_for(waiter[3], timeout)
            woken = True  # `reached` or `close` took it off the heap
        except TimeoutError:
            return False
        finally:
            if not woken:  # timed out, or the GET was cancelled: it may be on the heap
                self._forget(waiter)
        return cursor <= self._served

    def _forget(self, waiter: Waiter) -> None:
        """Take a reader off the heap that was not woken (it ran out, was cancelled, or
        found its answer right after the push): O(W)."""
        with self._lock:
            waiting = self._waiting
            if waiter in waiting:
                waiting.remove(waiter)
                heapq.heapify(waiting)
                self._first_due = waiting[0][0] if waiting else NONE_WAITING


def _wake(due: list[Waiter]) -> None:
    for _, _, loop, future in due:
        # RuntimeError: its event loop is closed, so nobody is waiting any more
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # it may have timed out meanwhile
        future.set_result(None)
