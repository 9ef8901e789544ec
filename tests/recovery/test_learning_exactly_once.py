"""Learning on, exactly once: whatever kills the engine or Redis, the weights and optimizer
state the service ends with are bit-exactly those of `tickstream replay --learn` over the
same stream, uninterrupted; every row's state and every published prediction within 1e-6.
"""

import math
import subprocess

import numpy as np
import pytest
from harness import TICKSTREAM, feed_through_kills, market_ticks, valid_ticks_in_stream
from test_end_to_end import BAD_ENTRIES, assert_each_tick_published_once
from test_stream_is_the_log import REL, ROW_ATOL, final_snapshot, prediction_atol

from models.artifact import load_artifact
from service.prediction_stream import stream_predictions

pytestmark = pytest.mark.recovery

# small chunks and batches: many optimizer steps in a short stream, so kills land between
# updates, between snapshots, and mid-chunk
LEARN = {"learn": "true", "learn_window": "8", "learn_batch": "8", "learn_rate": "0.01",
         "tick_retention": "none"}


def offline_replay(url: str, artifact_dir, tmp_path) -> tuple[dict, list[list[str]]]:
    """`tickstream replay --from-redis --learn` with the service's learning settings, other
    batch cuts; its end state and its prediction rows."""
    out, state = tmp_path / "replay.csv", tmp_path / "replay.npz"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in LEARN.items() if k != "learn"]
    subprocess.run([TICKSTREAM, "replay", "--from-redis", "--redis-url", url,
                    "--model-dir", str(artifact_dir), "--learn", "--batch-count", "700",
                    "--initial-rows", "4", *flags, "--out", str(out), "--state-out", str(state)],
                   check=True, capture_output=True, timeout=300)
    with np.load(state, allow_pickle=False) as arrays:
        end = dict(arrays)
    rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
    return end, rows


def test_kills_with_learning_on_end_bit_exactly_as_the_offline_replay(
        service_factory, redis_proc, artifact_dir, tmp_path):
    service = service_factory(batch_count="50", **LEARN)
    midway = [*BAD_ENTRIES, {"control": "reset", "ticker": "SYN0003"}]
    client, _ = feed_through_kills(service, redis_proc, market_ticks(24, 9000, seed=31), 19,
                                   midway)
    valid = valid_ticks_in_stream(client)
    service.wait_applied(len(valid))
    model = service.http.get("/v1/model").json()
    quality = service.http.get("/v1/quality").json()
    service.stop()  # SIGTERM: a last snapshot, at the end of the stream
    assert service.starts - 1 >= 10
    assert_each_tick_published_once(client, len(valid))
    assert client.xlen("ticks:dead") == len(BAD_ENTRIES)

    killed = final_snapshot(redis_proc.url, artifact_dir)
    whole, replayed_rows = offline_replay(redis_proc.url, artifact_dir, tmp_path)
    updates = int(killed.arrays["learn.counts"][0])
    assert updates >= 50, "too few optimizer steps to mean anything"
    assert model["updates"] == updates and model["model_version"].endswith(f"+{updates}")
    # the learner, bit for bit: weights, Adam's moments and step count, the training
    # states, unfinished chunks, queue, counters and running loss
    learner = sorted(k for k in whole if k.startswith("learn."))
    assert learner == sorted(k for k in killed.arrays if k.startswith("learn."))
    for name in learner:
        a, b = killed.arrays[name], whole[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), f"{name} differs from the offline replay"
    weights = load_artifact(artifact_dir).model.get_weights()
    assert not np.array_equal(killed.arrays["learn.weight.0"], weights[0]), "nothing learned"

    # rows and scores within 1e-6 (the stepper's sums depend on the batch cuts' row mix)
    assert (killed.steps == whole["steps"]).all()
    assert (killed.last_price == whole["last_price"]).all()
    np.testing.assert_allclose(killed.rows, whole["rows"], rtol=REL, atol=ROW_ATOL)
    assert (killed.arrays["eval.count"] == whole["eval.count"]).all()
    for name in ("eval.ewm_model", "eval.sum_model"):
        np.testing.assert_allclose(killed.arrays[name], whole[name], rtol=REL,
                                   atol=REL * np.abs(whole[name]).max())
    np.testing.assert_allclose(killed.arrays["eval.pred"], whole["eval.pred"], rtol=REL,
                               atol=prediction_atol(artifact_dir))
    assert quality["overall"]["scored"] == int(whole["eval.count"].sum())

    # every published prediction: the same model version, the same value within 1e-6
    mine = {p.stream_id: p for p in stream_predictions(client.xrange("predictions"))}
    theirs = {row[1]: row for row in replayed_rows}
    assert mine.keys() == theirs.keys()
    ids = list(theirs)
    assert [mine[i].model_version for i in ids] == [theirs[i][6] for i in ids]
    expected = np.array([float(theirs[i][4]) for i in ids])
    np.testing.assert_allclose([mine[i].prediction for i in ids], expected, rtol=REL,
                               atol=prediction_atol(artifact_dir))
    realised = [theirs[i][5] for i in ids]
    assert sum(r != "" for r in realised) == len(ids) - len(set(valid.ticker))
    assert all(math.isfinite(float(r)) for r in realised if r)
