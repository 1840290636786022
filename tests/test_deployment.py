"""Procfile, compose.yaml and the import boundary refer to real entry points and options."""

from __future__ import annotations

import importlib
import shlex
import subprocess
import sys

import yaml
from gunicorn import util

from cli.main import _parser
from tests.stack import ROOT


def procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name: shlex.split(command) for name, _, command in (line.partition(": ") for line in lines if line)}


def assert_gunicorn_command(argv: list[str]) -> None:
    """gunicorn with the API's config module (gevent workers), serving the app factory."""
    assert argv[0] == "gunicorn"
    config = importlib.import_module(argv[argv.index("-c") + 1].removeprefix("python:"))
    assert config.worker_class == "gevent"
    assert util.load_class(config.worker_class, section="gunicorn.workers").__name__ == "GeventWorker"
    module, _, factory = argv[-1].partition(":")
    assert callable(getattr(importlib.import_module(module), factory.removesuffix("()")))


def assert_ladle_command(argv: list[str]) -> None:
    assert argv[0] == "ladle"
    args = _parser().parse_args(argv[1:])
    assert args.command == "worker"


def test_procfile_web_and_worker_are_real_entry_points():
    processes = procfile()
    assert_gunicorn_command(processes["web"])
    assert_ladle_command(processes["worker"])
    assert_ladle_command(processes["light"])
    assert_ladle_command(processes["downloads"])


def test_compose_services_use_the_same_entry_points():
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert "--appendonly" in services["redis"]["command"]
    assert_gunicorn_command(services["api"]["command"])
    assert_ladle_command(services["worker-cpu"]["command"])
    assert_ladle_command(services["worker-light"]["command"])
    assert_ladle_command(services["worker-gpu"]["command"])
    assert_ladle_command(services["worker-downloads"]["command"])
    # The API seals download tokens with a key the downloads worker must share.
    assert services["api"]["environment"]["LADLE_DATA_DIR"] == "/data"
    assert "ladle-data:/data" in services["api"]["volumes"]
    assert "ladle-data:/data" in services["worker-downloads"]["volumes"]
    assert services["worker-gpu"]["command"][-1] == "cuda:0"
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for name in ("api", "worker-cpu", "worker-light", "worker-gpu", "worker-downloads"):
        assert "models:/models" in services[name]["volumes"]
        assert services[name]["environment"]["LADLE_REDIS_URL"].startswith("redis://redis:")


def test_api_and_contracts_never_load_onnxruntime():
    code = "import sys, api.app, contracts.jobs; print(any(m.startswith('onnxruntime') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
