"""Reading the latest predictions of shards that another engine runs, from Redis.

Each shard's owner writes every moved ticker's latest-prediction record with each commit
(service/commit.py), so any engine can answer for any ticker: from memory for the shards
it runs, from those records for the others. One pipelined round trip per request (a
GET with `?after=` also waits for the shard's output cursor to get there: RemoteWaits).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from service.records import decode_prediction, parse_id
from service.served_waits import ServedWaits
from service.sharded import Remote
from service.snapshot import Prediction
from service.state import NO_CURSOR
from service.types import Cursor

log = logging.getLogger(__name__)

AnyRedis = Redis | RedisCluster
# between reads of another shard's output cursor while GETs wait on it: doubling while it
# does not move, back to the first once it moves or a GET starts waiting
REMOTE_POLL_S = (0.002, 0.05)


def cursor_age(cursor: bytes | None) -> float | None:
    """Seconds since the entry of a shard's output cursor was added: how far behind the
    newest written outputs of that shard are, read from Redis."""
    if cursor is None:
        return None
    return round(max(0.0, time.time() - int(cursor.partition(b"-")[0]) / 1000), 3)


@dataclass
class _ShardPoll:
    """One shard's poller and the GETs waiting on it; gone with the last of them."""

    waits: ServedWaits = field(default_factory=ServedWaits)
    soon: asyncio.Event = field(default_factory=asyncio.Event)  # set: poll at once
    task: asyncio.Task[None] | None = None


class RemoteWaits:
    """GETs `?after=` waiting on shards that other engines run. Another process's progress
    has no push to wait on, so its output cursor is polled: by one task per shard while any
    GET waits on it, not by each GET (W waiting GETs would poll Redis W times as often)."""

    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis
        self._polls: dict[int, _ShardPoll] = {}
        self._closed = False

    async def until(self, remote: Remote, cursor: Cursor, timeout: float) -> bool:
        """Wait until the shard's owner has written the outputs of every entry up to
        `cursor`; False if `timeout` seconds pass first, or if polling fails (the caller's
        own read of Redis then says why)."""
        if self._closed:
            return False
        poll = self._polls.get(remote.shard)
        if poll is None:
            poll = self._polls[remote.shard] = _ShardPoll()
            poll.task = asyncio.create_task(self._poll(remote, poll))
        else:
            poll.soon.set()
        return await poll.waits.until(cursor, timeout)

    async def _poll(self, remote: Remote, poll: _ShardPoll) -> None:
        first, longest = REMOTE_POLL_S
        pause, waits, soon = first, poll.waits, poll.soon
        try:
            while True:
                soon.clear()  # a GET that starts waiting from here on gets a poll after it
                try:
                    written = await self._redis.get(remote.output_cursor)
                    cursor = parse_id(written.decode()) if written is not None else NO_CURSOR
                except (RedisError, ValueError) as e:
                    log.warning("reading %s failed (%s): GETs waiting on it answer now",
                                remote.output_cursor, e)
                    waits.close()  # each returns False at once, then reads Redis itself
                    waits.resume()
                    return
                if cursor > waits.position:
                    waits.reached(cursor)
                    pause = first
                elif cursor < waits.position:  # that Redis lost what it had (FLUSHALL)
                    waits.restart(cursor)
                if not waits.waiting:
                    return
                try:
                    await asyncio.wait_for(soon.wait(), pause)
                    pause = first  # a GET started waiting: it is not kept for long
                except TimeoutError:
                    pause = min(pause * 2, longest)
        finally:  # the position it polled goes too: it may be stale by the next wait
            del self._polls[remote.shard]

    async def close(self) -> None:
        """At shutdown: the pollers end (their GETs are gone)."""
        self._closed = True
        tasks = [p.task for p in self._polls.values() if p.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def remote_prediction(redis: AnyRedis, remote: Remote,
                            ticker: str) -> tuple[Prediction | None, float | None]:
    """(the ticker's latest prediction or None, the age of its shard's outputs)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hget(remote.predictions, ticker)
        pipe.get(remote.model)
        pipe.get(remote.output_cursor)
        record, model, cursor = await pipe.execute()
    if record is None:
        return None, cursor_age(cursor)
    return decode_prediction(ticker, record, (model or b"").decode()), cursor_age(cursor)


async def remote_predictions(redis: AnyRedis, remotes: Iterable[Remote],
                             wanted: dict[int, list[str]] | None
                             ) -> tuple[dict[str, Prediction], float | None]:
    """The latest predictions of every ticker of `remotes` (or only the `wanted` ones, by
    shard), and the age of the stalest of those shards' outputs."""
    remotes = [r for r in remotes if wanted is None or wanted.get(r.shard)]
    if not remotes:
        return {}, None
    async with redis.pipeline(transaction=False) as pipe:
        for r in remotes:
            if wanted is None:
                pipe.hgetall(r.predictions)
            else:
                pipe.hmget(r.predictions, wanted[r.shard])
            pipe.get(r.model)
            pipe.get(r.output_cursor)
        replies = await pipe.execute()
    found: dict[str, Prediction] = {}
    ages = []
    for i, r in enumerate(remotes):
        records, model, cursor = replies[3 * i : 3 * i + 3]
        version = (model or b"").decode()
        if wanted is not None:
            records = {t.encode(): v for t, v in zip(wanted[r.shard], records, strict=True)
                       if v is not None}
        for name, record in records.items():
            found[name.decode()] = decode_prediction(name.decode(), record, version)
        if (age := cursor_age(cursor)) is not None:
            ages.append(age)
    return found, max(ages, default=None)
