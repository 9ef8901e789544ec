"""The per-batch commit: a batch's outputs and the output cursor, fenced by the lease.

State is not written here: it lives in snapshots (service/snapshots.py) and in the tick
stream, which a restart replays. What a batch must write exactly once are its outputs:
its `predictions` stream entry, the latest-prediction records of the tickers it moved,
its dead letters, and the output cursor (the last entry whose outputs are written). One
Lua call writes them all or nothing, and only while this engine holds the lease: the
check runs inside Redis, in the same atomic step (DESIGN.md invariant 8), and renews the
lease: an engine that commits never needs a renewal of its own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import redis

from service.layout import Layout
from service.lease import LeaseLost
from service.records import encode_predictions
from service.redis_io import bulk_command
from service.snapshot import Prediction
from service.types import StreamId

MAX_DEAD_FIELDS = 64  # fields of a dead entry kept in its letter (Lua's unpack is bounded)
LEASE_LOST = "LEASELOST"  # the error a fenced script answers when the lease is not ours

# KEYS: owner, output_cursor, predictions hash, predictions stream, dead stream
# ARGV: token, cursor, predictions maxlen, dead maxlen, #latest pairs, #evicted,
#       #published entries, #dead letters, lease TTL (ms), predictions MINID ('0' none),
#       then the latest (ticker, record) pairs, the evicted tickers, and each entry as
#       (#fields, field, value, ...)
COMMIT_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LEASELOST ' .. KEYS[1] .. ' is held by another engine')
end
-- The first write may be refused (maxmemory reached: Redis decides at the script's start
-- and refuses its first memory-growing command); it comes before every other write, so a
-- refused commit writes nothing.
redis.call('SET', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[9])  -- a busy engine renews its lease as it commits
local i = 11
local function sliced(cmd, key, n)  -- unpack() is bounded by Lua's stack: 4000 at a time
  local j = 0
  while j < n do
    local m = math.min(n - j, 4000)
    redis.call(cmd, key, unpack(ARGV, i + j, i + j + m - 1))
    j = j + m
  end
  i = i + n
end
sliced('HSET', KEYS[3], 2 * tonumber(ARGV[5]))
sliced('HDEL', KEYS[3], tonumber(ARGV[6]))
for _ = 1, tonumber(ARGV[7]) do  -- bounded by time (whatever the batch sizes) and count
  local n = tonumber(ARGV[i])
  redis.call('XADD', KEYS[4], 'MINID', '~', ARGV[10], '*', unpack(ARGV, i + 1, i + n))
  redis.call('XTRIM', KEYS[4], 'MAXLEN', '~', ARGV[3])
  i = i + 1 + n
end
for _ = 1, tonumber(ARGV[8]) do
  local n = tonumber(ARGV[i])
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, i + 1, i + n))
  i = i + 1 + n
end
return 1
"""


def raise_if_lease_lost(error: redis.ResponseError) -> None:
    if str(error).startswith(LEASE_LOST):
        raise LeaseLost(str(error).removeprefix(LEASE_LOST).strip()) from None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    fields: Mapping[bytes, bytes]  # the entry as it came, undecoded
    reason: str
    source_id: StreamId

    def entry(self) -> list[bytes]:
        """Its XADD field/value arguments: the first MAX_DEAD_FIELDS original fields."""
        kept = list(self.fields.items())[:MAX_DEAD_FIELDS]
        letter = [*kept, (b"reason", self.reason.encode()),
                  (b"source_id", self.source_id.encode())]
        return [part for pair in letter for part in pair]


@dataclass
class Outputs:
    """What one batch (or several, merged) must write once: nothing else changes per batch."""

    cursor: StreamId | None = None  # the last entry covered
    latest: list[Prediction] = field(default_factory=list)  # later ones win
    evicted: list[str] = field(default_factory=list)  # tickers whose rows were recycled
    published: list[Sequence[str | bytes | int]] = field(default_factory=list)  # entries
    dead: list[DeadLetter] = field(default_factory=list)
    applied: int = 0  # ticks applied to a row

    def merge(self, later: Outputs) -> None:
        """Append the outputs of the entries right after these."""
        self.cursor = later.cursor or self.cursor
        gone = set(later.evicted)
        self.latest = [p for p in self.latest if p.ticker not in gone] + later.latest
        self.evicted += later.evicted
        self.published += later.published
        self.dead += later.dead
        self.applied += later.applied


def predictions_minid(retention_ms: int) -> str:
    """The predictions stream keeps entries younger than this (its IDs are commit times)."""
    return "0" if retention_ms == 0 else f"{max(0, round(time.time() * 1000) - retention_ms)}"


def _arg(value: str | bytes | int) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def commit_command(layout: Layout, sha: str, token: bytes, ttl_ms: int, o: Outputs) -> bytes:
    """The EVALSHA of COMMIT_LUA for `o`, packed (a batch's records are thousands of args)."""
    latest = {p.ticker: p for p in o.latest}  # one record per ticker: its last
    tickers = [t.encode() for t in latest]
    records = encode_predictions(list(latest.values()))
    pairs: list[bytes] = [b""] * (2 * len(tickers))
    pairs[0::2], pairs[1::2] = tickers, records
    published = o.published if layout.predictions_maxlen else []
    entries: list[bytes] = []
    for fields in [*published, *(d.entry() for d in o.dead)]:
        entries.append(b"%d" % len(fields))
        entries += map(_arg, fields)
    keys = [layout.owner, layout.output_cursor, layout.predictions, layout.predictions_stream,
            layout.dead_stream]
    head = [token, _arg(o.cursor or "0-0"), _arg(layout.predictions_maxlen or 1),
            _arg(layout.dead_maxlen), _arg(len(tickers)), _arg(len(o.evicted)),
            _arg(len(published)), _arg(len(o.dead)), _arg(ttl_ms),
            _arg(predictions_minid(layout.predictions_retention_ms))]
    return bulk_command(b"EVALSHA", sha.encode(), b"%d" % len(keys), *map(_arg, keys), *head,
                        *pairs, *(t.encode() for t in o.evicted), *entries)
