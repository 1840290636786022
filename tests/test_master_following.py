"""After a failover, Ladle's Redis clients and Celery's broker connections reach the new master.

A connection open to the old master when the Sentinels switch (here a forced failover: the old
master stays up, demoted to a replica) breaks on its next write (READONLY); its reconnect must ask
the Sentinels again. redis-py's own reconnect went back to the demoted server, every retry, until
the retries ran out. Real redis-server processes and Sentinels throughout.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import pytest
import redis

from contracts.redis_connection import redis_client
from contracts.sentinel_switches import switch_watch
from contracts.settings import Settings
from tests.sentinel_cluster import MASTER_NAME, SentinelCluster

# Long enough for one reconnect (a Sentinel question and a connect), far shorter than a failover
# retry budget: the write either reaches the new master at once or fails.
RETRY_S = 3.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster for the module: each test switches the master from whichever server has it."""
    cluster = SentinelCluster(tmp_path_factory.mktemp("sentinel"), sentinels=1, quorum=1)
    cluster.start()
    yield cluster
    cluster.stop()


def _settings(cluster: SentinelCluster) -> Settings:
    return Settings(redis_url=cluster.url, redis_sentinel_master=MASTER_NAME)


def test_clients_writing_through_a_failover_go_on_on_the_new_master(cluster):
    """Writers busy while the master changes: each write fails over within the retry budget."""
    client = redis_client(_settings(cluster), retry_for_s=RETRY_S)
    done, errors, written = threading.Event(), [], Counter()

    def write(name: str) -> None:
        while not done.is_set():
            try:
                pipe = client.pipeline(transaction=False)
                pipe.set(f"last-{name}", written[name] + 1).incr("writes")
                pipe.execute()
                written[name] += 1
            except redis.RedisError as error:
                errors.append(repr(error))
                return

    writers = [threading.Thread(target=write, args=(str(n),)) for n in range(4)]
    for writer in writers:
        writer.start()
    new_master = cluster.force_failover()
    after = dict(written)
    deadline = time.monotonic() + 30
    while not errors and min(written[n] - after[n] for n in after) < 20:  # each writer went on
        assert time.monotonic() < deadline, (written, after)
        time.sleep(0.05)
    done.set()
    for writer in writers:
        writer.join()
    assert not errors, errors
    latest = redis.Redis(host="127.0.0.1", port=new_master)
    assert [int(latest.get(f"last-{n}")) for n in sorted(written)] == [written[n] for n in sorted(written)]


def test_a_subscription_follows_the_new_master(cluster):
    client = redis_client(_settings(cluster), retry_for_s=RETRY_S)
    pubsub = client.pubsub()
    pubsub.subscribe("news")
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    new_master = cluster.force_failover()

    # The demoted server drops its subscribers; the subscription is made again, on the new master.
    seen: list[dict] = []
    deadline = time.monotonic() + 10
    while not any(m["type"] == "message" for m in seen):
        assert time.monotonic() < deadline, seen
        client.publish("news", "after the failover")
        message = pubsub.get_message(timeout=0.5)
        if message is not None:
            seen.append(message)
    assert seen[0]["type"] == "subscribe"
    assert seen[-1]["data"] == b"after the failover"
    assert pubsub.connection.port == new_master
    pubsub.close()


def test_a_connection_idle_through_the_masters_partition_is_left_after_the_switch(cluster):
    """The master stops answering (SIGSTOP: its kernel still takes the bytes, as a partition's
    retransmissions wait for the heal); a connection idle in the pool meanwhile is not used after
    the Sentinels switch: a write sent there would run on the old master when it comes back, in
    the moment before it is demoted, and be lost at its resync."""
    client = redis_client(_settings(cluster), retry_for_s=RETRY_S)
    client.set("before", 1)  # the pool now holds a connection to the master
    old_port = cluster.master_port()
    new_port = cluster.replica_port if old_port == cluster.primary_port else cluster.primary_port
    old_master = redis.Redis(host="127.0.0.1", port=old_port)
    writes_before = old_master.info("commandstats")["cmdstat_set"]["calls"]
    watch = switch_watch(tuple(sorted(("127.0.0.1", p) for p in cluster.sentinel_ports)), MASTER_NAME, {})
    seen = watch.switches
    primary = cluster.server_on(old_port)
    primary.send_signal(signal.SIGSTOP)
    try:
        cluster.wait_for_master(new_port, time.monotonic() + 60)
        deadline = time.monotonic() + 30
        while watch.switches == seen:  # the Sentinels' announcement reached this process
            assert time.monotonic() < deadline, "no +switch-master seen"
            time.sleep(0.05)
        client.set("after", 2)
        assert redis.Redis(host="127.0.0.1", port=new_port).get("after") == b"2"
    finally:
        primary.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 60
    while old_master.info("replication")["role"] != "slave":  # what it had queued, it has run
        assert time.monotonic() < deadline, "the old master was not demoted"
        time.sleep(0.05)
    assert old_master.info("commandstats")["cmdstat_set"]["calls"] == writes_before
