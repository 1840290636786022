"""`ladle health worker`: the healthcheck compose runs in a worker's container."""

from __future__ import annotations

import subprocess
import sys

import yaml

from cli.embedded_redis import EmbeddedRedis, free_port
from cli.main import _parser
from contracts.settings import Settings
from tests.stack import ROOT, WorkerProcess, settings_env


def health(settings: Settings, *args: str) -> int:
    command = [sys.executable, "-m", "cli.main", "health", "worker", *args]
    return subprocess.run(command, cwd=ROOT, env=settings_env(settings), capture_output=True, timeout=60).returncode


def test_healthy_while_a_local_worker_beats_and_not_after(tmp_path, model_dir):
    server = EmbeddedRedis(tmp_path / "redis", persist=False)
    settings = Settings(redis_url=server.start(), model_dir=model_dir, heartbeat_s=0.3)
    try:
        assert health(settings) == 1  # no worker yet
        worker = WorkerProcess(settings, tmp_path / "light.log", lane="light")
        assert health(settings) == 0
        assert health(settings, "--lane", "light") == 0
        assert health(settings, "--lane", "compute") == 1
        worker.stop()
        assert health(settings, "--lane", "light") == 1
    finally:
        server.stop()


def test_unhealthy_when_redis_is_unreachable(model_dir):
    unreachable = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", model_dir=model_dir)
    assert health(unreachable) == 1


def test_compose_restarts_and_checks_every_long_running_service():
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name in ("redis", "api", "worker-cpu", "worker-light", "worker-downloads", "worker-gpu"):
        assert services[name]["restart"] == "unless-stopped", name
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    for name in ("worker-cpu", "worker-light", "worker-downloads", "worker-gpu"):
        check = services[name]["healthcheck"]["test"][1:]
        args = _parser().parse_args(check[1:])
        assert check[0] == "ladle" and (args.command, args.health_command) == ("health", "worker")
        lane = services[name]["command"][-1] if "--lane" in services[name]["command"] else "compute"
        assert args.lane == lane, name
        # Docker's stop waits this long before SIGKILL: longer than a worker's drain.
        assert _seconds(services[name]["stop_grace_period"]) > Settings().drain_s
    assert "/health" in " ".join(services["api"]["healthcheck"]["test"])


def _seconds(duration: str) -> float:
    return float(duration.removesuffix("s"))
