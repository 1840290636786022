"""kombu's Redis transport, sharing one Redis client per channel and writing its delivery records
without transactions.

kombu builds a new `redis.Redis` for every delivery's bookkeeping and every ack (`conn_or_acquire`);
redis-py's client set-up then took ~15% of a worker's Python time per task. A client is safe to
share between threads (each command takes a connection from the channel's pool), so one is built
per pool and kept.

kombu records a delivery (ZADD on the unacked index, HSET of the message) and removes it on ack
(ZREM, HDEL) in MULTI/EXEC transactions: half of the eight commands each job costs there.
Sent as plain pipelines, each pair still goes in one round trip and runs in order; what a
transaction would add is only that no other client runs between the two, and the one reader of
both (the restore of deliveries older than the visibility timeout) does not care: it skips an
index entry whose message is gone, and a delivery seconds old is not yet due. Everything else,
the wire format and the restore's own WATCH transaction included, is kombu's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from kombu.transport import redis as kombu_redis

from contracts.redis_connection import MasterFollowingConnection


class QoS(kombu_redis.QoS):
    """kombu's QoS whose own pipelines (recording and acking a delivery) are not transactions."""

    @contextmanager
    def pipe_or_acquire(self, pipe=None, client=None) -> Iterator:
        if pipe:  # the caller's pipeline (the restore's transaction): as kombu does
            yield pipe
        else:
            with self.channel.conn_or_acquire(client) as client:
                yield client.pipeline(transaction=False)


class SharedClient:
    """A channel's synchronous client, built once per connection pool."""

    _shared_client: redis.Redis | None = None

    def _create_client(self, asynchronous: bool = False) -> redis.Redis:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:  # a reconnect makes a new pool
            client = self._shared_client = super()._create_client()
        return client


class Channel(SharedClient, kombu_redis.Channel):
    """A Redis channel with the QoS above and one synchronous client per connection pool."""

    QoS = QoS


class SentinelChannel(SharedClient, kombu_redis.SentinelChannel):
    """The same, behind Sentinels, on connections that ask them for the master at each reconnect."""

    QoS = QoS
    connection_class = MasterFollowingConnection


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with `Channel` above."""

    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport with `SentinelChannel` above."""

    Channel = SentinelChannel


def broker_transport(broker_url: str | None) -> str | None:
    """The transport for `broker_url`: one of these for redis:// and sentinel:// URLs."""
    if broker_url and broker_url.startswith("redis://"):
        return f"{__name__}:Transport"
    if broker_url and broker_url.startswith("sentinel://"):
        return f"{__name__}:SentinelTransport"
    return None
