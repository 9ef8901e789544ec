"""The tick stream as a source: entries after a cursor, in stream order, a batch at a time.

Progress is the engine's own cursor, not a consumer group: XREAD from the cursor costs
Redis no per-entry bookkeeping (XREADGROUP logs an XCLAIM per delivered entry to the AOF,
XACK another record; BENCHMARKS.md has the measurement). While the engine replays after a
restore, reads are XRANGE up to the output cursor, so a replayed batch never straddles it.
"""

from __future__ import annotations

import redis

from service.entries import ReadBatch
from service.redis_io import Link, packed
from service.types import StreamId


class TickReader:
    """Reads `stream` after `after` on `link`; `send_ahead` lets a read overlap a step."""

    def __init__(self, link: Link, stream: str, batch_count: int, block_ms: int) -> None:
        self.link = link
        self.stream = stream
        self.batch_count = batch_count
        self.block_ms = block_ms
        self.after: StreamId = "0-0"  # the last entry handed out (reads resume after it)
        self.replay_to: StreamId | None = None  # replaying: read up to this entry only
        self.caught_up = False  # the last live read found the stream drained
        self.blocking = True  # caught up, a read waits up to block_ms in Redis
        self.owed = 0  # replies owed for a read on its way (0: none sent ahead)

    def start(self, after: StreamId | None, replay_to: StreamId | None) -> None:
        self.after, self.replay_to = after or "0-0", replay_to
        self.caught_up, self.owed = False, 0

    @property
    def ahead(self) -> bool:
        """A read is on its way: `take_ahead` has its reply to take."""
        return self.owed > 0

    def _command(self, block: bool, count: int | None = None) -> tuple:
        n = count or self.batch_count
        if self.replay_to is not None:
            return ("XRANGE", self.stream, f"({self.after}", self.replay_to, "COUNT", n)
        wait = ("BLOCK", self.block_ms) if block else ()
        return ("XREAD", "COUNT", n, *wait, "STREAMS", self.stream, self.after)

    def _sent_read(self) -> tuple[bytes, int]:
        """The next read as sent: (its commands, the replies owed for them)."""
        if not self.blocking:
            return packed(self._command(block=False)), 1
        if self.replay_to is not None or self.batch_count == 1:
            return packed(self._command(block=True)), 1
        # Redis answers a blocked XREAD at the first XADD that reaches the stream, also when
        # it came with others in one write (a producer's pipelined burst): alone, the burst
        # would make two batches (1 + the rest), each with its own read and fsynced commit.
        # A non-blocking read sent right behind from the same cursor runs once the burst is
        # in, before the same fsync: its reply holds the first one's entries and the rest.
        return packed(self._command(block=True), self._command(block=False)), 2

    def read(self) -> ReadBatch:
        """The next batch (waiting up to block_ms for one when caught up and blocking)."""
        self.send_ahead(wait=True)
        return self.take_ahead()

    def send_ahead(self, wait: bool = False) -> None:
        """Ask for the batch after the last one read, without waiting for its reply.

        `wait`: as `read` asks (caught up, it blocks in Redis up to block_ms for the next
        tick). Sent right behind a commit, it is in Redis while the commit is fsynced, so
        a tick added meanwhile comes back with that tick's own XADD reply, not one fsync
        later. Without `wait`, a read ahead of a full batch, while the loop is behind."""
        data, self.owed = self._sent_read() if wait else (packed(self._command(False)), 1)
        self.link.send(data, self.owed)

    def take_ahead(self) -> ReadBatch:
        """The batch read ahead (of a pair, the larger reply: see `_sent_read`)."""
        owed, self.owed = self.owed, 0
        xread = self.replay_to is None
        batch = self.link.read_batch(xread)
        if owed == 2:
            second = self.link.read_batch(xread)
            batch = second if len(second) > len(batch) else batch
        return self._took(batch)

    def _took(self, entries: ReadBatch) -> ReadBatch:
        if entries:
            self.after = entries.ids[-1].decode()
        short = len(entries) < self.batch_count
        if self.replay_to is not None:
            if short or self.after == self.replay_to:
                self.replay_to = None  # every entry up to the output cursor is read
        else:
            self.caught_up = short
        return entries


def stream_counts(client: redis.Redis, stream: str
                  ) -> tuple[int, int | None, StreamId | None]:
    """(length, entries ever added (None on Redis < 7), last ID) of `stream`; (0, 0, None)
    if it does not exist."""
    try:
        info = client.xinfo_stream(stream)
    except redis.ResponseError as e:
        if "no such key" in str(e).lower():
            return 0, 0, None
        raise
    last = info["last-generated-id"]
    return int(info["length"]), info.get("entries-added"), last.decode() if last else None


def entries_read_at(client: redis.Redis, stream: str, cursor: StreamId | None) -> int | None:
    """How many entries were ever added to `stream` up to `cursor` (None: everything
    before the first entry still there). Walks the entries after the cursor once: for a
    new state and a migration, never on the hot path."""
    length, added, _ = stream_counts(client, stream)
    if added is None:
        return None
    if cursor is None:
        return added - length
    after, start = 0, f"({cursor}"
    while True:
        page = client.xrange(stream, start, "+", count=10_000)
        after += len(page)
        if len(page) < 10_000:
            return added - after
        start = f"({page[-1][0].decode()}"


def last_id(client: redis.Redis, stream: str) -> StreamId | None:
    return stream_counts(client, stream)[2]
