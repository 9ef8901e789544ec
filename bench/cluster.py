"""A real 3-master Redis Cluster for benchmarks and tests: redis-server processes with
`--cluster-enabled yes`, joined by `redis-cli --cluster create`, on free ports."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from service.embedded_redis import EmbeddedRedis, find_redis_server

BUS_OFFSET = 10_000  # a cluster node also listens on its port + 10000 (the cluster bus)


def find_redis_cli() -> str:
    """redis-cli on PATH, else the one beside the redis-server we use."""
    return shutil.which("redis-cli") or str(Path(find_redis_server()).with_name("redis-cli"))


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(n: int) -> list[int]:
    """n ports p, each with p and p + 10000 free and <= 65535."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + BUS_OFFSET <= 65535 and port not in ports and _free(port + BUS_OFFSET):
            ports.append(port)
    return ports


class RedisClusterProcesses:
    """Three masters, no replicas: every slot served, each node a real redis-server."""

    def __init__(self, data_dir: Path, masters: int = 3) -> None:
        self.nodes = [
            EmbeddedRedis(data_dir / f"node-{port}", port, appendfsync="everysec",
                          extra_args=["--cluster-enabled", "yes",
                                      "--cluster-config-file", "nodes.conf",
                                      "--cluster-node-timeout", "5000"])
            for port in cluster_ports(masters)]

    @property
    def url(self) -> str:
        """Any node: a cluster client discovers the others from it."""
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run([find_redis_cli(), "--cluster", "create",
                        *(f"127.0.0.1:{n.port}" for n in self.nodes),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while not self._ok():
            if time.monotonic() > deadline:
                raise TimeoutError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def _ok(self) -> bool:
        for node in self.nodes:
            with redis.Redis(port=node.port) as c:
                if c.cluster("info").get("cluster_state") != "ok":
                    return False
        return True

    def flush(self) -> None:
        for node in self.nodes:
            with redis.Redis(port=node.port) as c:
                c.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
