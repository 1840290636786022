"""Foundry's model management: status, load/unload with TTL, loaded models, GPU device, ep routing."""

from __future__ import annotations

import time

import pytest
import requests

from tests.helpers import ASYNC, MINILM, SMOLLM2, TINY, assert_error, user, wait_for, wait_for_first_token
from tests.stack import start_fleet, stop_fleet


def get(api_url: str, path: str, **params) -> requests.Response:
    return requests.get(f"{api_url}{path}", params=params, timeout=60)


def loaded(api_url: str) -> list[str]:
    return get(api_url, "/openai/loadedmodels").json()


def eventually(predicate, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_status_has_foundrys_fields_and_ladles_workers(api_url, settings):
    for path in ("/openai/status", "/status"):
        body = get(api_url, path).json()
        assert body["Endpoints"] == [api_url]
        assert body["ModelDirPath"] == str(settings.model_dir)
        assert body["PipeName"]
        lanes = {(w["device"], w["lane"]) for w in body["Workers"]}
        assert {("cpu", "compute"), ("cpu", "light")} <= lanes
        assert all(isinstance(depth, int) for depth in body["QueueDepths"].values())


def test_load_then_unload(api_url):
    response = get(api_url, f"/openai/load/{TINY}", ttl=60)
    assert response.status_code == 200
    assert response.json()["loaded"] is True and response.json()["ttl"] == 60
    assert TINY in loaded(api_url) and TINY in get(api_url, "/models/loaded").json()
    assert get(api_url, f"/openai/unload/{TINY}").status_code == 200
    assert TINY not in loaded(api_url)


def test_newer_paths_are_aliases(api_url):
    assert get(api_url, f"/models/load/{MINILM}").status_code == 200
    assert MINILM in loaded(api_url)
    assert get(api_url, f"/models/unload/{MINILM}").status_code == 200
    assert MINILM not in loaded(api_url)


def test_idle_model_unloads_after_its_ttl(api_url):
    get(api_url, f"/openai/load/{TINY}", ttl=1)
    assert TINY in loaded(api_url)
    assert eventually(lambda: TINY not in loaded(api_url), timeout_s=15)


def test_unload_false_keeps_the_model_and_ttl_wins_over_it(api_url):
    assert get(api_url, f"/openai/load/{TINY}", unload="false").json()["ttl"] is None
    assert get(api_url, f"/openai/load/{TINY}", unload="false", ttl=5).json()["ttl"] == 5
    assert get(api_url, f"/openai/load/{TINY}").json()["ttl"] == 600
    get(api_url, f"/openai/unload/{TINY}", force="true")


def test_unload_of_a_busy_model_needs_force(api_url, chat):
    job_id = chat({"model": TINY, "messages": user("hi"), "max_tokens": 8000}, headers=ASYNC).json()["id"]
    wait_for_first_token(api_url, job_id)
    assert_error(get(api_url, f"/openai/unload/{TINY}"), 409, code="model_in_use")
    assert get(api_url, f"/openai/unload/{TINY}", force="true").status_code == 200
    assert wait_for(api_url, job_id, {"cancelled", "succeeded"})["status"] == "cancelled"
    assert chat({"model": TINY, "messages": user("hi"), "max_tokens": 2}).status_code == 200  # loads again


def test_bad_load_and_unload_requests(api_url):
    assert_error(get(api_url, "/openai/load/nope"), 404, param="model", code="model_not_found")
    assert_error(get(api_url, "/openai/unload/nope"), 404, param="model")
    assert_error(get(api_url, f"/openai/load/{TINY}", ttl="soon"), 400, param="ttl")
    assert_error(get(api_url, f"/openai/load/{TINY}", unload="maybe"), 400, param="unload")
    assert_error(get(api_url, f"/openai/load/{TINY}", ep="abacus"), 400, param="ep")
    error = assert_error(
        get(api_url, f"/openai/load/{TINY}", ep="cuda"), 503, param="ep", code="no_worker_for_provider"
    )
    assert "cuda" in error["message"]


def test_ep_routes_chat_and_completions(chat, api_url):
    assert chat({"model": TINY, "messages": user("hi"), "max_tokens": 2, "ep": "cpu"}).status_code == 200
    error = assert_error(chat({"model": TINY, "messages": user("hi"), "ep": "qnn"}), 503, param="ep")
    assert "qnn" in error["message"]
    completion = requests.post(
        f"{api_url}/v1/completions", json={"model": TINY, "prompt": "a", "ep": "webgpu"}, timeout=30
    )
    assert_error(completion, 503, param="ep")


def test_gpu_device_is_validated_against_live_workers(api_url):
    assert get(api_url, "/openai/getgpudevice").json() == 0
    assert_error(get(api_url, "/openai/setgpudevice/0"), 400, param="deviceId")  # this fleet has no GPU
    assert_error(get(api_url, "/openai/setgpudevice/x"), 400, param="deviceId")


@pytest.fixture
def two_workers(tmp_path, model_dir):
    fleet = start_fleet(tmp_path, model_dir, workers=2)
    yield fleet
    stop_fleet(fleet)


def test_loaded_models_aggregate_over_workers_and_unloadall_clears_them(two_workers):
    url = two_workers.api_url
    for name in (TINY, SMOLLM2, MINILM):
        assert get(url, f"/openai/load/{name}").status_code == 200
    assert loaded(url) == sorted([TINY, SMOLLM2, MINILM])
    holders = {m["name"]: w["name"] for w in get(url, "/openai/status").json()["Workers"] for m in w["loaded_models"]}
    assert set(holders.values()) <= {w.name for w in two_workers.workers}
    body = get(url, "/openai/unloadall").json()
    assert body == {"unloaded": True, "stillLoaded": []}
    assert loaded(url) == []


@pytest.fixture
def budgeted_worker(tmp_path, model_dir):
    # SmolLM2 needs ~96 MB (85 MB of weights + 256 cached tokens; its plan takes what is free), MiniLM 22 MB,
    # the tiny model ~35 MB (2.5 MB of weights + 8 slots of 8192 tokens of 512 bytes).
    fleet = start_fleet(tmp_path, model_dir, workers=1, model_memory_mb=150)
    yield fleet
    stop_fleet(fleet)


def test_a_memory_budget_unloads_the_least_recently_used_models(budgeted_worker):
    url = budgeted_worker.api_url
    assert get(url, f"/openai/load/{SMOLLM2}").status_code == 200
    assert get(url, f"/openai/load/{MINILM}").status_code == 200  # SmolLM2's plan took all 150: it goes
    assert loaded(url) == [MINILM]
    chat = requests.post(
        f"{url}/v1/chat/completions", json={"model": TINY, "messages": user("hi"), "max_tokens": 2}, timeout=60
    )
    assert chat.status_code == 200
    assert eventually(lambda: loaded(url) == sorted([MINILM, TINY]))  # 22 + 35 fits (seen at the next beat)
    assert get(url, f"/openai/load/{SMOLLM2}").status_code == 200  # 57 + 96 > 150: MiniLM, least recently used, goes
    assert loaded(url) == sorted([SMOLLM2, TINY])
    sizes = {
        m["name"]: m["footprint_mb"] for w in get(url, "/openai/status").json()["Workers"] for m in w["loaded_models"]
    }
    assert 80 < sizes[SMOLLM2] < 90 and sizes[TINY] < 3
