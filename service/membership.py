"""Which engines of a deployment are alive: each beats into one sorted set, by Redis's clock.

An engine's fair share of the shards is ceil(SHARDS / live engines), so every engine must
count the same engines: the set `tickstream:{name}:engines` holds each live engine with
the time its beat expires (Redis's own TIME, so the engines' clocks do not matter); a
beat drops the expired ones. An engine that stops leaves at once; one that dies drops
out a TTL after its last beat, or at the next beat of an engine on the same host, which
can tell its process is gone.
"""

from __future__ import annotations

import os
import socket
import uuid

import redis

from service.embedded_redis import process_alive

# KEYS: the set; ARGV: this engine ('' to only read), TTL in ms
BEAT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] ~= '' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], 10 * tonumber(ARGV[2]))
end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def engines_key(name: str) -> str:
    return f"tickstream:{name}:engines"


def process_of(member: str) -> str:
    """'host:pid' of an engine id or lease token ('host:pid:random')."""
    return member.rpartition(":")[0] if member.count(":") >= 2 else member


class Membership:
    def __init__(self, client: redis.Redis | redis.RedisCluster, name: str,
                 ttl_s: float) -> None:
        self.client = client
        self.key = engines_key(name)
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.me = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:12]}"

    def beat(self) -> list[str]:
        """Say this engine is alive; the live engines, this one included, sorted."""
        members = [m.decode() for m in self.client.eval(BEAT_LUA, 1, self.key, self.me,
                                                         self.ttl_ms)]
        gone = [m for m in members if self._dead_here(m)]
        if gone:
            self.client.zrem(self.key, *gone)
        return sorted(m for m in members if m not in gone)

    def live(self) -> list[str]:
        """The live engines, without beating (for readers)."""
        return sorted(m.decode() for m in self.client.eval(BEAT_LUA, 1, self.key, "", 0))

    def leave(self) -> None:
        self.client.zrem(self.key, self.me)

    def _dead_here(self, member: str) -> bool:
        host, _, rest = member.partition(":")
        pid = rest.partition(":")[0]
        return (host == self.host and pid.isdigit() and int(pid) != self.pid
                and not process_alive(int(pid)))
