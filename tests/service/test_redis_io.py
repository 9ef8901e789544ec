"""The loop's own protocol packing must produce exactly what hiredis would, and its own
reading of replies must frame and raise them as hiredis and redis-py do."""

import time

import hiredis
import pytest
import redis

from service._resp import columns, reply_end
from service.redis_io import Link, bulk_command, packed


@pytest.mark.parametrize("args", [
    (b"XACK", b"ticks", b"group", *[b"%d-%d" % (1767225600000 + i, i % 12) for i in range(50)]),
    (b"HSET", b"state", b"0", b"", b"17", b"\r\n\x00" * 3000, b"4096", b"x" * 4096),
    (b"PING",),
])
def test_bulk_command_packs_like_hiredis(args: tuple[bytes, ...]) -> None:
    assert bulk_command(*args) == hiredis.pack_command(args)


def test_packed_passes_protocol_bytes_through() -> None:
    ready = bulk_command(b"XACK", b"s", b"g", b"1-0")
    assert packed(("MULTI",), ready, ("EXEC",)) == b"".join(
        [hiredis.pack_command(("MULTI",)), ready, hiredis.pack_command(("EXEC",))])


def test_reply_end_finds_each_reply_and_waits_for_the_rest(redis_client: redis.Redis) -> None:
    """Every prefix of a real pipelined run of replies, RESP2 then RESP3: -1 until a reply
    is whole, then its end, where hiredis ends it too."""
    for i in range(50):
        redis_client.xadd("s", {"ticker": "A", "price": str(i), "note": "\r\n" * i})
    redis_client.hset("h", mapping={"a": "1", "b": "2"})
    reads = [("XRANGE", "s", "-", "+"), ("XREAD", "STREAMS", "s", "$"), ("HGETALL", "h"),
             ("GET", "missing"), ("PING",), ("INCR", "h")]
    commands = [("HELLO", "2"), *reads, ("HELLO", "3"), *reads]
    conn = redis_client.connection_pool.get_connection()
    raw, reader, replies = b"", hiredis.Reader(), []
    try:
        conn._sock.sendall(packed(*commands))
        while len(replies) < len(commands):
            data = conn._sock.recv(1 << 16)
            raw += data
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                replies.append(reply)
    finally:
        conn.disconnect()
        redis_client.connection_pool.release(conn)
    start = 0
    for reply in replies:
        end = reply_end(raw, start)
        assert all(reply_end(raw[:cut], start) == -1 for cut in range(start, end))
        one = hiredis.Reader()
        one.feed(raw[start:end])
        assert repr(one.gets()) == repr(reply) and one.gets() is False
        start = end
    assert start == len(raw)
    assert raw.count(b"\r\n_\r\n") >= 2  # RESP3's nulls were among them


def test_read_batch_raises_error_replies_as_redis_py_does(redis_client: redis.Redis) -> None:
    link = Link(redis_client)
    try:
        link.send(packed(("XREAD", "STREAMS", "not-a-stream", "not-an-id")), 1)
        with pytest.raises(redis.ResponseError, match="Invalid stream ID"):
            link.read_batch(xread=True)
        redis_client.set("k", "v")
        link.send(packed(("XRANGE", "k", "-", "+")), 1)
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            link.read_batch(xread=False)
        link.send(packed(("EVALSHA", "0" * 40, 0)), 1)
        with pytest.raises(redis.exceptions.NoScriptError):
            link.read()
    finally:
        link.close()


def test_columns_refuses_a_reply_that_is_not_a_stream_read() -> None:
    with pytest.raises(ValueError, match="unexpected reply"):
        columns(b"*1\r\n:5\r\n", False, 64)
    with pytest.raises(ValueError, match="unexpected reply"):
        columns(b"*2\r\n*2\r\n$3\r\n1-0\r\n*0\r\n", False, 64)  # truncated


def test_a_push_message_is_no_reply(redis_client: redis.Redis) -> None:
    """RESP3 pushes (here a client-tracking invalidation) come between replies; the link
    skips them, so each command still gets its own reply."""
    link = Link(redis.Redis(connection_pool=redis_client.connection_pool, protocol=3))
    try:
        assert link.call(("HELLO", "3"))[b"proto"] == 3
        assert link.call(("CLIENT", "TRACKING", "ON")) in (b"OK", "OK", True)
        redis_client.set("k", "1")
        assert link.call(("GET", "k")) == b"1"
        redis_client.set("k", "2")  # invalidates k: a push to the link's connection
        time.sleep(0.05)
        link.send(packed(("XRANGE", "missing", "-", "+")), 1)
        assert len(link.read_batch(xread=False)) == 0
        assert link.call(("GET", "k")) == b"2"
    finally:
        link.close()
