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

# The chat prompts the chat benches cycle through.
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Describe the water cycle in detail.",
    "Write a poem about autumn leaves.",
    "What are the benefits of regular exercise?",
    "Explain photosynthesis to a child.",
    "Describe a busy market in the morning.",
    "Give advice to someone learning to cook.",
]
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
    pids: list[int] | None = None,
) -> Iterator[tuple[str, str]]:
    """Yields (API URL, Redis URL) once `ready(api_url)` succeeds; then stops everything.

    `root` is the Ladle checkout that serves (another one measures other code with the same bench);
    `persist` gives the private Redis an append-only file; `pids`, if given, receives the process
    IDs of `ladle serve` and of its Redis (for `tree_cpu_s`).
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
        if pids is not None:
            pids.extend([process.pid, redis_server.process.pid])
        try:
            if not wait_until(lambda: ready(url), process):
                raise SystemExit("ladle serve did not come up")
            yield url, redis_url
        finally:
            process.send_signal(2)
            process.wait(timeout=60)
            redis_server.stop()


def wait_until(ready: Callable[[], object], process: subprocess.Popen, timeout_s: float = 120) -> bool:
    """Whether `ready()` succeeded (retried every half second) before `process` exited or time ran out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            ready()
            return True
        except (requests.RequestException, ValueError, KeyError):
            time.sleep(0.5)
    return False


def tree_cpu_s(roots: list[int]) -> float:
    """CPU seconds (user + system) used so far by the live processes `roots` and their descendants.

    Read from Linux's /proc; 0.0 where there is none. Unlike throughput, this hardly moves when
    other work shares the machine: it is what each request cost, not how fast it went.
    """
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        pid = int(entry.parent.name)
        parents[pid] = int(fields[1])
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks
    wanted, frontier = set(roots), list(roots)
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in wanted]
        wanted.update(children)
        frontier.extend(children)
    return sum(used.get(pid, 0.0) for pid in wanted)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
