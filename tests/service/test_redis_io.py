"""The loop's own protocol packing must produce exactly what hiredis would."""

import hiredis
import pytest

from service.redis_io import bulk_command, packed


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
