"""LADLE_MODEL_MEMORY_MB over HTTP: models sized by their memory plan, refused when they cannot fit.

Sizes of the test models (float32 key/value caches): the tiny model's weights are ~2.5 MB and a
cached token 512 bytes (2 layers x 2 heads x 16); SmolLM2's weights ~85 MB and a token 46,080
bytes (30 layers x 3 heads x 64), so SmolLM2 needs at least ~96 MB (weights + 256 tokens).
"""

from __future__ import annotations

import pytest
import requests

from tests.helpers import ASYNC, SMOLLM2, TINY, assert_error, user, wait_for, wait_for_first_token
from tests.metrics_scrape import scrape, value
from tests.stack import start_fleet, stop_fleet


def get(url: str, path: str) -> requests.Response:
    return requests.get(f"{url}{path}", timeout=60)


def chat(url: str, body: dict, **kwargs) -> requests.Response:
    return requests.post(f"{url}/v1/chat/completions", json=body, timeout=60, **kwargs)


def loaded_models(url: str) -> dict[str, dict]:
    return {m["name"]: m for w in get(url, "/openai/status").json()["Workers"] for m in w["loaded_models"]}


@pytest.fixture(scope="module")
def small_budget(tmp_path_factory, model_dir):
    # 3 MB: room for the tiny model and about a thousand cached tokens; SmolLM2 can never fit.
    fleet = start_fleet(tmp_path_factory.mktemp("small-budget"), model_dir, workers=1, model_memory_mb=3)
    yield fleet
    stop_fleet(fleet)


def test_a_model_larger_than_the_budget_is_refused_at_load(small_budget):
    error = assert_error(get(small_budget.api_url, f"/openai/load/{SMOLLM2}"), 400, "model", "model_too_large")
    assert "95.8 MB" in error["message"] and "3 MB" in error["message"]
    assert SMOLLM2 not in loaded_models(small_budget.api_url)
    assert get(small_budget.api_url, f"/openai/load/{TINY}").status_code == 200  # the worker lives on


def test_a_chat_with_a_model_too_large_is_refused(small_budget):
    response = chat(small_budget.api_url, {"model": SMOLLM2, "messages": user("hi"), "max_tokens": 2})
    assert_error(response, 400, "model", "model_too_large")


def test_the_memory_plan_is_in_the_status_and_the_metrics(small_budget):
    url = small_budget.api_url
    assert get(url, f"/openai/load/{TINY}").status_code == 200
    model = loaded_models(url)[TINY]
    plan = model["memory_plan"]
    # What the weights leave of 3 MB is one slot of about a thousand tokens, not 8 slots of 8192.
    assert plan["slots"] == 1 and plan["bytes_per_token"] == 512 and plan["budget_mb"] == 3.0
    assert 1000 < plan["kv_tokens"] < 1100 and model["kv_capacity_tokens"] == plan["kv_tokens"]
    assert plan["total_mb"] <= 3.0 and model["kv_slots"] == 1
    worker = small_budget.workers[0].name
    assert value(scrape(url), "ladle_worker_kv_cache_capacity_tokens", worker=worker, model=TINY) == plan["kv_tokens"]


def test_a_prompt_longer_than_the_planned_cache_is_context_length_exceeded(small_budget):
    url = small_budget.api_url
    long_prompt = user("hello " * 1500)  # ~1,500 tokens: within the model's 8192, past the plan's ~1,000
    error = assert_error(
        chat(url, {"model": TINY, "messages": long_prompt, "max_tokens": 2}), 400, "messages", "context_length_exceeded"
    )
    assert "LADLE_MODEL_MEMORY_MB" in error["message"] and "8192" in error["message"]
    assert chat(url, {"model": TINY, "messages": user("hello " * 100), "max_tokens": 2}).status_code == 200


@pytest.fixture(scope="module")
def busy_budget(tmp_path_factory, model_dir):
    # 120 MB: SmolLM2's plan takes all of it; jobs run side by side so a load can meet a running one.
    fleet = start_fleet(
        tmp_path_factory.mktemp("busy-budget"), model_dir, workers=1, model_memory_mb=120, worker_concurrency=4
    )
    yield fleet
    stop_fleet(fleet)


def test_a_model_whose_memory_running_jobs_hold_is_409(busy_budget):
    url = busy_budget.api_url
    body = {"model": SMOLLM2, "messages": user("Tell me a long story."), "max_tokens": 500, "temperature": 1.0}
    submitted = chat(url, body, headers=ASYNC)
    assert submitted.status_code == 202
    job_id = submitted.json()["id"]
    try:
        wait_for_first_token(url, job_id)
        assert_error(get(url, f"/openai/load/{TINY}"), 409, "model", "model_memory_in_use")
        assert TINY not in loaded_models(url)
    finally:
        requests.delete(f"{url}/v1/jobs/{job_id}", timeout=10)
    wait_for(url, job_id, {"succeeded", "failed", "cancelled"})
    assert get(url, f"/openai/load/{TINY}").status_code == 200  # SmolLM2 is idle again: it makes room
