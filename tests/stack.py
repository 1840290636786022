"""Pieces of the real stack the tests start: private Redis, worker processes, the API server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis
from werkzeug.serving import make_server

from api.app import create_app
from contracts import keys
from contracts.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that hands `settings` to a worker subprocess."""
    return {
        **os.environ,
        "LADLE_REDIS_URL": settings.redis_url,
        "LADLE_MODEL_DIR": str(settings.model_dir),
        "LADLE_HEARTBEAT_S": str(settings.heartbeat_s),
        "LADLE_INTRA_OP_THREADS": str(settings.intra_op_threads),
        "LADLE_VISIBILITY_TIMEOUT": str(settings.visibility_timeout_s),
        "LADLE_MAX_DELIVERIES": str(settings.max_deliveries),
        "LADLE_WORKER_CONCURRENCY": str(settings.worker_concurrency),
        "LADLE_DATA_DIR": str(settings.data_dir),
        "LADLE_MODEL_MEMORY_MB": str(settings.model_memory_mb),
        "LADLE_PREFILL_CHUNK": str(settings.prefill_chunk),
        "LADLE_PREFIX_CACHE_TOKENS": str(settings.prefix_cache_tokens),
        "LADLE_MAX_BATCH": str(settings.max_batch_rows),
        "LADLE_DRAIN_S": str(settings.drain_s),
        "PYTHONPATH": str(ROOT),
    }


class WorkerProcess:
    """`ladle worker --device cpu` as a real subprocess."""

    def __init__(
        self, settings: Settings, log_path: Path, lane: str = "compute", env: dict[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--device", "cpu", "--lane", lane, "--loglevel", "INFO"],
            env={**settings_env(settings), **(env or {})},
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.name = self._wait_for_heartbeat()

    def _wait_for_heartbeat(self, timeout_s: float = 60) -> str:
        client = redis.Redis.from_url(self.settings.redis_url)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name in client.zrange(keys.WORKERS_INDEX, 0, -1):
                if f"-{self.process.pid}@" in name.decode() and client.exists(keys.worker_key(name.decode())):
                    return name.decode()
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}; see {self.log.name}")
            time.sleep(0.1)
        raise RuntimeError("worker did not send a heartbeat in time")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


class ApiServer:
    """The Flask app on a real HTTP server (threaded werkzeug) on a free loopback port."""

    def __init__(self, settings: Settings) -> None:
        self.server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
