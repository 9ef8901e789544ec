"""Real server processes for the HTTP-facing scenarios: `tickstream serve` and a bare app.

Both run as their own process under the same uvicorn defaults, so latency, requests/s
and memory are those of the service as users run it, not of an in-process stand-in.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from service.embedded_redis import free_port

TICKSTREAM = str(Path(sys.executable).with_name("tickstream"))
START_TIMEOUT_S = 180.0


class Resident(NamedTuple):
    """A process's resident memory, KiB. `file` is pages of mapped files (TensorFlow's
    shared libraries, ~380 MiB here): shared, and resident as far as the page cache and
    the kernel's fault-around had them, so it moves between runs of the same code;
    `anon` is the process's own (heap, arrays)."""

    rss: int
    peak: int
    anon: int
    file: int


class Server:
    """A child process serving HTTP on 127.0.0.1:`port`; its output goes to `log`."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.argv, self.log = argv, log
        self.env = {**os.environ, **env, "TICKSTREAM_PORT": str(self.port),
                    "TICKSTREAM_HOST": "127.0.0.1"}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv} exited {self.proc.returncode}: "
                                   f"{self.log.read_text()[-2000:]}")
            try:
                get_json(self.port, "/healthz")
                return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"{self.argv} did not answer within {START_TIMEOUT_S}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash would: no last commit, no last snapshot, the lease left."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def rss_kb(self) -> Resident:
        """The process's resident memory now (/proc status)."""
        assert self.proc is not None
        fields = dict(line.split(":", 1) for line in
                      Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return Resident(*(int(fields[k].split()[0])
                          for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")))


def tickstream_serve(redis_url: str, model_dir: Path, workdir: Path, name: str,
                     stream: str, extra_env: dict[str, str] | None = None) -> Server:
    """`tickstream serve` on `stream`; `extra_env`: more settings (`TICKSTREAM_*`).

    Learning is off (TICKSTREAM_LEARN=false) unless `extra_env` turns it on: the figures
    of BENCHMARKS.md before issue 9 are of the engine without it."""
    env = {"TICKSTREAM_REDIS_URL": redis_url, "TICKSTREAM_MODEL_DIR": str(model_dir),
           "TICKSTREAM_DATA_DIR": str(workdir / "data"), "TICKSTREAM_NAME": name,
           "TICKSTREAM_STREAM": stream, "TICKSTREAM_LEARN": "false", **(extra_env or {})}
    return Server([TICKSTREAM, "serve"], env, workdir / f"serve-{name}.log")


def bare_app(workdir: Path) -> Server:
    return Server([sys.executable, "-m", "bench.bare_app"], {}, workdir / "bare-app.log")


def get_json(port: int, path: str, conn: http.client.HTTPConnection | None = None) -> Any:
    """GET `path` and decode its JSON (a 404 body too); OSError if nothing answers."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        return json.loads(c.getresponse().read())
    finally:
        if conn is None:
            c.close()


def serves_through(server: Server, entry_id: str | None) -> bool:
    """The service serves `entry_id`'s predictions and has committed every output."""
    ready = get_json(server.port, "/readyz")
    return ready.get("stream_id") == entry_id and ready.get("ready") is True


def wait_for(condition: Any, what: str, timeout_s: float, every_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)
