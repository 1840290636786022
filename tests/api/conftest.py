"""The API tier: `create_app(settings).test_client()` on a private Redis; no worker, no models built.

Requests here end before a job would reach a worker (validation, model lookup, the 503 when
no worker is alive), so the model directory holds configuration files only: the API reads a
model's `genai_config.json` or `embedding_config.json` and never its weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from api.app import create_app
from contracts.settings import Settings
from tests.api.config_only_models import write_config_only_models


@pytest.fixture(scope="session")
def config_only_models(tmp_path_factory) -> Path:
    """A model directory with one generation and one embedding model, configuration only."""
    return write_config_only_models(tmp_path_factory.mktemp("config-only-models"))


@pytest.fixture(scope="session")
def api_settings(redis_url: str, config_only_models: Path, tmp_path_factory) -> Settings:
    return Settings(
        redis_url=redis_url,
        model_dir=config_only_models,
        data_dir=tmp_path_factory.mktemp("api-data"),
        catalog_dir=tmp_path_factory.mktemp("api-catalog"),
        worker_wait_s=0.2,
        max_body_bytes=64 * 1024,
    )


@pytest.fixture(scope="session")
def client(api_settings: Settings) -> FlaskClient:
    return create_app(api_settings).test_client()
