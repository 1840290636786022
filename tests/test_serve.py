"""`ladle serve` as a newcomer runs it: embedded Redis, the workers and the API; Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import requests

from cli.embedded_redis import free_port
from tests.helpers import TINY, user
from tests.stack import ROOT


def test_serve_starts_everything_and_ctrl_c_stops_it(tmp_path, model_dir):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "LADLE_REDIS_URL")}
    env.update(
        LADLE_PORT=str(port),
        LADLE_DATA_DIR=str(tmp_path / "data"),
        LADLE_MODEL_DIR=str(model_dir),
        PYTHONPATH=str(ROOT),
    )
    serve = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                response = requests.post(
                    f"{url}/v1/chat/completions",
                    timeout=30,
                    json={"model": TINY, "messages": user("hi"), "max_tokens": 3},
                )
                if response.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "ladle serve did not answer in time"
            time.sleep(0.5)
        assert response.json()["usage"]["completion_tokens"] == 3
        while True:  # the light and downloads workers start beside the compute worker
            lanes = {w["lane"] for w in requests.get(f"{url}/openai/status", timeout=10).json()["Workers"]}
            if lanes == {"compute", "light", "downloads"}:
                break
            assert time.monotonic() < deadline, f"workers of lanes {lanes} only"
            time.sleep(0.5)
        assert (tmp_path / "data" / "redis" / "appendonlydir").exists() or list(
            (tmp_path / "data" / "redis").glob("*.aof")
        )
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=60) == 0
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    finally:
        if serve.poll() is None:
            serve.kill()
