"""The live engines every engine counts its fair share by."""

import subprocess
import time

import pytest
import redis

from service.membership import Membership, process_of

pytestmark = pytest.mark.integration


def test_engines_beat_into_one_set_and_leave_it(redis_client: redis.Redis) -> None:
    a, b = (Membership(redis_client, "m", ttl_s=5) for _ in range(2))
    assert a.beat() == [a.me]
    assert b.beat() == sorted([a.me, b.me]) == a.live()
    a.leave()
    assert b.beat() == [b.me]
    assert process_of(b.me) == f"{b.host}:{b.pid}"


def test_a_silent_engine_drops_out_after_its_ttl(redis_client: redis.Redis) -> None:
    quiet, busy = Membership(redis_client, "m", ttl_s=0.2), Membership(redis_client, "m", 5)
    quiet.beat()
    assert quiet.me in busy.beat()
    time.sleep(0.3)
    assert busy.beat() == [busy.me]


def test_a_dead_process_of_this_host_drops_out_at_once(redis_client: redis.Redis) -> None:
    gone = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, check=True)
    dead = Membership(redis_client, "m", ttl_s=60)
    dead.pid = int(gone.stdout)
    dead.me = f"{dead.host}:{dead.pid}:x"
    dead.beat()
    alive = Membership(redis_client, "m", ttl_s=60)
    assert alive.beat() == [alive.me]
    assert redis_client.zcard("tickstream:m:engines") == 1
