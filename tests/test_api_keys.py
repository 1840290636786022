"""API keys: every route but the probes needs one, each key sees only its own jobs, and requests per
key are limited across API processes sharing one Redis."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests
from databricks.sdk import WorkspaceClient
from openai import OpenAI

from api.app import create_app
from contracts.settings import Settings
from tests.helpers import ASYNC, MINILM, TINY, user
from tests.stack import ApiServer, GunicornApi

KEYS = ("key-alice", "key-bob")
OPEN_PATHS = {"/health", "/ready", "/.well-known/databricks-config"}  # probes and the SDK's metadata


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keyed_settings(settings: Settings, tmp_path_factory) -> Settings:
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"# Bob's key\n\n{KEYS[1]}\n")
    return settings.with_overrides(api_keys=(KEYS[0],), api_keys_file=key_file, rate_limit="off")


@pytest.fixture(scope="module")
def base(keyed_settings: Settings, api_url: str) -> Iterator[str]:
    server = ApiServer(keyed_settings)
    yield server.url
    server.stop()


def every_route(settings: Settings) -> list[tuple[str, str]]:
    """(method, path) of every rule of the app's URL map, with a placeholder in each variable part."""
    routes = []
    for rule in create_app(settings).url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?[^>]+>", "x", rule.rule)
        routes += [(method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return routes


def test_every_route_but_the_probes_needs_a_key(keyed_settings: Settings, base: str):
    routes = every_route(keyed_settings)
    assert len(routes) > 40
    for method, path in routes:
        for headers in ({}, auth("wrong"), {"api-key": "wrong"}):
            response = requests.request(method, base + path, headers=headers, json={}, timeout=30)
            if path in OPEN_PATHS:
                assert response.status_code != 401, path
                continue
            assert response.status_code == 401, (method, path, response.status_code)
            body = response.json()
            if path.startswith(("/serving-endpoints", "/api/2.0/serving-endpoints")):
                assert body == {"error_code": "UNAUTHENTICATED", "message": body["message"]}
            elif path.startswith("/v1/messages"):  # Anthropic's envelope
                assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
            else:
                assert body["error"]["code"] == "invalid_api_key"
    # An unknown route does not reveal itself to a caller without a key.
    assert requests.get(f"{base}/no/such/route", timeout=30).status_code == 401


def test_either_header_and_the_key_file_are_accepted(base: str):
    for headers in (auth(KEYS[0]), {"api-key": KEYS[0]}, auth(KEYS[1]), {"api-key": KEYS[1]}):
        assert requests.get(f"{base}/v1/models", headers=headers, timeout=30).status_code == 200


def test_a_key_sees_only_its_own_jobs(base: str):
    body = {"model": TINY, "messages": user("hi"), "max_tokens": 3}
    submitted = requests.post(f"{base}/v1/chat/completions", json=body, headers={**auth(KEYS[0]), **ASYNC}, timeout=30)
    assert submitted.status_code == 202
    job_id = submitted.json()["id"]
    embedded = requests.post(
        f"{base}/v1/embeddings", json={"model": MINILM, "input": "a"}, headers={**auth(KEYS[0]), **ASYNC}, timeout=30
    )
    assert embedded.status_code == 202
    for own in (job_id, embedded.json()["id"]):
        assert requests.get(f"{base}/v1/jobs/{own}", headers=auth(KEYS[0]), timeout=30).status_code == 200
        other = requests.get(f"{base}/v1/jobs/{own}", headers=auth(KEYS[1]), timeout=30)
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "job_not_found"
    assert requests.get(f"{base}/v1/jobs/{job_id}/events", headers=auth(KEYS[1]), timeout=30).status_code == 404
    listed = {job["id"] for job in requests.get(f"{base}/v1/fleet", headers=auth(KEYS[1]), timeout=30).json()["jobs"]}
    assert job_id not in listed
    listed = {job["id"] for job in requests.get(f"{base}/v1/fleet", headers=auth(KEYS[0]), timeout=30).json()["jobs"]}
    assert job_id in listed
    assert requests.delete(f"{base}/v1/jobs/{job_id}", headers=auth(KEYS[1]), timeout=30).status_code == 404
    assert requests.delete(f"{base}/v1/jobs/{job_id}", headers=auth(KEYS[0]), timeout=30).status_code == 200


# Rate limits: two API processes (gunicorn in a subprocess and werkzeug in this one) on one Redis.
LIMIT = 4


@pytest.fixture(scope="module")
def two_apis(keyed_settings: Settings, api_url: str, tmp_path_factory) -> Iterator[tuple[str, str]]:
    limited = keyed_settings.with_overrides(rate_limit=f"{LIMIT} per 5 seconds")
    gunicorn = GunicornApi(limited, tmp_path_factory.mktemp("logs") / "limited-api.log")
    local = ApiServer(limited)
    yield gunicorn.url, local.url
    local.stop()
    gunicorn.stop()


def test_the_limit_is_shared_by_api_processes_and_answered_in_each_dialect(two_apis: tuple[str, str]):
    first, second = two_apis
    key = auth(KEYS[0])
    remaining = []
    for i in range(LIMIT):
        response = requests.get(f"{(first, second)[i % 2]}/v1/models", headers=key, timeout=30)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-requests"] == str(LIMIT)
        remaining.append(int(response.headers["x-ratelimit-remaining-requests"]))
    assert remaining == list(range(LIMIT - 1, -1, -1))
    limited = requests.get(f"{first}/v1/models", headers=key, timeout=30)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.headers["Retry-After"].isdigit()
    assert int(limited.headers["retry-after-ms"]) > 0
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert re.fullmatch(r"\d+s", limited.headers["x-ratelimit-reset-requests"])
    databricks = requests.post(f"{second}/serving-endpoints/{TINY}/invocations", json={}, headers=key, timeout=30)
    assert databricks.status_code == 429
    assert databricks.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    azure = requests.get(f"{second}/info", params={"model": TINY}, headers=key, timeout=30)
    assert azure.status_code == 429
    assert azure.json()["error"]["code"] == "rate_limit_exceeded"
    assert azure.headers["Retry-After"].isdigit()
    # Another key has its own count.
    assert requests.get(f"{first}/v1/models", headers=auth(KEYS[1]), timeout=30).status_code == 200
    # The probes are never limited.
    assert requests.get(f"{first}/health", timeout=30).status_code == 200


def test_openai_sdk_retry_succeeds_after_the_limit(two_apis: tuple[str, str]):
    client = OpenAI(base_url=f"{two_apis[1]}/v1", api_key=KEYS[1], max_retries=2)
    # One more call than the limit allows in a window: every call returns, one after a retry.
    responses = [client.models.with_raw_response.list() for _ in range(LIMIT + 1)]
    assert all(response.status_code == 200 for response in responses)
    assert sum(response.retries_taken for response in responses) >= 1


def test_databricks_sdk_waits_out_the_limit(two_apis: tuple[str, str]):
    first, second = two_apis
    statuses = [requests.get(f"{first}/v1/models", headers=auth(KEYS[0]), timeout=30).status_code]
    while statuses[-1] != 429 and len(statuses) <= LIMIT:
        statuses.append(requests.get(f"{first}/v1/models", headers=auth(KEYS[0]), timeout=30).status_code)
    assert statuses[-1] == 429
    endpoints = WorkspaceClient(host=second, token=KEYS[0]).serving_endpoints.list()
    assert TINY in {endpoint.name for endpoint in endpoints}
