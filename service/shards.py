"""Shards: which shard a ticker belongs to, and the names of a shard's streams and keys.

With SHARDS = S > 1, tickers are split by a stable hash of the ticker as the stream stores
it (case-folded to upper): `shard_of(ticker, S) = CRC32(ticker as UTF-8) mod S` (zlib's
CRC32, as in gzip and PNG; a producer in any language can compute it). Shard s has its
own tick stream `<STREAM>:{s}`, dead stream, predictions stream, state, cursors and lease,
all of whose names carry the hash tag `{s}`: Redis Cluster puts them in one hash slot,
so each shard's commit and snapshot switch stay one atomic step there. SHARDS = 1 is the
unsharded layout (`ticks`, `tickstream:{name}:...`) and stays as it was.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from service.records import StateError


def shard_of(ticker: str, shards: int) -> int:
    """The shard of `ticker` (any case) among `shards`: CRC32 of its upper-case UTF-8."""
    return zlib.crc32(ticker.upper().encode()) % shards


def shard_tag(shard: int) -> str:
    """The Redis Cluster hash tag every key and stream of `shard` carries."""
    return f"{{{shard}}}"


def shard_stream(stream: str, shard: int | None) -> str:
    """A stream's name for one shard (None: unsharded, the name as it is)."""
    return stream if shard is None else f"{stream}:{shard_tag(shard)}"


@dataclass(frozen=True)
class Shard:
    """One shard of `count`: what its engine admits (other tickers are dead-lettered)."""

    index: int
    count: int

    def owns(self, ticker: str) -> bool:
        return shard_of(ticker, self.count) == self.index


@dataclass(frozen=True)
class Routing:
    """Where a producer appends a ticker's entries: the stream of the ticker's shard."""

    stream: str
    shards: int = 1

    def stream_of(self, ticker: str) -> str:
        if self.shards == 1:
            return self.stream
        return shard_stream(self.stream, shard_of(ticker, self.shards))

    def streams(self) -> list[str]:
        if self.shards == 1:
            return [self.stream]
        return [shard_stream(self.stream, s) for s in range(self.shards)]

    def split(self, tickers: Iterable[str]) -> dict[str, list[int]]:
        """Positions of `tickers` grouped by their stream, each group in the given order."""
        out: dict[str, list[int]] = {}
        for i, t in enumerate(tickers):
            out.setdefault(self.stream_of(t), []).append(i)
        return out


def shards_key(name: str) -> str:
    """Where a deployment records its shard count: fixed once its state exists."""
    return f"tickstream:{name}:shards"


def check_shard_count(client: redis.Redis | redis.RedisCluster, name: str, shards: int,
                      unsharded_keys: list[str]) -> None:
    """Refuse to run with a shard count other than the one the state was made with.

    The first sharded start records SHARDS; an unsharded state (`unsharded_keys`, e.g. its
    snapshot pointer) counts as SHARDS = 1. Tickers would otherwise land in other shards
    than the ones holding their rows, and the state would fork silently.
    """
    key = shards_key(name)
    recorded = client.get(key)
    if recorded is None:
        had_state = any(client.exists(k) for k in unsharded_keys)
        if shards == 1 or (had_state and _refuse(name, 1, shards)):
            return
        if not client.set(key, shards, nx=True):  # another engine was first: check again
            recorded = client.get(key)
    if recorded is not None and int(recorded) != shards:
        _refuse(name, int(recorded), shards)


def _refuse(name: str, recorded: int, shards: int) -> bool:
    raise StateError(
        f"the state of {name!r} was created with SHARDS={recorded}, this engine has "
        f"SHARDS={shards}: a ticker's row lives in the shard CRC32 picked with the first "
        f"count. Start with TICKSTREAM_SHARDS={recorded}, or another TICKSTREAM_NAME for a "
        "fresh state (there is no migration between shard counts yet)")
