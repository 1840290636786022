"""A model whose graph the continuous engine cannot drive (here a windowed key/value cache, as
onnxruntime-genai's builder makes for sliding-window layers) loads on onnxruntime-genai's
Generator instead, says why in one log line, and serves the APIs: chat, completions, streaming."""

from __future__ import annotations

import json

import pytest
import requests

from cli.model_build import build_model
from tests.conftest import MODEL_CACHE
from tests.helpers import sse_data, user

WINDOWED = "tiny-random-mistral-windowed"


@pytest.fixture(scope="module")
def windowed(api_url) -> str:
    build_model(WINDOWED, MODEL_CACHE)
    return WINDOWED


def test_chat_is_answered_by_the_generator_with_one_log_line_saying_why(windowed, api_url, worker):
    body = {"model": windowed, "messages": user("hi"), "max_tokens": 6, "temperature": 0}
    response = requests.post(f"{api_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert isinstance(answer["choices"][0]["message"]["content"], str)
    assert answer["usage"]["completion_tokens"] > 0 and answer["usage"]["prompt_tokens"] > 0
    lines = [line for line in worker.log_path.read_text().splitlines() if "Generator runs it" in line]
    assert len(lines) == 1 and windowed in lines[0] and "sliding_window" in lines[0]


def test_completions_stream_from_the_generator(windowed, api_url):
    body = {"model": windowed, "prompt": "Once", "max_tokens": 5, "stream": True, "temperature": 0}
    response = requests.post(f"{api_url}/v1/completions", json=body, timeout=120, stream=True)
    assert response.status_code == 200
    payloads = sse_data(response)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")


def test_greedy_answers_are_the_same_on_every_call(windowed, api_url):
    body = {"model": windowed, "messages": user("Tell me a story."), "max_tokens": 8, "temperature": 0}
    first, second = (requests.post(f"{api_url}/v1/chat/completions", json=body, timeout=120).json() for _ in range(2))
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]


def test_structured_output_on_the_generator_is_a_clear_400(windowed, api_url):
    tool = {"type": "function", "function": {"name": "now"}}
    for fields, param in (
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [tool]}, "tools"),
    ):
        body = {"model": windowed, "messages": user("hi"), "max_tokens": 6, **fields}
        response = requests.post(f"{api_url}/v1/chat/completions", json=body, timeout=120)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and "Generator" in error["message"]
