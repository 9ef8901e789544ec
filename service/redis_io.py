"""The ingest loop's line to Redis: commands sent now, replies read later.

redis-py's pipeline sends and waits in one call; the loop wants to commit batch k and
ask for batch k+2 while it steps batch k+1 (Redis runs on the other core), so it holds one
connection of the client's pool and reads each reply when it needs it. It reads the
socket itself: a stream read goes from Redis's bytes straight to columns
(service/_resp.c, `ReadBatch`), any other reply through hiredis as redis-py would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis
import redis
from redis._parsers import BaseParser
from redis.backoff import NoBackoff
from redis.connection import Connection
from redis.retry import Retry

from service._resp import reply_end
from service.entries import ReadBatch

Command = Sequence[bytes | str | int | float]  # or, already in the protocol, bytes
_HEADS = [b"$%d\r\n" % n for n in range(4096)]  # bulk string headers by length
RECV_BYTES = 1 << 18  # per socket read: a 1,000-entry XREAD reply is ~90 KB
PUSH = ord(">")  # a RESP3 push message's first byte


def connect(redis_url: str, block_ms: int) -> redis.Redis:
    """A client that never retries on its own: a resent commit whose reply was lost would
    write a batch's outputs twice; the loop's reload-and-replay handles failures."""
    return redis.Redis.from_url(
        redis_url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2.0,
        socket_timeout=block_ms / 1000 + 5.0, decode_responses=False,
    )


# Error replies of a Redis that is up but refuses writes: maxmemory reached (noeviction),
# a failed AOF/RDB write, a read-only replica. Nothing of the refused command was applied.
WRITE_REFUSALS = ("OOM", "MISCONF", "READONLY", "NOREPLICAS")


def write_refusal(error: BaseException) -> str | None:
    """The error as Redis said it ("OOM command not allowed ...") if it refuses writes.

    redis-py strips the code off the errors it has a class for (OOM, READONLY)."""
    if not isinstance(error, redis.ResponseError):
        return None
    code = getattr(error, "status_code", None)
    text = f"{code} {error}" if code else str(error)
    return text if text.startswith(WRITE_REFUSALS) else None


def packed(*commands: Command) -> bytes:
    """Commands in the Redis protocol, ready to send in one write (packing is C work)."""
    return b"".join(c if isinstance(c, bytes) else hiredis.pack_command(tuple(c))
                    for c in commands)


def bulk_command(*args: bytes) -> bytes:
    """One command of many bytes arguments in the protocol, built with C-level joins.

    For the commit's big commands (a batch's prediction records, thousands of arguments):
    hiredis.pack_command spends ~0.3-1 us per bytes argument on this machine, this ~0.1.
    """
    lens = list(map(len, args))
    if max(lens) >= len(_HEADS):
        heads = [b"$%d\r\n" % n for n in lens]
    else:
        heads = list(map(_HEADS.__getitem__, lens))
    parts = [b"\r\n"] * (3 * len(args))
    parts[0::3] = heads
    parts[1::3] = args
    return b"*%d\r\n" % len(args) + b"".join(parts)


def _reader() -> hiredis.Reader:
    return hiredis.Reader(protocolError=redis.InvalidResponse,
                          replyError=BaseParser.parse_error)


class Link:
    """One connection taken from `client`'s pool for pipelining across calls.

    Every sent command owes one reply, read in order with `read` (or `read_batch` for a
    stream read). After any error the link's state is unknown: `close()` it (the next
    `send` takes a connection again).
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._conn: Connection | None = None
        self._buffer = bytearray()  # bytes read from the socket, not yet handed out
        self._start = 0  # where the next reply begins in _buffer
        self._hiredis = _reader()  # for replies other than stream reads, one whole at a time
        self.owed = 0  # replies sent for and not yet read

    def send(self, data: bytes, replies: int) -> None:
        """Write packed commands that owe `replies` replies, without waiting for them."""
        if self._conn is None:
            self._conn = self._pool.get_connection()
            self.owed = 0
        self._conn.send_packed_command([data])
        self.owed += replies

    def read(self) -> Any:
        """The next reply; a Redis error reply is raised as redis.ResponseError."""
        return self._parsed(self._next_reply())

    def read_batch(self, xread: bool) -> ReadBatch:
        """The next reply, an XREAD of one stream (`xread`) or an XRANGE, as its entries."""
        raw = self._next_reply()
        if raw[:1] in (b"-", b"!"):
            self._parsed(raw)  # an error reply: raised as `read` raises it
        return ReadBatch.of_reply(raw, xread)

    def call(self, command: Command) -> Any:
        """Send one command and wait for its reply (nothing else may be owed)."""
        if self.owed:
            raise RuntimeError(f"{self.owed} replies still owed on this link")
        self.send(packed(command), 1)
        return self.read()

    def _parsed(self, raw: bytes) -> Any:
        """One whole reply through hiredis, as redis-py gives it (its error classes)."""
        self._hiredis.feed(raw)
        reply = self._hiredis.gets()
        if isinstance(reply, redis.ResponseError):
            raise reply
        return reply

    def close(self) -> None:
        """Give the connection back; dropped if replies are still owed (they are lost)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            if self.owed:
                conn.disconnect()
            self._pool.release(conn)
        self.owed = 0
        self._buffer.clear()
        self._start = 0
        self._hiredis = _reader()

    def _next_reply(self) -> bytes:
        if self._conn is None or not self.owed:
            raise RuntimeError("no reply owed on this link")
        while True:
            while (end := reply_end(self._buffer, self._start)) < 0:
                self._receive()
            if self._buffer[self._start] != PUSH:
                break
            self._start = end  # a RESP3 push (the server's own news): no command's reply
        reply = bytes(self._buffer[self._start : end])
        self.owed -= 1
        if end == len(self._buffer):
            self._buffer.clear()
            end = 0
        self._start = end
        return reply

    def _receive(self) -> None:
        """More bytes from the socket; failures as redis-py raises them."""
        sock = self._conn._sock if self._conn is not None else None
        if sock is None:
            raise redis.ConnectionError("the connection to Redis was closed")
        try:
            data = sock.recv(RECV_BYTES)
        except TimeoutError:  # socket.timeout: the client's socket_timeout passed
            raise redis.TimeoutError("timeout reading from Redis") from None
        except OSError as e:
            raise redis.ConnectionError(f"error while reading from Redis: {e}") from None
        if not data:
            raise redis.ConnectionError("Redis closed the connection")
        if self._start > len(self._buffer) // 2:  # keep the buffer from growing forever
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data
