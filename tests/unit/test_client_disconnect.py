"""Telling whether a waiting request's client closed its connection (api/queue/responses.py)."""

from __future__ import annotations

import socket

from api.queue.responses import client_closed, client_socket


def test_an_open_idle_connection_is_not_closed():
    server, client = socket.socketpair()
    with server, client:
        assert client_closed(server, 0.01) is False


def test_a_closed_connection_is_seen_closed():
    server, client = socket.socketpair()
    with server:
        client.close()
        assert client_closed(server, 1) is True


def test_bytes_after_the_request_stop_the_watch_without_a_verdict():
    """A pipelined request: the client is there, and its end can no longer be seen by peeking."""
    server, client = socket.socketpair()
    with server, client:
        client.sendall(b"GET / HTTP/1.1\r\n")
        assert client_closed(server, 1) is None
        assert server.recv(3) == b"GET"  # peeking consumed nothing


def test_the_client_socket_is_gunicorns_or_werkzeugs():
    server, client = socket.socketpair()
    with server, client:
        assert client_socket({"gunicorn.socket": server}) is server
        assert client_socket({"werkzeug.socket": server}) is server
        assert client_socket({"wsgi.input": object()}) is None
