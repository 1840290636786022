"""`ladle serve`: Redis (embedded unless REDIS_URL is set), CPU, light-lane and downloads workers, the API.

The launcher supervises its children: one that exits (killed by the OOM killer, crashed) is
started again after a delay that doubles with each quick failure (reset once it has stayed up
for a while). Only Ctrl-C / SIGINT / SIGTERM stops the service; children then stop in reverse
order (the API first, Redis last), workers draining their jobs for up to LADLE_DRAIN_S.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace

from cli.embedded_redis import EmbeddedRedis
from contracts.settings import Settings

log = logging.getLogger(__name__)

# A child that exits is started again after FIRST_RESTART_DELAY_S, doubling up to
# MAX_RESTART_DELAY_S while it keeps failing; once up for STABLE_AFTER_S it counts as healthy.
FIRST_RESTART_DELAY_S = 0.5
MAX_RESTART_DELAY_S = 30.0
STABLE_AFTER_S = 60.0
# Beyond the drain, seconds a stopping child gets before it is killed.
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class Child:
    """One process `ladle serve` keeps running: a name for the logs and its command line."""

    name: str
    command: list[str]
    quiet: bool = False  # its output goes to its own log file, not the terminal
    env: dict[str, str] = field(default_factory=dict)  # beyond the environment all children share


def api_command(settings: Settings) -> list[str]:
    """The API server's command line: gunicorn with Ladle's config module (gevent workers)."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:api.gunicorn_config",
        "--bind",
        f"{settings.host}:{settings.port}",
        "api.app:create_app()",
    ]


def children(settings: Settings, embedded: EmbeddedRedis | None, api_env: dict[str, str]) -> list[Child]:
    """What `ladle serve` runs, in start order (stopped in reverse)."""
    worker = [sys.executable, "-m", "cli.main", "worker"]
    return [
        *([Child("redis", embedded.command(), quiet=True)] if embedded else []),
        *(Child(f"worker-cpu-{i}", [*worker, "--device", "cpu"]) for i in range(settings.cpu_workers)),
        Child("worker-light", [*worker, "--device", "cpu", "--lane", "light"]),
        Child("worker-downloads", [*worker, "--lane", "downloads"]),
        Child("api", api_command(settings), env=api_env),
    ]


class Supervised:
    """A child process and its restart schedule."""

    def __init__(self, child: Child, env: dict[str, str]) -> None:
        self.child = child
        self.env = env
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.failures = 0  # exits in a row, each soon after its start
        self.restart_at: float | None = None

    def start(self) -> None:
        output = subprocess.DEVNULL if self.child.quiet else None
        # Its own session: Ctrl-C reaches the launcher only, which stops the children in
        # order (Redis must outlive the workers that hand their jobs back to it).
        self.process = subprocess.Popen(
            self.child.command, env={**self.env, **self.child.env}, stdout=output, stderr=output, start_new_session=True
        )
        self.started_at = time.monotonic()
        self.restart_at = None

    def check(self, now: float) -> None:
        """Notice an exit (and schedule the restart), or restart when its time has come."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                log.info("restarting child", extra={"child": self.child.name, "failures": self.failures})
                self.start()
            return
        code = self.process.poll() if self.process else None
        if code is None:
            return
        self.failures = 0 if now - self.started_at > STABLE_AFTER_S else self.failures + 1
        delay = min(MAX_RESTART_DELAY_S, FIRST_RESTART_DELAY_S * 2 ** max(0, self.failures - 1))
        log.warning(
            "child exited; restarting it",
            extra={"child": self.child.name, "pid": self.process.pid, "returncode": code, "restart_in_s": delay},
        )
        self.restart_at = now + delay

    def terminate(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> None:
        if not self.process:
            return
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("child did not stop in time; killing it", extra={"child": self.child.name})
            self.process.kill()
            self.process.wait()


def _settings_env(settings: Settings) -> dict[str, str]:
    """The environment of a child process: this one's, with every setting as `settings` holds it."""
    return {**os.environ, **settings.to_env()}


def _metrics_dir(settings: Settings) -> str:
    """An empty folder for the API processes' metrics (prometheus-client multiprocess mode); the
    files of an earlier run would count as this run's."""
    folder = settings.data_dir / "api-metrics"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return str(folder)


def serve(settings: Settings) -> int:
    """Run everything on this machine, restarting what exits, until Ctrl-C / SIGTERM / SIGHUP."""
    stopping = threading.Event()

    def stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # The children have sessions of their own: a closed terminal must stop them through us.
    signal.signal(signal.SIGHUP, stop)
    embedded = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_dir / "redis")
        embedded.data_dir.mkdir(parents=True, exist_ok=True)
        settings = replace(settings, redis_url=embedded.url)
    env = _settings_env(settings)
    if settings.cpu_workers > 1 and settings.intra_op_threads == 0:
        # Several CPU workers on one host: each gets its share of the cores, not all of them.
        env["LADLE_INTRA_OP_THREADS"] = str(max(1, (os.cpu_count() or 1) // settings.cpu_workers))
    # The API processes share one folder of metrics files (prometheus-client's multiprocess mode).
    api_env = {"PROMETHEUS_MULTIPROC_DIR": env.get("PROMETHEUS_MULTIPROC_DIR") or _metrics_dir(settings)}
    running = [Supervised(child, env) for child in children(settings, embedded, api_env)]
    try:
        for supervised in running:
            supervised.start()
            if embedded and supervised.child.name == "redis":
                embedded.process = supervised.process
                embedded.wait_until_ready()  # the others need it from their first breath
        url = f"http://{settings.host}:{settings.port}"
        log.info("ladle is serving", extra={"url": url, "redis": settings.redis_url})
        while not stopping.wait(0.2):
            now = time.monotonic()
            for supervised in running:
                supervised.check(now)
    finally:
        _stop_all(running, settings.drain_s)
    return 0


def _stop_all(running: list[Supervised], drain_s: float) -> None:
    """Stop the children in reverse order: the API, then the workers together (each drains), Redis last."""
    redis_child = [s for s in running if s.child.name == "redis"]
    api = [s for s in running if s.child.name == "api"]
    workers = [s for s in reversed(running) if s not in redis_child + api]
    draining_s = STOP_GRACE_S + drain_s
    for group, grace_s in ((api, draining_s), (workers, draining_s), (redis_child, STOP_GRACE_S)):
        log.info("stopping", extra={"children": [s.child.name for s in group]})
        for supervised in group:
            supervised.terminate()
        deadline = time.monotonic() + grace_s  # one deadline for the group: they stop side by side
        for supervised in group:
            supervised.wait(max(0.0, deadline - time.monotonic()))
