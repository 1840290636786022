"""Ladle's Redis connections (contracts/redis_connection.py): what bounds a connection a network
partition left hanging (the chaos harness, `make chaos`, shows what happens without it)."""

from __future__ import annotations

import socket

from contracts.celery_config import celery_config
from contracts.redis_connection import redis_client
from contracts.settings import Settings

BOUNDS = {socket.TCP_USER_TIMEOUT: 10_000, socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 5, socket.TCP_KEEPCNT: 3}


def test_ladles_clients_drop_a_connection_whose_server_stopped_answering():
    for url in ("redis://127.0.0.1:1/0", "sentinel://127.0.0.1:1;sentinel://127.0.0.1:2"):
        client = redis_client(Settings(redis_url=url))
        options = client.connection_pool.connection_kwargs
        assert options["socket_keepalive"] is True and options["socket_keepalive_options"] == BOUNDS


def test_celerys_broker_connections_are_bounded_alike():
    for url in ("redis://127.0.0.1:1/0", "sentinel://127.0.0.1:1"):
        options = celery_config(Settings(redis_url=url))["broker_transport_options"]
        assert options["socket_keepalive"] is True and options["socket_keepalive_options"] == BOUNDS
