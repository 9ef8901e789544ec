"""`tickstream export`: what the stream taught, as an artifact `serve` and plain Keras load."""

import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import redis

from models.artifact import load_artifact
from service.config import Settings
from service.ingest import Engine
from service.layout import Layout
from service.snapshots import SnapshotStore

TICKSTREAM = str(Path(sys.executable).with_name("tickstream"))


def test_export_writes_the_learned_weights_as_a_plain_artifact(
        redis_url: str, artifact, small_artifact_dir: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    pipe = client.pipeline(transaction=False)
    rng = np.random.default_rng(2)
    for i in range(400):
        pipe.xadd("ticks", {"ticker": f"E{i % 4}", "price": repr(10 + rng.random()),
                            "ts": str(1000 * (i + 1))})
    pipe.execute()
    settings = Settings(learn=True, learn_window=4, learn_batch=2, block_ms=10)
    engine = Engine(settings, artifact, redis_url)
    engine.start()
    deadline = time.monotonic() + 60
    while not (engine.ready and engine.counters().applied == 400):
        assert time.monotonic() < deadline, engine.status()
        time.sleep(0.05)
    updates = engine.model_info()["updates"]
    engine.stop()  # a last snapshot, with the learned weights
    assert updates > 10

    out = tmp_path / "learned"
    done = subprocess.run([TICKSTREAM, "export", "--out", str(out), "--redis-url", redis_url,
                           "--model-dir", str(small_artifact_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"+ {updates} updates" in done.stdout

    exported = load_artifact(out)  # as `serve --model-dir` loads it: hash-checked, safe mode
    online = exported.meta.training["online"]
    assert online["base_version"] == artifact.meta.model_version
    assert online["updates"] == updates
    assert exported.meta.model_version != artifact.meta.model_version
    data = SnapshotStore(client, Layout.from_settings(settings), b"", None).load(
        artifact.stepper(1).row_state_size, artifact.meta.model_version)
    plain = keras.saving.load_model(out / "model.keras", compile=False, safe_mode=True)
    for i, w in enumerate(plain.get_weights()):
        assert w.tobytes() == data.arrays[f"learn.weight.{i}"].tobytes()
    assert not np.array_equal(plain.get_weights()[0], artifact.model.get_weights()[0])


def test_export_without_learned_state_says_so(redis_url: str, small_artifact_dir: Path,
                                               tmp_path: Path) -> None:
    done = subprocess.run([TICKSTREAM, "export", "--out", str(tmp_path / "x"), "--redis-url",
                           redis_url, "--model-dir", str(small_artifact_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "no snapshot with learned weights" in done.stderr
    assert not (tmp_path / "x").exists()
