"""The ingest engine against a real redis-server: online = offline, exactly once, bad input
kept out of the state, growth, per-row reset, recycling, replay, Redis failures."""

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
import redis

from models.artifact import Artifact, ModelMeta, load_artifact, save_artifact
from models.features import FEATURES, LastTicks, compute_features
from models.lstm import build_model
from models.reference import keras_reference
from models.synthetic import SyntheticMarket
from models.ticks import TickTable
from service.embedded_redis import EmbeddedRedis
from service.ingest import Engine
from service.prediction_stream import stream_predictions
from service.publish import Published
from service.records import decode_prediction
from service.redis_io import Link
from service.snapshot import Snapshot

pytestmark = pytest.mark.integration

UNITS = [16, 8]
PREFIX = "tickstream:default:"
StartEngine = Callable[..., Engine]


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained weights with a non-trivial normalisation: the engine must match Keras for
    any weights, and must de-normalise the output."""
    keras.utils.set_random_seed(7)
    directory = tmp_path_factory.mktemp("artifact")
    meta = ModelMeta(features=list(FEATURES), feature_mean=[0.0, 6.0, 0.4],
                     feature_std=[0.002, 1.5, 0.5], target_mean=1e-4, target_std=0.002,
                     units=UNITS, look_back=8)
    save_artifact(directory, build_model(4, UNITS, len(FEATURES)), meta)
    return directory


@pytest.fixture(scope="module")
def artifact(artifact_dir: Path) -> Artifact:
    return load_artifact(artifact_dir)


def interleaved(n_tickers: int, n_ticks: int, seed: int) -> TickTable:
    """Synthetic ticks in a random merge of the tickers' sequences (each keeps its order)."""
    ticks = SyntheticMarket(n_tickers, seed=seed).ticks(n_ticks)
    rng = np.random.default_rng(seed)
    slots = rng.permutation(ticks.ticker)  # which ticker comes next, a random interleaving
    order = np.empty(len(ticks), np.intp)
    for ticker in ticks.tickers():
        order[slots == ticker] = np.flatnonzero(ticks.ticker == ticker)
    return ticks.take(order)


def xadd_ticks(client: redis.Redis, ticks: TickTable, stream: str = "ticks") -> list[bytes]:
    pipe = client.pipeline(transaction=False)
    for t in ticks.ticks():
        pipe.xadd(stream, {"ticker": t.ticker, "price": repr(t.price),
                           "volume": repr(t.volume), "ts": t.ts_ms})
    return pipe.execute()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def wait_caught_up(engine: Engine, last_id: bytes) -> None:
    """Served up to `last_id` and every output committed (served comes first)."""
    wait_for(lambda: engine.snapshot.stream_id == last_id.decode(), f"cursor {last_id!r}")
    wait_for(lambda: engine.ready or not engine.status()["connected"], "outputs committed")


def normalised(artifact: Artifact, prediction: float | np.ndarray) -> np.ndarray:
    meta = artifact.meta
    return (np.asarray(prediction) - meta.target_mean) / meta.target_std


def assert_matches_keras(snapshot: Snapshot, ticks: TickTable, artifact_dir: Path,
                         artifact: Artifact) -> None:
    """Every ticker's served prediction = a batch-size-1 Keras run over its ticks alone."""
    reference = keras_reference(artifact_dir, ticks)
    assert set(snapshot.predictions) == set(reference)
    for ticker, outputs in reference.items():
        p = snapshot.predictions[ticker]
        mine = np.flatnonzero(ticks.ticker == ticker)
        assert p.steps == len(outputs) == len(mine), ticker
        np.testing.assert_allclose(normalised(artifact, p.prediction), outputs[-1], atol=1e-5,
                                   rtol=0, err_msg=ticker)
        assert p.last_price == ticks.price[mine[-1]] and p.as_of == ticks.ts_ms[mine[-1]]
        assert p.predicted_price == pytest.approx(p.last_price * np.exp(p.prediction), 1e-12)
        assert p.model_version == artifact.meta.model_version


def published_by_ticker(client: redis.Redis, stream: str = "predictions") -> dict[str, list]:
    """Ticker -> [(steps, prediction), ...] in stream order."""
    out: dict[str, list] = {}
    for p in stream_predictions(client.xrange(stream)):
        out.setdefault(p.ticker, []).append((p.steps, p.prediction))
    return out


def rows_of(engine: Engine) -> dict[str, bytes]:
    """Each ticker's h and c as the engine holds them, byte for byte."""
    data = engine.capture()
    return {t: data.rows[i].tobytes() for i, t in enumerate(data.tickers)}


def state_of(engine: Engine, client: redis.Redis) -> tuple:
    """Everything a batch could change: rows, last ticks, steps, latest predictions."""
    data = engine.capture()
    return (rows_of(engine), data.last_price.tobytes(), data.last_ts.tobytes(),
            data.steps.tobytes(), client.hgetall(PREFIX + "predictions"))


def test_online_equals_batch_size_one_keras(start_engine: StartEngine,
                                            redis_client: redis.Redis, artifact_dir: Path,
                                            artifact: Artifact) -> None:
    ticks = interleaved(24, 3000, seed=5)
    xadd_ticks(redis_client, ticks.take(np.arange(1500)))  # before the engine starts ...
    engine = start_engine(batch_count=97, initial_rows=8)
    ids = xadd_ticks(redis_client, ticks.take(np.arange(1500, 3000)))  # ... and while it runs
    wait_caught_up(engine, ids[-1])

    assert_matches_keras(engine.snapshot, ticks, artifact_dir, artifact)
    assert engine.capacity == 32 and len(engine.tickers()) == 24
    assert sorted(engine.tickers().values()) == list(range(24))
    # every prediction along the way, in order, went to the predictions stream
    reference = keras_reference(artifact_dir, ticks)
    published = published_by_ticker(redis_client)
    for ticker, outputs in reference.items():
        steps, values = zip(*published[ticker], strict=True)
        assert list(steps) == list(range(1, len(outputs) + 1))
        np.testing.assert_allclose(normalised(artifact, np.array(values)), outputs, atol=1e-5,
                                   rtol=0)
    # Redis holds exactly what is served
    version = artifact.meta.model_version
    persisted = {k.decode(): decode_prediction(k.decode(), v, version)
                 for k, v in redis_client.hgetall(PREFIX + "predictions").items()}
    assert persisted == dict(engine.snapshot.predictions)
    assert redis_client.get(PREFIX + "output_cursor") == ids[-1]
    wait_for(lambda: engine.ready, "ready")
    status = engine.status()
    assert status["applied"] == 3000 and status["dead_lettered"] == {}
    assert status["connected"] and status["batches"] >= 3000 // 97


def test_stop_and_restart_ends_like_an_uninterrupted_run(start_engine: StartEngine,
                                                         redis_client: redis.Redis,
                                                         artifact_dir: Path,
                                                         artifact: Artifact) -> None:
    ticks = interleaved(20, 2400, seed=11)
    ids = xadd_ticks(redis_client, ticks)
    uninterrupted = start_engine(name="whole", group="whole", predictions_stream="p-whole",
                                 batch_count=20)
    first = start_engine(batch_count=20)
    wait_for(lambda: first.counters().applied >= 400, "a few batches")
    first.stop()
    stopped_at = first.snapshot.stream_id
    assert stopped_at is not None and stopped_at != ids[-1].decode(), "stopped mid-stream"
    assert redis_client.get(PREFIX + "output_cursor").decode() == stopped_at  # committed
    pointer = redis_client.hgetall(PREFIX + "snapshot")
    assert pointer[b"cursor"].decode() == stopped_at  # a clean stop snapshots everything

    second = start_engine(batch_count=33)
    wait_caught_up(second, ids[-1])
    wait_caught_up(uninterrupted, ids[-1])
    assert_matches_keras(second.snapshot, ticks, artifact_dir, artifact)
    whole, resumed = uninterrupted.snapshot.predictions, second.snapshot.predictions
    assert {t: p.steps for t, p in resumed.items()} == {t: p.steps for t, p in whole.items()}
    for ticker, p in resumed.items():
        assert p.prediction == pytest.approx(whole[ticker].prediction, abs=1e-9)
    # nothing lost, nothing doubled, nothing replayed after a clean stop
    assert len(stream_predictions(redis_client.xrange("predictions"))) == len(ticks)
    assert first.counters().applied + second.counters().applied == len(ticks)
    assert second.counters().replayed == 0
    # the state itself: every row's h and c as the uninterrupted run's (other batch cuts
    # move the last bits of float32 sums: within 1e-6)
    a, b = second.capture(), uninterrupted.capture()
    assert a.tickers == b.tickers and a.cursor == b.cursor == ids[-1].decode()
    np.testing.assert_allclose(a.rows, b.rows, rtol=1e-6, atol=1e-7)
    assert (a.steps == b.steps).all() and (a.last_price == b.last_price).all()


def test_a_failed_commit_is_redone_from_the_snapshot_and_the_log(
    start_engine: StartEngine, redis_client: redis.Redis, artifact_dir: Path,
    artifact: Artifact, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In memory the batch is already stepped when its commit fails, or succeeds with its
    reply lost: either way the engine must reload, replay and end exactly once."""
    real_send, real_read = Link.send, Link.read
    sent = read = 0

    def flaky_send(self: Link, data: bytes, replies: int) -> None:
        nonlocal sent
        commit = b"EVALSHA" in data[:40]
        sent += commit
        if commit and sent == 3:
            raise redis.ConnectionError("injected: connection lost before the commit")
        real_send(self, data, replies)

    def flaky_read(self: Link) -> object:
        nonlocal read
        result = real_read(self)
        read += result == 1  # a commit's reply
        if read == 6 and result == 1:
            raise redis.ConnectionError("injected: commit reply lost")
        return result

    restores: list[tuple[str | None, str | None]] = []  # served before and after each
    real_restored = Published.restored

    def restored(self: Published, *args: object) -> None:
        before = self.snapshot.stream_id
        real_restored(self, *args)
        restores.append((before, self.snapshot.stream_id))

    monkeypatch.setattr(Link, "send", flaky_send)
    monkeypatch.setattr(Link, "read", flaky_read)
    monkeypatch.setattr(Published, "restored", restored)
    ticks = interleaved(20, 1200, seed=3)
    ids = xadd_ticks(redis_client, ticks)
    engine = start_engine(batch_count=50)
    wait_caught_up(engine, ids[-1])

    assert_matches_keras(engine.snapshot, ticks, artifact_dir, artifact)
    assert_each_tick_published_once(redis_client, len(ticks))
    status = engine.status()
    assert status["errors"] == 2 and "commit reply lost" in status["last_error"]
    assert status["replayed"] > 0  # the lost reply's batch was recomputed, not rewritten
    # served ahead of the commits that failed, still in the stream: never taken back
    assert len(restores) == 3 and all(after == before for before, after in restores[1:])


def assert_each_tick_published_once(client: redis.Redis, n: int) -> None:
    published = published_by_ticker(client)
    assert sum(map(len, published.values())) == n, "a tick was published twice or never"
    for ticker, steps in published.items():
        assert [s for s, _ in steps] == list(range(1, len(steps) + 1)), ticker


BAD_ENTRIES: list[tuple[dict, str]] = [
    ({"price": "10"}, "missing_field"),
    ({"ticker": "AAA"}, "missing_field"),
    ({"ticker": "AAA", "price": "ten"}, "bad_price"),
    ({"ticker": "AAA", "price": "nan"}, "bad_price"),
    ({"ticker": "AAA", "price": "inf"}, "bad_price"),
    ({"ticker": "AAA", "price": "-inf"}, "bad_price"),
    ({"ticker": "AAA", "price": "0"}, "bad_price"),
    ({"ticker": "AAA", "price": "-3.5"}, "bad_price"),
    ({"ticker": "AAA", "price": "9" * 2048}, "bad_price"),
    ({"ticker": "AAA", "price": "10", "volume": "NaN"}, "bad_volume"),
    ({"ticker": "AAA", "price": "10", "volume": "inf"}, "bad_volume"),
    ({"ticker": "AAA", "price": "10", "volume": "-1"}, "bad_volume"),
    ({"ticker": "AAA", "price": "10", "ts": "yesterday"}, "bad_ts"),
    ({"ticker": "AAA", "price": "10", "ts": "1e300"}, "bad_ts"),
    ({"ticker": "A" * 2048, "price": "10"}, "bad_ticker"),
    ({"ticker": "NOT A TICKER", "price": "10"}, "bad_ticker"),
    ({"ticker": "NEWBIE", "price": "nan"}, "bad_price"),  # must not even register NEWBIE
    ({"ticker": b"\xff\xfe\x00\x9c", "price": "10"}, "bad_encoding"),
    ({"ticker": "AAA", "price": "10", "ts": "1767225600999"}, "out_of_order"),
]


def test_bad_entries_are_dead_lettered_once_and_change_no_row(
    start_engine: StartEngine, redis_client: redis.Redis, artifact_dir: Path,
    artifact: Artifact,
) -> None:
    good = TickTable(np.array(["AAA", "BBB", "AAA", "BBB"]),
                     np.array([1767225601000, 1767225601500, 1767225602000, 1767225602500]),
                     np.array([10.0, 20.0, 10.5, 19.5]), np.array([100.0, 5.0, 0.0, 7.0]))
    xadd_ticks(redis_client, good)
    engine = start_engine(batch_count=7)
    wait_caught_up(engine, redis_client.xinfo_stream("ticks")["last-generated-id"])
    before = state_of(engine, redis_client)

    bad_ids = [redis_client.xadd("ticks", fields) for fields, _ in BAD_ENTRIES]
    wait_caught_up(engine, bad_ids[-1])
    assert state_of(engine, redis_client) == before
    assert set(engine.tickers()) == {"AAA", "BBB"}
    dead = redis_client.xrange("ticks:dead")
    assert len(dead) == len(BAD_ENTRIES)
    for (_, letter), bad_id, (fields, reason) in zip(dead, bad_ids, BAD_ENTRIES, strict=True):
        assert letter.pop(b"reason").decode() == reason
        assert letter.pop(b"source_id") == bad_id
        assert letter == {k if isinstance(k, bytes) else k.encode():
                          v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
    assert engine.counters().dead_lettered == Counter(r for _, r in BAD_ENTRIES)

    # the loop kept going: a good tick after the bad ones is applied as if they never were
    later = TickTable(np.array(["AAA"]), np.array([1767225603000]), np.array([11.0]),
                      np.array([1.0]))
    (last_id,) = xadd_ticks(redis_client, later)
    wait_caught_up(engine, last_id)
    everything = TickTable(*(np.concatenate([a, b]) for a, b in
                             zip((good.ticker, good.ts_ms, good.price, good.volume),
                                 (later.ticker, later.ts_ms, later.price, later.volume),
                                 strict=True)))
    assert_matches_keras(engine.snapshot, everything, artifact_dir, artifact)
    rows_after = rows_of(engine)
    engine.stop()

    # a replay of everything (no snapshot left, the output cursor at the end): every entry
    # recomputed to the same state, no output written a second time
    redis_client.delete(PREFIX + "snapshot", *redis_client.keys(PREFIX + "snapshot:*"))
    n_entries = redis_client.xlen("ticks")
    again = start_engine(batch_count=5)
    wait_for(lambda: again.ready, "replayed and live")
    assert again.counters().replayed == n_entries and again.counters().applied == 0
    assert rows_of(again) == rows_after  # the same batch cuts: bit for bit
    assert redis_client.xlen("ticks:dead") == len(BAD_ENTRIES)
    assert len(stream_predictions(redis_client.xrange("predictions"))) == len(everything)
    assert again.snapshot.predictions["AAA"].steps == 3


def test_an_entry_deleted_before_it_is_read_is_never_applied(
        start_engine: StartEngine, redis_client: redis.Redis) -> None:
    ids = [redis_client.xadd("ticks", {"ticker": "AAA", "price": str(p)}) for p in (1, 2, 3)]
    redis_client.xdel("ticks", ids[1])
    engine = start_engine()
    wait_caught_up(engine, ids[-1])
    assert redis_client.xlen("ticks:dead") == 0
    assert engine.snapshot.predictions["AAA"].steps == 2
    assert engine.snapshot.predictions["AAA"].last_price == 3.0


def test_rows_grow_with_existing_state_intact_up_to_max_tickers(
    start_engine: StartEngine, redis_client: redis.Redis, artifact_dir: Path,
    artifact: Artifact,
) -> None:
    ticks = SyntheticMarket(6, seed=2).ticks(800)
    phases = [(0, 300, {"SYN0000", "SYN0001"}), (300, 400, {"SYN0002"}),
              (400, 700, {"SYN0000", "SYN0003", "SYN0004"}), (700, 800, {"SYN0005"})]
    parts = [ticks.take(np.flatnonzero(np.isin(ticks.ticker, list(who))[lo:hi]) + lo)
             for lo, hi, who in phases]
    engine = start_engine(initial_rows=2, max_tickers=5, batch_count=16)

    wait_caught_up(engine, xadd_ticks(redis_client, parts[0])[-1])
    assert engine.capacity == 2 and set(engine.tickers()) == {"SYN0000", "SYN0001"}
    assert sorted(engine.tickers().values()) == [0, 1]
    rows_before = rows_of(engine)

    wait_caught_up(engine, xadd_ticks(redis_client, parts[1])[-1])
    assert engine.capacity == 4 and engine.tickers()["SYN0002"] == 2
    rows_grown = rows_of(engine)
    assert {t: rows_grown[t] for t in rows_before} == rows_before  # bit-exact

    wait_caught_up(engine, xadd_ticks(redis_client, parts[2])[-1])
    assert engine.capacity == 5 and len(engine.tickers()) == 5
    assert rows_of(engine)["SYN0001"] == rows_before["SYN0001"]  # no tick since phase 1

    wait_caught_up(engine, xadd_ticks(redis_client, parts[3])[-1])
    assert engine.capacity == 5 == engine.max_tickers and "SYN0005" not in engine.tickers()
    assert engine.counters().dead_lettered == {"capacity": len(parts[3])}
    assert {f[b"reason"] for _, f in redis_client.xrange("ticks:dead")} == {b"capacity"}
    applied = TickTable(*(np.concatenate(cols) for cols in zip(
        *[(p.ticker, p.ts_ms, p.price, p.volume) for p in parts[:3]], strict=True)))
    assert_matches_keras(engine.snapshot, applied, artifact_dir, artifact)


def single_keras(artifact_dir: Path) -> keras.Model:
    loaded = keras.saving.load_model(artifact_dir / "model.keras", safe_mode=True)
    model = build_model(1, UNITS, len(FEATURES))
    model.set_weights(loaded.get_weights())
    return model


def test_reset_ticker_zeroes_exactly_one_row(start_engine: StartEngine,
                                             redis_client: redis.Redis, artifact_dir: Path,
                                             artifact: Artifact) -> None:
    ticks = interleaved(3, 90, seed=8)
    engine = start_engine()
    wait_caught_up(engine, xadd_ticks(redis_client, ticks)[-1])
    before = rows_of(engine)

    assert engine.reset_ticker("syn0001") is True  # case-folded like the stream's tickers
    after = rows_of(engine)
    zero = after.pop("SYN0001")
    assert zero == bytes(len(zero)) and zero != before.pop("SYN0001") and after == before
    assert engine.reset_ticker("NOPE") is False and engine.reset_ticker("not valid!") is False
    # the reset travelled through the log, where a replay meets it at the same place
    (_, control), = redis_client.xrevrange("ticks", count=1)
    assert control == {b"control": b"reset", b"ticker": b"SYN0001"}

    # the next tick starts from zero state, its features still against the last tick
    last = engine.snapshot.predictions["SYN0001"]
    tick = TickTable(np.array(["SYN0001"]), np.array([last.as_of + 700]),
                     np.array([last.last_price * 1.001]), np.array([50.0]))
    wait_caught_up(engine, xadd_ticks(redis_client, tick)[-1])
    raw, _ = compute_features(np.zeros(1, np.intp), tick.price, tick.volume, tick.ts_ms,
                              LastTicks(np.array([last.last_price]), np.array([last.as_of])))
    x = artifact.meta.feature_scaler.transform(raw)[None]  # (1, 1, F)
    expected = np.asarray(single_keras(artifact_dir)(x))[0, -1, 0]
    p = engine.snapshot.predictions["SYN0001"]
    assert p.steps == last.steps + 1
    np.testing.assert_allclose(normalised(artifact, p.prediction), expected, atol=1e-5)


def test_idle_rows_are_recycled_only_when_enabled(start_engine: StartEngine,
                                                  redis_client: redis.Redis,
                                                  artifact_dir: Path,
                                                  artifact: Artifact) -> None:
    t0 = 1767225600000
    ticks = TickTable(np.array(["AAA", "AAA", "BBB", "BBB", "CCC", "AAA", "BBB"]),
                      t0 + np.array([1000, 1500, 2000, 2600, 4000, 4100, 4200]),
                      np.array([10.0, 10.1, 20.0, 20.2, 30.0, 9.9, 20.1]), np.zeros(7))
    engine = start_engine(max_tickers=2, recycle_idle_s=1.0, batch_count=1)
    wait_caught_up(engine, xadd_ticks(redis_client, ticks)[-1])
    # CCC took idle AAA's row 0, then AAA (back, fresh) took idle BBB's row 1; BBB at 4200
    # finds both rows active within the last second
    assert engine.tickers() == {"CCC": 0, "AAA": 1}
    assert engine.capture().tickers == ["CCC", "AAA"]
    assert set(redis_client.hkeys(PREFIX + "predictions")) == {b"CCC", b"AAA"}
    assert engine.counters().dead_lettered == {"capacity": 1}
    fresh = TickTable(np.array(["CCC", "AAA"]), t0 + np.array([4000, 4100]),
                      np.array([30.0, 9.9]), np.zeros(2))
    assert_matches_keras(engine.snapshot, fresh, artifact_dir, artifact)


def test_redis_outage_keeps_reads_and_ends_exact(start_engine: StartEngine, tmp_path: Path,
                                                 artifact_dir: Path,
                                                 artifact: Artifact) -> None:
    ticks = interleaved(20, 1600, seed=13)
    with EmbeddedRedis(tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url)
        engine = start_engine(url=server.url, batch_count=40)
        wait_caught_up(engine, xadd_ticks(client, ticks.take(np.arange(800)))[-1])
        wait_for(lambda: engine.ready, "ready")
        served = engine.snapshot

        server.kill()  # SIGKILL: AOF with fsync always keeps every committed batch
        wait_for(lambda: not engine.ready, "not ready while Redis is down")
        last_ok_at = engine.status()["last_ok_at"]
        time.sleep(0.3)
        assert engine.snapshot is served and len(engine.snapshot.predictions) == 20
        status = engine.status()
        assert status["connected"] is False and status["last_error"]
        assert status["last_ok_at"] == last_ok_at < time.time() - 0.3  # how stale reads are
        with pytest.raises(redis.ConnectionError):  # not in the stream: never applied
            engine.reset_ticker("SYN0001", timeout=0.3)

        server.start()
        client = redis.Redis.from_url(server.url)
        wait_for(lambda: engine.ready, "restored from the restarted Redis")
        # every output served was committed: the restore keeps them as served (the same
        # map, its model_version and all), not Redis's copy of them
        assert engine.snapshot.predictions is served.predictions
        ids = xadd_ticks(client, ticks.take(np.arange(800, 1600)))
        wait_caught_up(engine, ids[-1])
        wait_for(lambda: engine.ready, "ready again")
        assert_matches_keras(engine.snapshot, ticks, artifact_dir, artifact)
        assert_each_tick_published_once(client, len(ticks))
        engine.stop()


def test_a_flushed_redis_is_served_as_it_is_now_not_as_it_was(
        start_engine: StartEngine, redis_client: redis.Redis, artifact_dir: Path,
        artifact: Artifact) -> None:
    """FLUSHALL under a running engine: the history it served is gone from Redis, so it
    must stop serving it (the old tickers' predictions), and `?after=` must wait again
    from the start (a new stream may begin with lower IDs)."""
    engine = start_engine(lease_ttl_s=1.0)
    waits = engine.served_of("SYN0000")
    wait_caught_up(engine, xadd_ticks(redis_client, interleaved(5, 200, seed=21))[-1])
    assert len(engine.snapshot.predictions) == 5
    redis_client.flushall()
    wait_for(lambda: not engine.snapshot.predictions, "the old predictions gone", 10)
    assert engine.snapshot.stream_id is None
    assert asyncio.run(waits.until((1, 0), timeout=0)) is False  # nothing of it served yet
    new = interleaved(3, 60, seed=22)
    pipe = redis_client.pipeline(transaction=False)
    for i, t in enumerate(new.ticks(), start=1):  # IDs far below the old ones
        pipe.xadd("ticks", {"ticker": t.ticker, "price": repr(t.price),
                            "volume": repr(t.volume), "ts": t.ts_ms}, id=f"{i}-0")
    ids = pipe.execute()
    wait_caught_up(engine, ids[-1])
    assert asyncio.run(waits.until((len(ids), 0), timeout=0)) is True
    assert_matches_keras(engine.snapshot, new, artifact_dir, artifact)
