"""A Redis master that refuses writes for want of replicas (min-replicas-to-write: cut off from
them during a failover) is retried like a lost connection, on a real redis-server."""

from __future__ import annotations

import threading

import pytest
import redis

from cli.embedded_redis import EmbeddedRedis
from contracts.redis_connection import NoReplicasError, redis_client
from contracts.settings import Settings


@pytest.fixture
def lonely_master(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis", persist=False)
    url = server.start()
    redis.Redis.from_url(url).config_set("min-replicas-to-write", 1)
    yield url
    server.stop()


def test_a_refused_write_is_retried_then_raised_as_a_connection_error(lonely_master):
    client = redis_client(Settings(redis_url=lonely_master), retry_for_s=0.5)
    assert client.get("anything") is None  # reads are served
    with pytest.raises(redis.ConnectionError) as refused:
        client.set("k", "v")
    assert isinstance(refused.value, NoReplicasError)
    refusals = redis.Redis.from_url(lonely_master).info("commandstats")["cmdstat_set"]["rejected_calls"]
    assert refusals >= 2  # retried before giving up


def test_a_write_refused_for_a_while_succeeds_once_the_master_takes_writes_again(lonely_master):
    client = redis_client(Settings(redis_url=lonely_master), retry_for_s=10)
    admin = redis.Redis.from_url(lonely_master)
    lifted = threading.Timer(0.5, admin.config_set, ("min-replicas-to-write", 0))  # a replica is back
    lifted.start()
    try:
        assert client.set("k", "v")  # refused at first, retried until taken
    finally:
        lifted.join()
    assert admin.info("commandstats")["cmdstat_set"]["rejected_calls"] >= 1 and client.get("k") == b"v"
