"""Recovery and snapshots (issue 8): how long a restart takes to be ready again with
`entries` stream entries after its snapshot, and what one snapshot costs at N=10,000.

The crashed state is made the way a crash makes it, at N tickers, uniform traffic:
1. an in-process engine applies `warm` entries and stops cleanly: a snapshot at entry
   `warm`, outputs written up to there (saved: the *snapshot* state);
2. `entries` more are appended and a `tickstream serve` process applies them live with
   its periodic snapshots off (SNAPSHOT_EVERY_S 86400, SNAPSHOT_EVERY_TICKS 10^12), so
   its outputs are committed up to the last entry; once it serves that entry it is
   SIGKILLed (saved: the *crashed* state: snapshot at `warm`, output cursor at the end).
The saved states are every key of the engine's name and its predictions stream, DUMPed
and RESTOREd byte for byte before each run; the tick stream itself never changes
(TICK_RETENTION none). Each round then times, back to back:
- replay: an in-process Engine started on the crashed state, from start() until `ready`
  (load the snapshot, replay `entries` entries writing nothing, one live read that finds
  the stream drained);
- live: an in-process Engine started on the snapshot state, until the outputs of the
  last entry are committed: the same entries from the same state, outputs written. The
  like-for-like live drain the replay is compared with;
- restart: `tickstream serve` started on the crashed state, from exec to /readyz 200
  (Python, TensorFlow and the model load included), then SIGKILLed again.

Snapshot cost: an engine drains `ticks` uniform ticks over `tickers` tickers and stops
(its last snapshot holds every row); that state is loaded into a RowState like the
loop's, then each round times `RowState.capture` (the copy the loop makes between
batches: all it is blocked for) and `SnapshotStore.write` of the copy (pieces, then the
fenced switch; in the service it runs on the snapshot thread), with SLOWLOG catching the
longest single Redis command of the write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.drain import DrainRun, engine_drain, engine_run
from bench.service import get_json, serves_through, tickstream_serve, wait_for
from bench.traffic import fill, tick_fields
from models.artifact import Artifact
from models.online import OnlineLearner
from service.config import Settings
from service.embedded_redis import EmbeddedRedis
from service.layout import Layout
from service.lease import Lease
from service.reader import last_id
from service.snapshots import SnapshotStore
from service.state import RowState

READY_TIMEOUT_S = 600.0
SLOWLOG_LEN = 1024


@dataclass(frozen=True)
class Recovery:
    replay: DrainRun  # in process, crashed state -> ready
    live: DrainRun  # in process, snapshot state -> last entry's outputs committed
    restart_s: float  # `tickstream serve`, crashed state: exec -> /readyz 200


@dataclass(frozen=True)
class SnapshotCost:
    tickers: int
    size_bytes: int
    capture_s: float  # RowState.capture: the loop's part
    write_s: float  # SnapshotStore.write: the snapshot thread's part
    longest_command_s: float  # the longest Redis command of the write (SLOWLOG)


def quiet_settings(url: str, name: str, stream: str, batch_count: int,
                   max_tickers: int = 10_000) -> tuple[Settings, dict[str, str]]:
    """An engine that snapshots only at a clean stop, never trims and does not learn: its
    Settings in process, and the same as the TICKSTREAM_* variables of a serve process."""
    fields = {"learn": "false", "name": name, "stream": stream,
              "predictions_stream": f"predictions:{name}",
              "batch_count": str(batch_count), "max_tickers": str(max_tickers),
              "tick_retention": "none", "snapshot_every_s": "86400",
              "snapshot_every_ticks": str(10**12)}
    return (Settings.model_validate({"redis_url": url, **fields}),
            {f"TICKSTREAM_{k.upper()}": v for k, v in fields.items()})


def state_keys(client: redis.Redis, name: str) -> list[bytes]:
    return client.keys(f"tickstream:{name}:*") + client.keys(f"predictions:{name}")


def save_state(client: redis.Redis, name: str) -> dict[bytes, bytes]:
    return {key: client.dump(key) for key in state_keys(client, name)}


def load_state(client: redis.Redis, name: str, saved: dict[bytes, bytes]) -> None:
    """Make the engine's keys exactly `saved` again (keys written since are deleted)."""
    pipe = client.pipeline(transaction=True)
    stale = state_keys(client, name)
    if stale:
        pipe.delete(*stale)
    for key, value in saved.items():
        pipe.restore(key, 0, value, replace=True)
    pipe.execute()


def measure_recovery(server: EmbeddedRedis, artifact: Artifact, model_dir: Path,
                     workdir: Path, tickers: int, warm: int, entries: int, batch_count: int,
                     rounds: int, say: Callable[[str], None]) -> list[Recovery]:
    name, stream = "recovery", "ticks:recovery"
    settings, env = quiet_settings(server.url, name, stream, batch_count)
    client = redis.Redis.from_url(server.url)
    ticks = tick_fields("uniform", tickers, warm + entries, seed=11)
    try:
        fill(client, server.port, stream, {k: v[:warm] for k, v in ticks.items()})
        engine_drain(settings, artifact, server.url)  # stops cleanly: snapshot at `warm`
        at_snapshot = save_state(client, name)
        snapshot_cursor = last_id(client, stream)
        fill(client, server.port, stream, {k: v[warm:] for k, v in ticks.items()})
        svc = tickstream_serve(server.url, model_dir, workdir, name, stream, env)
        say(f"[recovery] {warm:,} entries in the snapshot; tickstream serve applies "
            f"{entries:,} more live, then SIGKILL")
        last = last_id(client, stream)
        svc.start()
        try:
            wait_for(lambda: serves_through(svc, last), "serve to apply the entries",
                     READY_TIMEOUT_S, every_s=0.05)
        finally:
            svc.kill()
        cursor = client.hget(f"{settings.key_prefix}snapshot", "cursor")
        if cursor is None or cursor.decode() != snapshot_cursor:
            raise RuntimeError(f"the snapshot moved to {cursor!r}: replay would be shorter")
        crashed = save_state(client, name)

        results = []
        for r in range(rounds):
            load_state(client, name, crashed)
            replay = engine_run(settings, artifact, server.url, lambda e: e.ready)
            load_state(client, name, at_snapshot)
            live = engine_drain(settings, artifact, server.url)
            if (replay.replayed, live.applied, live.replayed) != (entries, entries, 0):
                raise RuntimeError(f"replayed {replay.replayed:,} and applied {live.applied:,}"
                                   f" live of {entries:,} entries")
            load_state(client, name, crashed)
            t0 = time.perf_counter()
            svc.start()
            try:
                wait_for(lambda: get_json(svc.port, "/readyz").get("ready") is True,
                         "serve to be ready", READY_TIMEOUT_S, every_s=0.02)
                restart_s = time.perf_counter() - t0
            finally:
                svc.kill()
            results.append(Recovery(replay, live, restart_s))
            say(f"[recovery {r + 1}/{rounds}] replay of {entries:,} entries: "
                f"{replay.seconds:.2f}s ({replay.rate():,.0f}/s); live, same entries: "
                f"{live.seconds:.2f}s ({live.rate():,.0f}/s); tickstream serve exec to "
                f"ready: {restart_s:.1f}s")
        return results
    finally:
        client.delete(stream, *state_keys(client, name))
        client.close()


def measure_snapshot(server: EmbeddedRedis, artifact: Artifact, tickers: int, ticks: int,
                     batch_count: int, rounds: int, say: Callable[[str], None]
                     ) -> list[SnapshotCost]:
    name, stream = "snapshot", "ticks:snapshot"
    settings, _ = quiet_settings(server.url, name, stream, batch_count, max(tickers, 10_000))
    client = redis.Redis.from_url(server.url)
    slowlog = client.config_get("slowlog-*")
    try:
        fill(client, server.port, stream, tick_fields("uniform", tickers, ticks, seed=13))
        engine_drain(settings, artifact, server.url)  # its last snapshot: every row
        layout, version = Layout.from_settings(settings), artifact.meta.model_version
        lease = Lease(client, layout.owner, settings.lease_ttl_s)
        if not lease.acquire():
            raise RuntimeError(f"{layout.owner} is held by {lease.holder()}")
        store = SnapshotStore(client, layout, lease.token, None)
        store.load_scripts()
        data = store.load(artifact.stepper(1).row_state_size, version)
        assert data is not None
        learner = OnlineLearner(artifact.model, settings.learn_config, 1)
        state = RowState.from_snapshot(artifact, settings, learner, data)
        client.config_set("slowlog-log-slower-than", 0)
        client.config_set("slowlog-max-len", SLOWLOG_LEN)
        costs = []
        for r in range(rounds):
            t0 = time.perf_counter()
            captured = state.capture()
            capture_s = time.perf_counter() - t0
            client.slowlog_reset()
            written = store.write(captured)
            longest = max(e["duration"] for e in client.slowlog_get(SLOWLOG_LEN)) / 1e6
            costs.append(SnapshotCost(len(data.tickers), written.size_bytes, capture_s,
                                      written.seconds, longest))
            say(f"[snapshot {r + 1}/{rounds}] N={len(data.tickers):,}: capture "
                f"{capture_s * 1e3:.1f} ms, write {written.seconds * 1e3:.0f} ms of "
                f"{written.size_bytes / 1e6:.2f} MB, longest Redis command "
                f"{longest * 1e3:.1f} ms")
        lease.release()
        return costs
    finally:
        client.config_set("slowlog-log-slower-than", slowlog["slowlog-log-slower-than"])
        client.config_set("slowlog-max-len", slowlog["slowlog-max-len"])
        client.delete(stream, *state_keys(client, name))
        client.close()
