"""`ladle serve`: Redis (embedded unless REDIS_URL is set), CPU, light-lane and downloads workers, the API."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

from cli.embedded_redis import EmbeddedRedis
from contracts.settings import Settings

log = logging.getLogger(__name__)


def _settings_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "LADLE_REDIS_URL": settings.redis_url, "LADLE_MODEL_DIR": str(settings.model_dir)}


def _metrics_dir(settings: Settings) -> str:
    """An empty folder for the API processes' metrics (prometheus-client multiprocess mode); the
    files of an earlier run would count as this run's."""
    folder = settings.data_dir / "api-metrics"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return str(folder)


def serve(settings: Settings, api_threads: int = 64) -> int:
    """Run everything on this machine until Ctrl-C; children are stopped in reverse order."""
    embedded = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_dir / "redis")
        settings = replace(settings, redis_url=embedded.start())
    env = _settings_env(settings)
    if settings.cpu_workers > 1 and settings.intra_op_threads == 0:
        # Several CPU workers on one host: each gets its share of the cores, not all of them.
        env["LADLE_INTRA_OP_THREADS"] = str(max(1, (os.cpu_count() or 1) // settings.cpu_workers))
    api_env = {**env, "PROMETHEUS_MULTIPROC_DIR": env.get("PROMETHEUS_MULTIPROC_DIR") or _metrics_dir(settings)}
    compute = [sys.executable, "-m", "cli.main", "worker", "--device", "cpu"]
    children = [
        *(subprocess.Popen(compute, env=env) for _ in range(settings.cpu_workers)),
        subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "--device", "cpu", "--lane", "light"], env=env),
        subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "--lane", "downloads"], env=env),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--worker-class",
                "gthread",
                "--threads",
                str(api_threads),
                "--bind",
                f"{settings.host}:{settings.port}",
                "--timeout",
                "0",
                "--config",
                "python:api.gunicorn_hooks",
                "api.app:create_app()",
            ],
            env=api_env,
        ),
    ]
    log.info("ladle is serving", extra={"url": f"http://{settings.host}:{settings.port}", "redis": settings.redis_url})
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        if embedded:
            embedded.stop()
    return 0 if stopping else 1
