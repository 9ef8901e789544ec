"""One writer per model: a lease in Redis that every commit and snapshot is fenced by.

Two engines on one model (a rolling deploy, a second `serve` by mistake) would both write
outputs: predictions doubled. So an engine only reads and writes while it holds
`tickstream:{name}:owner`; every per-batch commit and snapshot switch is a Lua script that
checks the key is still ours inside Redis (service/commit.py, service/snapshots.py), and
the commit renews it. An idle engine renews it here (a WATCHed MULTI/EXEC) every third of
its TTL. A second engine stands by until the lease is released or expires. A lease left
by a process of this host that is gone (SIGKILL, then restart) is taken over at once.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

import redis
from redis.client import Pipeline

from service.embedded_redis import process_alive

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


_HELD_HERE: set[bytes] = set()  # tokens of leases held by this process right now


class LeaseLost(RuntimeError):
    """Another engine holds this model's lease: this one must not write."""


class Lease:
    def __init__(self, client: redis.Redis, key: str, ttl_s: float) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.token = f"{self.host}:{self.pid}:{uuid.uuid4().hex}".encode()
        self.renewed_at = float("-inf")  # time.monotonic() of the last confirmed renewal

    def acquire(self) -> bool:
        """Take the lease if it is free or its holder is a dead process of this host."""
        if self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            self._held()
            return True
        holder = self.client.get(self.key)
        if holder is None or not self._holder_is_gone(holder):
            return False
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.key)
                if pipe.get(self.key) != holder:
                    return False
                pipe.multi()
                pipe.set(self.key, self.token, px=self.ttl_ms)
                pipe.execute()
            except redis.WatchError:
                return False
        self._held()
        return True

    def takeable(self) -> bool:
        """Whether `acquire` would likely succeed now: nobody holds it, or a dead process
        of this host does (a hint: only `acquire` decides, atomically)."""
        holder = self.client.get(self.key)
        return holder is None or self._holder_is_gone(holder)

    def _held(self) -> None:
        self.renewed_at = time.monotonic()
        _HELD_HERE.add(self.token)

    def _holder_is_gone(self, holder: bytes) -> bool:
        host, _, rest = holder.decode(errors="replace").partition(":")
        pid_s = rest.partition(":")[0]
        if host != self.host or not pid_s.isdigit():
            return False
        if int(pid_s) == self.pid:  # this process: another engine here, or an earlier life
            return holder not in _HELD_HERE
        return not process_alive(int(pid_s))

    def holder(self) -> str | None:
        value = self.client.get(self.key)
        return None if value is None else value.decode(errors="replace")

    def fence(self, pipe: Pipeline) -> None:
        """Start `pipe`'s transaction so its EXEC only runs while we hold the lease, and
        renews it. Call before queueing commands; a WatchError at EXEC means LeaseLost."""
        pipe.watch(self.key)
        if pipe.get(self.key) != self.token:
            pipe.reset()
            raise LeaseLost(f"another engine holds {self.key} ({self.holder()})")
        pipe.multi()
        pipe.pexpire(self.key, self.ttl_ms)

    def execute(self, pipe: Pipeline) -> list:
        """EXEC a fenced transaction; the lease counts as renewed from before the WATCH."""
        started = time.monotonic()
        try:
            result = pipe.execute()
        except redis.WatchError:
            raise LeaseLost(f"{self.key} changed hands during a commit") from None
        self.renewed_at = started
        return result

    def renew(self) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            self.fence(pipe)
            self.execute(pipe)

    def renew_if_due(self) -> None:
        """Before reading: renew once a third of the TTL has passed (and after any pause
        long enough that another engine may have taken over)."""
        if time.monotonic() - self.renewed_at > self.ttl_ms / 3000:
            self.renew()

    def release(self) -> None:
        _HELD_HERE.discard(self.token)
        self.renewed_at = float("-inf")
        self.client.eval(_RELEASE, 1, self.key, self.token)
