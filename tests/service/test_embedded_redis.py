import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from service.embedded_redis import EmbeddedRedis, process_alive


def test_session_server_answers_ping_and_is_not_6379(
    redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    assert redis_server.port != 6379
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_client.ping() is True
    assert redis_client.info("server")["process_id"] == redis_server.pid


@pytest.mark.parametrize("run", [1, 2])
def test_redis_url_fixture_starts_empty(redis_client: redis.Redis, run: int) -> None:
    """FLUSHALL after each test: the second run must not see what the first one wrote."""
    assert redis_client.dbsize() == 0
    redis_client.set("left-behind", b"1")


def test_acknowledged_writes_survive_sigkill_and_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    with server:
        port, first_pid = server.port, server.pid
        with redis.Redis.from_url(server.url) as client:
            client.set("k", b"v")
            client.xadd("ticks", {"ticker": "AAPL", "price": "1.5"})
        server.kill()
        assert server.pid is None
        server.restart()
        assert server.port == port
        assert server.pid not in (None, first_pid)
        with redis.Redis.from_url(server.url) as client:
            assert client.get("k") == b"v"
            assert client.xlen("ticks") == 1


def test_without_aof_sigkill_loses_writes(tmp_path: Path) -> None:
    """Control for the test above: it only passes because of the AOF, not by accident."""
    with EmbeddedRedis(tmp_path, appendonly=False) as server:
        with redis.Redis.from_url(server.url) as client:
            client.set("k", b"v")
        server.kill()
        server.restart()
        with redis.Redis.from_url(server.url) as client:
            assert client.get("k") is None


def test_stop_is_idempotent_and_ends_the_process(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    server.start()
    pid = server.pid
    assert pid is not None
    server.stop()
    server.stop()
    assert server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_start_on_a_taken_port_fails_with_the_log_tail(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    """Another server answering PING on the port must not pass for ours."""
    server = EmbeddedRedis(tmp_path, port=redis_server.port)
    with pytest.raises(RuntimeError, match=r"exited with code .*last lines of .*redis\.log"):
        server.start()
    assert server.pid is None


def test_server_dies_with_the_process_that_started_it(tmp_path: Path):
    """A SIGKILLed service must not leave its embedded Redis running on the AOF."""
    script = (
        "import sys, time; from pathlib import Path\n"
        "from service.embedded_redis import EmbeddedRedis, process_alive\n"
        "r = EmbeddedRedis(Path(sys.argv[1])); r.start(); print(r.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    server_pid = int(parent.stdout.readline())
    assert process_alive(server_pid)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while process_alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(server_pid)


def test_a_stale_server_on_the_same_data_dir_is_stopped_first(tmp_path: Path):
    first = EmbeddedRedis(tmp_path)
    first.start()
    stale_pid = first.pid
    first._proc = None  # forget it, as a crashed parent would
    second = EmbeddedRedis(tmp_path)
    second.start()
    try:
        assert not process_alive(stale_pid)
        assert second.pid is not None and second.pid != stale_pid
    finally:
        second.stop()

