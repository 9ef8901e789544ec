"""GETs `?after=` waiting on another engine's shard: one poll of its output cursor serves
every waiting GET, against a real redis-server."""

from __future__ import annotations

import asyncio

import redis.exceptions
from redis.asyncio import Redis

from service.api.remote import RemoteWaits
from service.sharded import Remote

SHARD = Remote(3, "p:{3}", "m:{3}", "out:{3}")
WAITERS = 200


class CountingRedis(Redis):
    """Counts the GETs of the shard's output cursor."""

    gets = 0
    down = False  # the GETs of it fail, as with Redis gone

    async def get(self, name):  # type: ignore[no-untyped-def,override]
        if name == SHARD.output_cursor:
            self.gets += 1
            if self.down:
                raise redis.exceptions.ConnectionError("injected")
        return await super().get(name)


def test_one_poll_answers_every_waiting_get(redis_url: str) -> None:
    async def scenario() -> tuple[list[bool], int, list[bool], int, list[bool]]:
        redis = CountingRedis.from_url(redis_url)
        waits = RemoteWaits(redis)
        await redis.set(SHARD.output_cursor, "100-5")
        written = await asyncio.gather(*(waits.until(SHARD, (100, i % 6), 5)
                                         for i in range(WAITERS)))
        gets_written = redis.gets
        # not written yet: they wait together, answered once the owner gets there
        later = [asyncio.create_task(waits.until(SHARD, (200, 0), 5)) for _ in range(WAITERS)]
        await asyncio.sleep(0.3)
        assert not any(t.done() for t in later)
        await redis.set(SHARD.output_cursor, "200-0")
        answered = await asyncio.gather(*later)
        gets_waiting = redis.gets - gets_written
        # never written: each runs out, and the poller ends with the last of them
        timed_out = await asyncio.gather(*(waits.until(SHARD, (300, 0), 0.2)
                                           for _ in range(10)))
        await asyncio.sleep(0.1)
        assert not waits._polls
        await waits.close()
        await redis.aclose()
        return written, gets_written, answered, gets_waiting, timed_out

    written, gets_written, answered, gets_waiting, timed_out = asyncio.run(scenario())
    assert written == [True] * WAITERS and gets_written == 1
    # a poll every 2 ms doubling to 50 (~12 in 0.3 s), not one per waiting GET
    assert answered == [True] * WAITERS and gets_waiting < 30
    assert timed_out == [False] * 10


def test_a_flushed_or_unreachable_shard_is_not_taken_for_written(redis_url: str) -> None:
    """The position goes back with the shard's output cursor (FLUSHALL: IDs start over);
    a poll that fails answers the waiting GETs at once (their own read of Redis then
    fails fast), rather than leaving them to sit out `wait` with no poller."""

    async def scenario() -> None:
        redis = CountingRedis.from_url(redis_url)
        waits = RemoteWaits(redis)
        await redis.set(SHARD.output_cursor, "900-0")
        assert await waits.until(SHARD, (900, 0), 5) is True
        await redis.flushall()
        again = asyncio.create_task(waits.until(SHARD, (5, 0), 5))  # a new stream's ID
        await asyncio.sleep(0.2)
        assert not again.done()  # not written since the flush: it waits
        await redis.set(SHARD.output_cursor, "5-0")
        assert await again is True
        redis.down = True
        failing = [waits.until(SHARD, (10, 0), 5) for _ in range(3)]
        assert await asyncio.wait_for(asyncio.gather(*failing), 2) == [False] * 3
        redis.down = False
        await redis.set(SHARD.output_cursor, "10-0")
        assert await waits.until(SHARD, (10, 0), 5) is True  # polling again
        await waits.close()
        assert await waits.until(SHARD, (10, 0), 5) is False  # shut down: nothing polls
        await redis.aclose()

    asyncio.run(scenario())
