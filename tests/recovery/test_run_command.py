"""The README's run command on its embedded defaults: embedded Redis, default model
(trained on first use), synthetic feed — and predictions that move."""

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from harness import TICKSTREAM, ServiceProcess

pytestmark = pytest.mark.recovery


def test_serve_on_embedded_defaults_shows_predictions_moving(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKSTREAM_")}
    service = ServiceProcess(tmp_path, {"TICKSTREAM_DATA_DIR": str(tmp_path / "data")},
                             base_env=env, args=["--synthetic-feed"])
    started = time.monotonic()
    try:
        service.start(timeout=240)  # the first start trains the default model
        first = service.wait_applied(1, timeout=60)
        time.sleep(2.0)
        later = service.wait_applied(sum(p["steps"] for p in first.values()) + 20, timeout=60)
        moved = [t for t in later if t not in first or later[t]["steps"] > first[t]["steps"]]
        assert moved, "no ticker's prediction moved"
        assert len(later) >= 10  # the synthetic feed's tickers showed up
        assert (tmp_path / "data" / "model" / "model.keras").is_file()
        assert (tmp_path / "data" / "redis").is_dir()
        print(f"\npredictions moving {time.monotonic() - started:.0f}s after the command")
        for _ in range(10):  # ready means nothing in flight: under the live feed it can
            status = subprocess.run([TICKSTREAM, "status", "--url",  # blink; ask again
                                     f"http://127.0.0.1:{service.port}"],
                                    capture_output=True, text=True, timeout=30)
            assert status.returncode == 0, status.stderr
            if ": ready" in status.stdout:
                break
            time.sleep(0.3)
        assert ": ready" in status.stdout, status.stdout
        assert "ticks/s" in status.stdout and "tickers       " in status.stdout
        # the demo learns: online updates within ~1,000 ticks (64 chunks of 16)
        deadline = time.monotonic() + 120
        while (model := service.http.get("/v1/model").json())["updates"] == 0:
            assert time.monotonic() < deadline, model
            time.sleep(1.0)
        assert model["learning"]["on"] and "+" in model["model_version"]
        assert "learning      on" in status.stdout and "skill" in status.stdout
    finally:
        service.stop()
    said = service.log_tail()
    noise = [line for line in said.splitlines()
             if re.search(r"cuInit|CUDA error|absl::InitializeLog|oneDNN", line)]
    assert not noise, f"TensorFlow's start-up noise reached the terminal: {noise}"
    redis_pid_file = tmp_path / "data" / "redis" / "redis.pid"
    assert not redis_pid_file.exists(), "serve left its embedded Redis running"
