"""kombu's Redis transport, sharing one Redis client per channel for its synchronous commands.

kombu builds a new `redis.Redis` for every delivery's bookkeeping and every ack (`conn_or_acquire`);
redis-py's client set-up then took ~15% of a worker's Python time per task. A client is safe to
share between threads (each command takes a connection from the channel's pool), so one is built
per pool and kept. Everything else, the wire format included, is kombu's.
"""

from __future__ import annotations

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    """A Redis channel whose synchronous client is built once per connection pool."""

    _shared_client: redis.Redis | None = None

    def _create_client(self, asynchronous: bool = False) -> redis.Redis:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:  # a reconnect makes a new pool
            client = self._shared_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with `Channel` above."""

    Channel = Channel


def broker_transport(broker_url: str | None) -> str | None:
    """The transport for `broker_url`: this one for plain redis:// URLs, else kombu's choice."""
    return f"{__name__}:Transport" if broker_url and broker_url.startswith("redis://") else None
