"""`ladle serve` in a subprocess for benchmarks, on a private Redis the benchmark can also use."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from contracts.settings import Settings  # noqa: E402


@contextmanager
def ladle_serve(
    model_dir: Path,
    ready: Callable[[str], object],
    env_overrides: dict[str, str] | None = None,
    root: Path = ROOT,
    persist: bool = False,
) -> Iterator[tuple[str, str]]:
    """Yields (API URL, Redis URL) once `ready(api_url)` succeeds; then stops everything.

    `root` is the Ladle checkout that serves (another one measures other code with the same bench);
    `persist` gives the private Redis an append-only file.
    """
    with tempfile.TemporaryDirectory() as data_dir:
        redis_server = EmbeddedRedis(Path(data_dir) / "redis", persist=persist)
        redis_url = redis_server.start()
        port = free_port()
        settings = Settings.from_env({**os.environ, **(env_overrides or {})}).with_overrides(
            redis_url=redis_url, port=port, model_dir=model_dir
        )
        env = {**os.environ, **(env_overrides or {}), **settings.to_env(), "PYTHONPATH": str(root)}
        command = [sys.executable, "-m", "cli.main", "serve"]
        process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(240):
                try:
                    ready(url)
                    break
                except (requests.RequestException, ValueError, KeyError):
                    time.sleep(0.5)
            else:
                raise SystemExit("ladle serve did not come up")
            yield url, redis_url
        finally:
            process.send_signal(2)
            process.wait(timeout=60)
            redis_server.stop()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
