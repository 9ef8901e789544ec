"""Which Redis the service talks to: one server, or a Redis Cluster, behind one URL.

Every key of one shard carries that shard's hash tag, so one shard lives on one cluster
node: a shard's engine talks to that node with the plain client the unsharded engine
uses (its pipelining, its Lua calls, unchanged). Only what spans shards (the producers,
the HTTP reads of other shards, the shard count and the engines' beats) goes through
redis-py's cluster client, which routes each command to the node of its key.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

AnyRedis = redis.Redis | redis.RedisCluster


def is_cluster(url: str) -> bool:
    """Whether `url` is a node of a Redis Cluster (`cluster_enabled:1`)."""
    with redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0) as c:
        return bool(c.info("cluster").get("cluster_enabled"))


def client(url: str, cluster: bool, **options: Any) -> AnyRedis:
    """A client that never retries on its own (a resent XADD would append twice)."""
    if cluster:
        return redis.RedisCluster.from_url(url, retry=Retry(NoBackoff(), 0), **options)
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **options)


def async_client(url: str, cluster: bool, **options: Any) -> aioredis.Redis | AsyncRedisCluster:
    if cluster:
        return AsyncRedisCluster.from_url(url, retry=AsyncRetry(NoBackoff(), 0), **options)
    return aioredis.Redis.from_url(url, retry=AsyncRetry(NoBackoff(), 0), **options)


def node_url(url: str, cluster: redis.RedisCluster, key: str) -> str:
    """`url` pointed at the primary that serves `key`'s hash slot (credentials kept)."""
    node = cluster.get_node_from_key(key)
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    host = f"[{node.host}]" if ":" in node.host else node.host
    netloc = (f"{auth}@" if auth else "") + f"{host}:{node.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
