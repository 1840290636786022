"""Fixtures of the stack tier: a private redis-server, real worker processes, the API over HTTP,
built models. tests/unit needs none of them; tests/api uses only `redis_url` (tests/api/conftest.py)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cli.embedded_redis import EmbeddedRedis
from cli.model_build import BUILD_RECIPE_VERSION, build_model
from contracts.settings import Settings
from tests.helpers import MINILM, SMOLLM2, TINY, sse_data, sse_events, user  # noqa: F401 (also importable from here)
from tests.stack import ApiServer, GunicornApi, WorkerProcess

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log per test request

# Built models are cached between runs (building SmolLM2 takes about a minute). LADLE_TEST_MODEL_CACHE
# is the test suite's own variable (README, Tests), not a setting of Ladle's.
MODEL_CACHE = Path(
    os.environ.get("LADLE_TEST_MODEL_CACHE", Path.home() / ".cache" / "ladle-test" / f"models-v{BUILD_RECIPE_VERSION}")
)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    for name in (TINY, SMOLLM2, MINILM):
        build_model(name, MODEL_CACHE)
    return MODEL_CACHE


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=False)
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def settings(redis_url: str, model_dir: Path, tmp_path_factory) -> Settings:
    return Settings(
        redis_url=redis_url,
        catalog_dir=tmp_path_factory.mktemp("catalog"),
        data_dir=tmp_path_factory.mktemp("data"),
        model_dir=model_dir,
        worker_wait_s=2,
        sync_timeout_s=120,
        heartbeat_s=0.5,
        visibility_timeout_s=3,
    )


@pytest.fixture(scope="session")
def worker(settings: Settings, tmp_path_factory) -> Iterator[WorkerProcess]:
    process = WorkerProcess(settings, tmp_path_factory.mktemp("logs") / "worker.log")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def light_worker(settings: Settings, tmp_path_factory) -> Iterator[WorkerProcess]:
    process = WorkerProcess(settings, tmp_path_factory.mktemp("logs") / "light-worker.log", lane="light")
    yield process
    process.stop()


# LADLE_TEST_API_SERVER=gunicorn: the shared API runs as deployed (gunicorn + gevent, a subprocess)
# instead of werkzeug in a thread of the test process.
API_SERVER = os.environ.get("LADLE_TEST_API_SERVER", "werkzeug")


@pytest.fixture(scope="session")
def api_url(settings: Settings, worker: WorkerProcess, light_worker: WorkerProcess, tmp_path_factory) -> Iterator[str]:
    if API_SERVER == "gunicorn":
        server = GunicornApi(settings, tmp_path_factory.mktemp("logs") / "api.log")
    else:
        server = ApiServer(settings)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def chat(api_url: str):
    """POST a chat completion; returns the response."""

    def post(body: dict, **kwargs) -> requests.Response:
        return requests.post(f"{api_url}/v1/chat/completions", json=body, timeout=120, **kwargs)

    return post
