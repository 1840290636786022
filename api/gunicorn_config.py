"""gunicorn's settings for the API: one gevent worker process holds thousands of open streams.

    gunicorn -c python:api.gunicorn_config --bind HOST:PORT 'api.app:create_app()'

An SSE stream waits on its job's events for as long as the job takes; under gevent a waiting
stream costs a greenlet (a few KiB), not an OS thread, so one process holds thousands of them
while other requests still answer. gunicorn's gevent worker monkey-patches the standard library
(sockets, select, threading, queue, time.sleep) in the worker before it loads the app, so
redis-py, kombu's producer, the job event hub and the embedding bundler all yield instead of
blocking. This module is read by the master before it forks: it must not import anything that
opens connections or keeps references to socket/threading objects (contracts.settings only).
Options given on the command line (or in GUNICORN_CMD_ARGS) override these.
"""

from __future__ import annotations

import math
import os
import resource

from contracts.settings import Settings

_settings = Settings.from_env()

bind = [f"{_settings.host}:{_settings.port}"]
worker_class = "gevent"
# Connections one worker holds at once: open streams and plain requests together.
worker_connections = 4096
# Redis, Celery and the job event hub are made in the worker, after gevent patched it.
preload_app = False
# On SIGTERM the worker stops accepting at once and lets open streams finish this long; then
# the rest are closed (their clients resume elsewhere with Last-Event-ID).
graceful_timeout = math.ceil(_settings.drain_s)  # gunicorn takes whole seconds
# Under gevent this bounds no request (a stream may stay open for as long as its job runs): the
# worker's own loop tells the master it is alive every second, and only a worker whose loop
# stalled this long is restarted.
timeout = 60
# gunicorn >= 25 opens a control socket at one path per user ($HOME/.gunicorn/gunicorn.ctl):
# several API processes on one host would take it from each other. Ladle does not use it.
control_socket_disable = True


def _raise_open_files_limit(wanted: int) -> None:
    """Lift the soft limit on open files (often 1024) so every connection gets a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


def on_starting(server) -> None:
    """gunicorn hook, in the master before it forks: room for every connection the workers may hold."""
    # Each connection holds a socket; Redis connections, the log and the listener need a few more.
    _raise_open_files_limit(server.cfg.worker_connections + 512)


def child_exit(server, worker) -> None:
    """Drop a dead API process's live gauges (open streams) from the summed metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
