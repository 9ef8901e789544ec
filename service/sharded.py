"""Several shards, several engines: this process runs the shards of its fair share.

With SHARDS = S > 1 each shard is what one unsharded deployment is (its own stream,
state, cursor, outputs and lease; service/shards.py names them) and has its own `Engine`
(service/ingest.py). One thread runs every shard held here, a turn of each engine in
order (`Engine.iterate`, reads that never wait in Redis), sleeping a little only when no
shard had anything to do: measured against a thread per shard, one loop spends less CPU
per tick (threads fight over the GIL; BENCHMARKS.md). This module also decides which
shards run here: every engine beats into a set of live engines (service/membership.py)
and holds up to its fair share, ceil(S / live engines), of the shard leases.

- An engine joins: the others now hold more than their share and hand shards over
  gracefully: the shard's last commit, a last snapshot, its lease released. The
  newcomer takes the free leases and restores (nothing to replay).
- An engine dies: its leases run out after LEASE_TTL_S (at once when the dead process
  was on this host), and its beat drops out of the set; the others take the shards up
  to their new share and restore from the snapshot + replay, as after any crash.

Reads: any engine answers for any ticker. Shards run here serve from memory; the HTTP
layer reads the others' latest-prediction records from Redis (`remote`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from models.artifact import Artifact
from models.evaluation import Evaluator, Quality
from models.ticks import InvalidTick, normalize_ticker
from service import topology
from service.config import Settings
from service.entries import CONTROL
from service.ingest import Engine
from service.layout import Layout
from service.lease import Lease
from service.loop_figures import Counters, describe_model
from service.membership import Membership, process_of
from service.records import parse_id
from service.served_waits import ServedWaits
from service.shards import check_shard_count, shard_of
from service.snapshot import Prediction, Snapshot
from service.types import Row

log = logging.getLogger(__name__)

BALANCE_EVERY_S = 0.5  # beat and rebalance this often (at most a third of the lease TTL)
IDLE_POLL_S = (0.001, 0.01)  # no shard had anything to do: look again after this long,
# doubling from the first to the second while the shards stay idle
RESET_POLL_S = 0.02


def check_topology(settings: Settings, cluster: bool) -> None:
    """Redis Cluster needs every key of a commit in one slot: the sharded layout."""
    if cluster and settings.shards == 1:
        raise ValueError("this Redis is a Redis Cluster: set TICKSTREAM_SHARDS (--shards) to "
                         "2 or more, so each shard's keys share one hash slot")


@dataclass(frozen=True)
class Remote:
    """Where the latest predictions of a shard run by another engine are read from."""

    shard: int
    predictions: str  # hash: ticker -> record (service/records.py)
    model: str  # the model_version of the shard's last snapshot
    output_cursor: str  # the last entry whose outputs are written


class ShardedEngine:
    """The engines of the shards this process holds, behind the Engine's read API."""

    def __init__(self, settings: Settings, artifact: Artifact, redis_url: str,
                 cluster: bool = False) -> None:
        self.settings = settings
        self.artifact = artifact
        self.base_version = artifact.meta.model_version
        self.count = settings.shards
        self.redis_url, self.cluster = redis_url, cluster
        self._client = topology.client(redis_url, cluster, socket_connect_timeout=2.0,
                                       socket_timeout=5.0)
        self._members = Membership(self._client, settings.name, settings.lease_ttl_s)
        self._settings = [settings.for_shard(s) for s in range(self.count)]
        self.layouts = [Layout.from_settings(s) for s in self._settings]
        self._engines: Mapping[int, Engine] = MappingProxyType({})  # swapped whole
        self._live: list[str] = []
        self._every_s = min(BALANCE_EVERY_S, settings.lease_ttl_s / 3)
        self._merged: tuple[tuple[Mapping[str, Prediction], ...], Mapping[str, Prediction]] \
            = ((), MappingProxyType({}))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def join(self) -> list[str]:
        """Count as a live engine (shares shrink) without taking any shard yet; the live
        engines. `start` joins too: this is for starting several engines at once."""
        self._live = self._members.beat()
        return self._live

    def start(self) -> None:
        """Refuse another shard count than the state's; take this engine's share of the
        shards before serving; then one thread runs them all and keeps the share."""
        unsharded = Layout.from_settings(self.settings)
        check_shard_count(self._client, self.settings.name, self.count,
                          [unsharded.snapshot, unsharded.output_cursor])
        self._balance()
        self._thread = threading.Thread(target=self._run, name="tickstream-shards",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Hand every shard over: last commit, last snapshot, lease released."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self._members.leave()
        finally:
            self._client.close()

    def _run(self) -> None:
        """The one loop: a turn of each shard's engine in order, a beat and rebalance
        every BALANCE_EVERY_S, a short sleep when no shard had anything to do."""
        balanced_at = time.monotonic()
        retry_at: dict[int, float] = {}  # a shard's engine backing off until then
        idle_s = IDLE_POLL_S[0]
        while not self._stop.is_set():
            now = time.monotonic()
            if now - balanced_at >= self._every_s:
                balanced_at = now
                try:
                    self._balance()
                except Exception as e:  # Redis away: the shards' engines cope on their own
                    log.warning("shards: rebalancing failed: %s: %s", type(e).__name__, e)
            idle = True
            for s, engine in self._engines.items():
                if retry_at.get(s, 0.0) > now:
                    continue
                wait = engine.iterate()
                retry_at[s] = now + wait
                idle = idle and engine.idle
            if idle:
                self._stop.wait(idle_s)
                idle_s = min(2 * idle_s, IDLE_POLL_S[1])
            else:
                idle_s = IDLE_POLL_S[0]
        for s in list(self._engines):
            self._drop(s)

    def _balance(self) -> None:
        """Beat; hold exactly the fair share of shards where free ones allow. Runs on
        the loop's thread (or before it starts): it alone changes the engines."""
        live = self.join()
        for s, e in list(self._engines.items()):
            if e.status()["standby"]:  # its lease went to another engine
                log.warning("shards: shard %d lost its lease; dropping it here", s)
                self._drop(s)
        share = math.ceil(self.count / max(1, len(live)))
        for s in sorted(self._engines, reverse=True)[: max(0, len(self._engines) - share)]:
            t0 = time.monotonic()
            self._drop(s)
            log.info("shards: handed shard %d over (%d engines live, share %d) in %.2fs",
                     s, len(live), share, time.monotonic() - t0)
        for s in self._preferred(live, share):
            if len(self._engines) >= share or self._stop.is_set():
                break
            engine = None if s in self._engines else self._take(s)
            if engine is not None:
                self._engines = MappingProxyType({**self._engines, s: engine})

    def _drop(self, shard: int) -> None:
        """Stop running `shard` here: last commit and snapshot, lease released (a lost
        lease: nothing to write)."""
        engine = self._engines[shard]
        self._engines = MappingProxyType({s: e for s, e in self._engines.items()
                                          if s != shard})
        engine.finish()
        engine.published.served.close()  # readers waiting on it turn to the new owner's outputs
        engine.close()

    def _preferred(self, live: list[str], share: int) -> list[int]:
        """All shards, starting where this engine's slice would begin: engines that
        join together then rarely race for the same lease."""
        me = live.index(self._members.me) if self._members.me in live else 0
        first = (me * share) % self.count
        return [(first + i) % self.count for i in range(self.count)]

    def _take(self, shard: int) -> Engine | None:
        """Start the shard's engine if its lease is free: restore + replay."""
        probe = Lease(self._client, self.layouts[shard].owner, self.settings.lease_ttl_s)
        if not probe.takeable():
            return None
        url = self.redis_url if not self.cluster else topology.node_url(
            self.redis_url, self._client, self.layouts[shard].owner)
        t0 = time.monotonic()
        engine = Engine(self._settings[shard], self.artifact, url)
        if not engine.open(standby=False, blocking=False):  # another engine was quicker
            engine.close()
            return None
        replaying = engine.status()["replaying"]
        log.info("shards: took shard %d (restored, %s) in %.2fs", shard,
                 replaying["says"] if replaying else "nothing to replay", time.monotonic() - t0)
        return engine

    # ---- which engine has a ticker

    def engine_of(self, ticker: str) -> Engine | None:
        return self._engines.get(shard_of(ticker, self.count))

    def remote(self, ticker: str) -> Remote:
        """Where `ticker`'s shard keeps its latest predictions in Redis."""
        return self._remote(shard_of(ticker, self.count))

    def remotes(self) -> list[Remote]:
        """Every shard no engine here runs."""
        here = self._engines
        return [self._remote(s) for s in range(self.count) if s not in here]

    def _remote(self, shard: int) -> Remote:
        lay = self.layouts[shard]
        return Remote(shard, lay.predictions, lay.model, lay.output_cursor)

    # ---- the Engine's read API, over the shards run here

    @property
    def snapshot(self) -> Snapshot:
        """The predictions of every shard run here; as fresh as the stalest of them."""
        parts = [e.snapshot for e in self._engines.values()]
        preds = tuple(p.predictions for p in parts)
        cached, merged = self._merged
        if len(cached) != len(preds) or any(a is not b for a, b in zip(cached, preds,
                                                                          strict=True)):
            joined: dict[str, Prediction] = {}
            for p in preds:
                joined.update(p)
            merged = MappingProxyType(joined)
            self._merged = (preds, merged)
        fresh = min((p.fresh_at for p in parts), default=time.time())
        return Snapshot(merged, fresh, None)

    def snapshot_of(self, ticker: str) -> Snapshot | None:
        """The snapshot holding `ticker`'s prediction; None: another engine's shard."""
        engine = self.engine_of(ticker)
        return None if engine is None else engine.snapshot

    def served_of(self, ticker: str) -> ServedWaits | None:
        """Where a reader waits to see `ticker`'s outputs; None: another engine's shard."""
        engine = self.engine_of(ticker)
        return None if engine is None else engine.published.served

    def tickers(self) -> dict[str, Row]:
        """Ticker -> its row in its shard's model, for the shards run here."""
        out: dict[str, Row] = {}
        for e in self._engines.values():
            out.update(e.tickers())
        return out

    @property
    def capacity(self) -> int:
        return sum(e.capacity for e in self._engines.values())

    @property
    def max_tickers(self) -> int:
        return self.settings.max_tickers * self.count

    @property
    def model_version(self) -> str:
        versions = {e.model_version for e in self._engines.values()}
        return versions.pop() if len(versions) == 1 else self.base_version

    @property
    def scores(self) -> Evaluator:
        return Evaluator.joined([e.scores for e in self._engines.values()],
                                self.settings.eval_halflife)

    def quality(self, ticker: str) -> Quality | None:
        engine = self.engine_of(ticker)
        return None if engine is None else engine.quality(ticker)

    def skills(self) -> Callable[[str], float | None]:
        lookups = {s: e.skills() for s, e in self._engines.items()}

        def skill(ticker: str) -> float | None:
            lookup = lookups.get(shard_of(ticker, self.count))
            return None if lookup is None else lookup(ticker)

        return skill

    def model_info(self) -> dict[str, Any]:
        infos = {s: e.model_info() for s, e in sorted(self._engines.items())}
        info = next(iter(infos.values()), None) or describe_model(
            self.settings, self.base_version, self.base_version, None)
        losses = [i["running_loss"] for i in infos.values() if i["running_loss"] is not None]
        return {**info, "model_version": self.model_version,
                "updates": sum(i["updates"] for i in infos.values()),
                "skipped": {k: sum(i["skipped"][k] for i in infos.values())
                            for k in info["skipped"]},
                "running_loss": sum(losses) / len(losses) if losses else None,
                "shards": {str(s): i["model_version"] for s, i in infos.items()}}

    @property
    def ready(self) -> bool:
        return all(e.ready for e in self._engines.values())

    @property
    def current(self) -> bool:
        return all(e.current for e in self._engines.values())

    def counters(self) -> Counters:
        """The shards' counters summed (lag: unknown if any shard's is)."""
        out = Counters()
        lags = []
        for e in self._engines.values():
            c = e.counters()
            out.add(c)
            lags.append(c.lag)
        out.lag = None if None in lags else sum(lags)  # type: ignore[arg-type]
        return out

    def snapshot_status(self) -> dict[str, Any]:
        parts = [e.snapshot_status() for e in self._engines.values()]
        have = [p for p in parts if p["age_s"] is not None]
        return {"written": sum(p["written"] for p in parts),
                "failed": sum(p["failed"] for p in parts),
                "cursor": None,
                "age_s": max((p["age_s"] for p in have), default=None),
                "size_bytes": sum(p["size_bytes"] for p in have) if have else None,
                "seconds": max((p["seconds"] for p in have), default=None)}

    def status(self) -> dict[str, Any]:
        """The Engine's status over the shards run here, plus `shards_here`."""
        states = {s: e.status() for s, e in sorted(self._engines.items())}
        c = self.counters()
        replaying = [st["replaying"] for st in states.values() if st["replaying"]]
        refusing = [st["refusing_writes"] for st in states.values() if st["refusing_writes"]]
        errors = [f"shard {s}: {st['last_error']}" for s, st in states.items()
                  if st["last_error"]]
        oks = [st["last_ok_at"] for st in states.values()]
        return {
            "connected": all(st["connected"] for st in states.values()),
            "ready": self.ready, "current": self.current, "standby": False,
            "refusing_writes": refusing[0] if refusing else None,
            "last_ok_at": None if None in oks or not oks else min(oks),
            "last_error": "; ".join(errors) or None, "lag": c.lag,
            "replaying": None if not replaying else {
                "done": sum(r["done"] for r in replaying),
                "total": None if any(r["total"] is None for r in replaying)
                else sum(r["total"] for r in replaying),
                "says": "; ".join(f"shard {s}: {st['replaying']['says']}"
                                  for s, st in states.items() if st["replaying"])},
            "batches": c.batches, "applied": c.applied, "replayed": c.replayed,
            "dead_lettered": c.dead_lettered, "errors": c.errors,
            "gap_entries": c.gap_entries, "last_batch_seconds": c.last_batch_seconds,
            "stream_id": None, "snapshot": self.snapshot_status(),
            "capacity": self.capacity, "tickers": sum(st["tickers"] for st in states.values()),
            "model_version": self.model_version,
            "shards_here": sorted(states), "engines_live": len(self._live),
        }  # fmt: skip

    def reset_ticker(self, ticker: str, timeout: float = 5.0) -> bool:
        """Reset through the ticker's shard stream; waits until its owner applied it."""
        try:
            ticker = normalize_ticker(ticker)
        except InvalidTick:
            return False
        engine = self.engine_of(ticker)
        if engine is not None:
            return engine.reset_ticker(ticker, timeout)
        shard = shard_of(ticker, self.count)
        lay = self.layouts[shard]
        if not self._client.hexists(lay.predictions, ticker):
            return False
        entry_id = self._client.xadd(self._settings[shard].stream,
                                     {CONTROL: b"reset", b"ticker": ticker.encode()})
        target, deadline = parse_id(entry_id.decode()), time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self._client.get(lay.output_cursor)
            if done is not None and parse_id(done.decode()) >= target:
                return True
            time.sleep(RESET_POLL_S)
        raise TimeoutError(f"reset of {ticker} ({entry_id.decode()}) is in shard {shard}'s "
                           f"stream but not applied after {timeout:g}s")

    def engines_live(self) -> int:
        return len(self._live)

    def shards(self) -> list[dict[str, Any]]:
        """Each shard: who runs it, how far its outputs are, its lag and tickers (one
        pipelined round trip for all of them)."""
        with self._client.pipeline(transaction=False) as pipe:
            for lay, shard_settings in zip(self.layouts, self._settings, strict=True):
                pipe.get(lay.owner)
                pipe.get(lay.output_cursor)
                pipe.hlen(lay.predictions)
                pipe.xinfo_groups(shard_settings.stream)
            replies = pipe.execute(raise_on_error=False)
        out = []
        for s in range(self.count):
            owner, cursor, known, groups = replies[4 * s : 4 * s + 4]
            engine = self._engines.get(s)
            lag: int | None = None
            if engine is not None:
                lag = engine.counters().lag
            elif isinstance(groups, list):
                mine = [g for g in groups if g.get("name") == self.settings.group.encode()]
                lag = mine[0].get("lag") if mine else None
            out.append({
                "shard": s, "stream": self._settings[s].stream,
                "owner": None if owner is None else process_of(owner.decode()),
                "here": engine is not None,
                "cursor": None if cursor is None else cursor.decode(),
                "lag": lag,
                "tickers": len(engine.tickers()) if engine is not None else known,
                "ready": None if engine is None else engine.ready,
            })  # fmt: skip
        return out


AnyEngine = Engine | ShardedEngine  # what the HTTP layer reads: one shard or several
