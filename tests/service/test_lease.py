"""The single-writer lease against a real redis-server."""

import subprocess
import sys

import pytest
import redis

from service.lease import Lease, LeaseLost

KEY = "tickstream:test:owner"


def test_one_holder_at_a_time_and_release_frees_it(redis_client: redis.Redis):
    a, b = Lease(redis_client, KEY, 5.0), Lease(redis_client, KEY, 5.0)
    assert a.acquire()
    assert not b.acquire()
    assert redis_client.pttl(KEY) > 4000
    a.release()
    assert b.acquire()
    with pytest.raises(LeaseLost):
        a.renew()


def test_a_fenced_commit_fails_once_the_lease_changed_hands(redis_client: redis.Redis):
    a = Lease(redis_client, KEY, 5.0)
    assert a.acquire()
    with redis_client.pipeline(transaction=True) as pipe:
        a.fence(pipe)
        pipe.set("written", "1")
        redis_client.set(KEY, b"someone-else")  # taken over between WATCH and EXEC
        with pytest.raises(LeaseLost):
            a.execute(pipe)
    assert redis_client.get("written") is None


def test_renewal_extends_the_ttl(redis_client: redis.Redis):
    a = Lease(redis_client, KEY, 1.0)
    assert a.acquire()
    redis_client.pexpire(KEY, 100)
    a.renew()
    assert redis_client.pttl(KEY) > 500


def test_the_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(
        redis_client: redis.Redis, redis_url: str):
    script = ("import redis, sys; from service.lease import Lease\n"
              "assert Lease(redis.Redis.from_url(sys.argv[1]), sys.argv[2], 60).acquire()\n")
    subprocess.run([sys.executable, "-c", script, redis_url, KEY], check=True)
    assert redis_client.pttl(KEY) > 50_000  # still held by the process that just exited
    assert Lease(redis_client, KEY, 5.0).acquire()


def test_a_live_holder_elsewhere_is_respected(redis_client: redis.Redis):
    redis_client.set(KEY, b"other-host:1:abc", px=5000)
    assert not Lease(redis_client, KEY, 5.0).acquire()
