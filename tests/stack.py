"""Pieces of the real stack the tests start: private Redis, worker processes, the API server, fleets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis
import requests
from werkzeug.serving import make_server

from api.app import create_app
from cli.embedded_redis import EmbeddedRedis, free_port
from contracts import keys
from contracts.redis_connection import redis_client
from contracts.settings import Settings
from tests.helpers import ASYNC, TINY, user

ROOT = Path(__file__).resolve().parent.parent


def run_ladle(*args: str, env: dict[str, str], timeout_s: float = 300) -> subprocess.CompletedProcess:
    """The `ladle` command line run from this checkout (hub access on: the tests' hub is local)."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "0", **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that hands `settings` to a worker subprocess."""
    return {**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT)}


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
        client = redis_client(self.settings)
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


@dataclass
class Fleet:
    """A private Redis, workers and an API server of their own (for tests that kill or fill workers)."""

    settings: Settings
    api_url: str
    workers: list[WorkerProcess]

    def submit(self, **body) -> str:
        request = {"model": TINY, "messages": user("hi"), "max_tokens": 6000, **body}
        response = requests.post(f"{self.api_url}/v1/chat/completions", json=request, headers=ASYNC, timeout=30)
        assert response.status_code == 202
        return response.json()["id"]

    def worker_named(self, name: str) -> WorkerProcess:
        return next(w for w in self.workers if w.name == name)

    def deliveries(self, job_id: str) -> int:
        return int(redis.Redis.from_url(self.settings.redis_url).hget(keys.job_key(job_id), "deliveries"))


def start_fleet(tmp_path, model_dir, workers: int, **overrides) -> Fleet:
    """Start a fleet of `workers` CPU workers on a private Redis; stop it with `stop_fleet`."""
    server = EmbeddedRedis(tmp_path / "redis", persist=False)
    defaults = {
        "heartbeat_s": 0.3,
        "visibility_timeout_s": 2,
        "worker_concurrency": 1,
        "intra_op_threads": 1,  # two workers share the two cores
        "sync_timeout_s": 60,
    }
    settings = Settings(redis_url=server.start(), model_dir=model_dir, **{**defaults, **overrides})
    fleet = Fleet(settings, "", [WorkerProcess(settings, tmp_path / f"worker{i}.log") for i in range(workers)])
    fleet.api = ApiServer(settings)
    fleet.api_url = fleet.api.url
    fleet.redis = server
    return fleet


def stop_fleet(fleet: Fleet) -> None:
    fleet.api.stop()
    for worker in fleet.workers:
        worker.stop()
    fleet.redis.stop()


def api_env(settings: Settings) -> dict[str, str]:
    """Environment that hands `settings` to an API process (the same variables a worker reads)."""
    return settings_env(settings)


class GunicornApi:
    """The API as deployed: gunicorn with api/gunicorn_config.py (gevent) in a subprocess, free port."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.drain_s = settings.drain_s
        self.log = open(log_path, "ab")
        command = [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_config"]
        command += ["--bind", f"127.0.0.1:{self.port}", "api.app:create_app()"]
        env = api_env(settings)
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_until_up()

    def _wait_until_up(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log.name}")
            try:
                if requests.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass  # the socket is bound before the worker process has imported the app
            time.sleep(0.1)
        raise RuntimeError("gunicorn did not answer /health in time")

    def worker_pid(self) -> int:
        """The pid of gunicorn's (single) worker process, the one that serves requests."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return int(children[0])

    def terminate(self) -> None:
        """SIGTERM to the master: stop accepting, drain open streams, exit."""
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=self.drain_s + 15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
