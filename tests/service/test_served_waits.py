"""Readers waiting for a stream position: woken by the loop thread, never left behind."""

from __future__ import annotations

import asyncio
import random
import sys
import threading

from service.served_waits import ServedWaits


def test_a_position_served_already_answers_at_once_a_later_one_after_reached() -> None:
    waits = ServedWaits()
    waits.reached((5, 0))

    async def scenario() -> list[bool]:
        now = await waits.until((5, 0), timeout=0)
        later = asyncio.create_task(waits.until((7, 1), timeout=10))
        await asyncio.sleep(0.05)
        pending = not later.done()
        threading.Thread(target=waits.reached, args=((7, 1),)).start()  # as the loop does
        return [now, pending, await later]

    assert asyncio.run(scenario()) == [True, True, True]


def test_a_wait_that_times_out_says_so_and_leaves_no_waiter() -> None:
    waits = ServedWaits()
    waits.reached((1, 0))
    assert asyncio.run(waits.until((2, 0), timeout=0.05)) is False
    assert waits._waiting == []  # a waiter left behind would be a leak per timed-out GET
    waits.reached((3, 0))  # and nothing to wake: no error, no late callback
    assert asyncio.run(waits.until((3, 0), timeout=0)) is True


def test_positions_never_go_back() -> None:
    waits = ServedWaits()
    waits.reached((9, 0))
    waits.reached((4, 0))
    assert asyncio.run(waits.until((9, 0), timeout=0)) is True


def test_close_wakes_every_reader_at_once_saying_not_served() -> None:
    """An engine that stands by or hands its shard over serves nothing more here: its
    readers must not sit out their `wait`."""
    waits = ServedWaits()

    async def scenario() -> list[bool]:
        readers = [asyncio.create_task(waits.until((i, 0), timeout=30)) for i in (1, 2)]
        await asyncio.sleep(0.05)
        threading.Thread(target=waits.close).start()
        return list(await asyncio.wait_for(asyncio.gather(*readers), 5))

    assert asyncio.run(scenario()) == [False, False]
    assert waits._waiting == []
    assert asyncio.run(asyncio.wait_for(waits.until((3, 0), timeout=30), 5)) is False  # at once
    waits.resume()  # serving again (it took over): readers wait as before
    assert asyncio.run(waits.until((3, 0), timeout=0.05)) is False
    waits.reached((3, 0))
    assert asyncio.run(waits.until((3, 0), timeout=0)) is True


def test_a_reader_whose_event_loop_is_gone_does_not_break_the_loop_thread() -> None:
    waits = ServedWaits()
    gone = asyncio.new_event_loop()
    pending = gone.create_task(waits.until((5, 0), timeout=30))
    gone.run_until_complete(asyncio.sleep(0.01))  # the reader is registered
    gone.close()  # e.g. a server shut down while a GET waited
    waits.reached((5, 0))  # would raise RuntimeError from call_soon_threadsafe
    assert not pending.done()  # it never ran on: its loop is closed
    assert asyncio.run(waits.until((5, 0), timeout=0)) is True


def test_a_position_served_between_the_check_and_the_registration_is_not_missed() -> None:
    """The loop announces the position right after the reader found it unserved and before
    its registration: the reader must still answer (at once, not at its timeout)."""
    waits = ServedWaits()

    class LoopRunsFirst:
        """The reader's lock, with the loop thread's announcement slipped in before it."""

        def __init__(self, lock: threading.Lock) -> None:
            self.lock = lock

        def __enter__(self) -> None:
            waits.reached((2, 0))  # reads no waiter yet: the fast path, no lock taken
            self.lock.acquire()

        def __exit__(self, *exc: object) -> None:
            self.lock.release()

    waits._lock = LoopRunsFirst(threading.Lock())  # type: ignore[assignment]
    assert asyncio.run(asyncio.wait_for(waits.until((2, 0), timeout=30), 5)) is True


def test_every_waiter_wakes_while_the_loop_races_ahead() -> None:
    """Readers register while another thread announces positions as fast as it can: each
    reader whose position gets served must wake (none misses the announcement between its
    check and its registration)."""
    waits = ServedWaits()
    last = 10_000

    def loop_thread() -> None:
        for i in range(1, last + 1):
            waits.reached((i, 0))

    async def scenario() -> list[bool]:
        readers = []
        announcer = threading.Thread(target=loop_thread)
        announcer.start()
        for i in range(1, last + 1, 3):
            readers.append(asyncio.create_task(waits.until((i, 0), timeout=30)))
            await asyncio.sleep(0)
        results = await asyncio.gather(*readers)
        announcer.join()
        return results

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads interleave between any two bytecodes
    try:
        results = asyncio.run(scenario())
    finally:
        sys.setswitchinterval(interval)
    assert len(results) == len(range(1, last + 1, 3)) and all(results)
    assert waits._waiting == []


def test_each_of_many_readers_wakes_exactly_when_its_position_is_served() -> None:
    """2,000 readers at shuffled positions (some equal): each announcement wakes exactly
    those at or below it, and readers that gave up leave the others in order."""
    waits = ServedWaits()
    rng = random.Random(7)
    positions = [(rng.randrange(500), rng.randrange(3)) for _ in range(2_000)]

    async def scenario() -> None:
        readers = {asyncio.create_task(waits.until(p, timeout=30)): p for p in positions}
        quitters = [asyncio.create_task(waits.until((rng.randrange(500), 0), timeout=0.01))
                    for _ in range(200)]
        await asyncio.sleep(0.05)
        # timed out: each taken off from the middle of the heap, the rest kept in order
        assert await asyncio.gather(*quitters) == [False] * len(quitters)
        for served in [(100, 0), (100, 2), (250, 1), (499, 0), (499, 2)]:
            waits.reached(served)  # the loop thread's call (another thread: same path)
            await asyncio.sleep(0.01)  # the wakes it scheduled run
            woken = {p for t, p in readers.items() if t.done()}
            assert woken == {p for p in positions if p <= served}, served
        assert all(t.result() is True for t in readers)

    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert waits._waiting == []


def test_a_close_between_the_check_and_the_registration_answers_at_once() -> None:
    """The engine stands by right after the reader found it serving and before its
    registration: the reader must answer at once (not served), not sit out its timeout."""
    waits = ServedWaits()
    real = threading.Lock()

    class CloseRunsFirst:
        injected = False

        def __enter__(self) -> None:
            if not self.injected:  # the reader's registration: the standby slips in first
                self.injected = True
                waits.close()
            real.acquire()

        def __exit__(self, *exc: object) -> None:
            real.release()

    waits._lock = CloseRunsFirst()  # type: ignore[assignment]
    assert asyncio.run(asyncio.wait_for(waits.until((2, 0), timeout=30), 5)) is False
    assert waits._waiting == []
