"""gunicorn settings module (`gunicorn -c python:api.gunicorn_hooks`): multiprocess metrics upkeep."""

from __future__ import annotations

import os


def child_exit(server, worker) -> None:
    """Drop a dead API process's live gauges (open streams) from the summed metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
