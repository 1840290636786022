"""Bad input and unavailable parts: a clear 4xx/5xx in OpenAI's error shape, never a traceback."""

from __future__ import annotations

import pytest
import redis
import requests

from cli.embedded_redis import EmbeddedRedis, free_port
from tests.helpers import TINY, assert_error, user
from tests.stack import ApiServer


def test_malformed_json(api_url):
    response = requests.post(
        f"{api_url}/v1/chat/completions", data="{not json", timeout=10, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, code="invalid_json")


def test_json_that_is_not_an_object(api_url):
    assert_error(requests.post(f"{api_url}/v1/chat/completions", json=[1, 2], timeout=10), 400, code="invalid_json")


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"model": None}, "model"),
        ({"messages": None}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages.0.content"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 8192}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"stream": "yes"}, "stream"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -2.1}, "frequency_penalty"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "not a name!"}}]}, "tools.0.function.name"),
        ({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools.0.type"),
        ({"made_up_option": 1}, "made_up_option"),
    ],
)
def test_bad_field_is_400_naming_it(chat, change, param):
    body = {"model": TINY, "messages": user("hi"), "max_tokens": 3, **change}
    body = {k: v for k, v in body.items() if v is not None}
    assert_error(chat(body), 400, param=param)


def test_stream_options_without_stream(chat):
    error = assert_error(chat({"model": TINY, "messages": user("hi"), "stream_options": {"include_usage": True}}), 400)
    assert "stream_options" in error["message"]


def test_no_effect_fields_are_accepted(chat):
    body = {
        "model": TINY,
        "messages": user("hi"),
        "max_tokens": 2,
        "user": "u1",
        "metadata": {"a": "b"},
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "logprobs": False,
    }
    assert chat(body).status_code == 200


def test_unknown_model_is_404(chat):
    assert_error(chat({"model": "gpt-9", "messages": user("hi")}), 404, param="model", code="model_not_found")


def test_prompt_longer_than_the_context_is_400(chat):
    response = chat({"model": TINY, "messages": user("hello " * 9000), "max_tokens": 10})
    assert_error(response, 400, param="messages", code="context_length_exceeded")


def test_prompt_longer_than_the_context_is_400_when_streaming_too(chat):
    response = chat({"model": TINY, "messages": user("hello " * 9000), "max_tokens": 10, "stream": True})
    assert_error(response, 400, code="context_length_exceeded")


def test_oversized_body_is_413(chat, settings):
    assert_error(chat({"model": TINY, "messages": user("x" * (settings.max_body_bytes + 10))}), 413)


def test_unknown_route_and_wrong_method(api_url):
    assert_error(requests.get(f"{api_url}/v1/nothing-here", timeout=10), 404)
    assert_error(requests.get(f"{api_url}/v1/chat/completions", timeout=10), 405)


def test_no_worker_for_the_device_is_503_with_retry_after(settings, redis_url):
    # Same model directory, but a Redis database no worker listens on.
    lonely = settings.with_overrides(redis_url=redis_url.rsplit("/", 1)[0] + "/5", worker_wait_s=0.3)
    server = ApiServer(lonely)
    try:
        response = requests.post(
            f"{server.url}/v1/chat/completions", timeout=10, json={"model": TINY, "messages": user("hi")}
        )
        assert_error(response, 503, code="no_worker")
        assert response.headers["Retry-After"]
    finally:
        server.stop()


def test_redis_down_is_503(settings):
    server = ApiServer(settings.with_overrides(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        response = requests.post(
            f"{server.url}/v1/chat/completions", timeout=30, json={"model": TINY, "messages": user("hi")}
        )
        assert_error(response, 503, code="queue_unavailable")
        assert response.headers["Retry-After"]
        assert_error(requests.get(f"{server.url}/v1/jobs/abc", timeout=30), 503, code="queue_unavailable")
    finally:
        server.stop()


def test_a_master_refusing_writes_without_its_replicas_is_503(tmp_path, settings):
    """A Redis master cut off from every replica (min-replicas-to-write) refuses writes with
    NOREPLICAS until a failover's new master takes over: retryable, like Redis being away."""
    server = EmbeddedRedis(tmp_path / "redis", persist=False)
    url = server.start()
    redis.Redis.from_url(url).config_set("min-replicas-to-write", 1)
    api = ApiServer(settings.with_overrides(redis_url=url))
    try:
        response = requests.post(
            f"{api.url}/v1/chat/completions", timeout=30, json={"model": TINY, "messages": user("hi")}
        )
        assert_error(response, 503, code="queue_unavailable")
        assert response.headers["Retry-After"]
    finally:
        api.stop()
        server.stop()
