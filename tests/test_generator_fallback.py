"""A model whose graph the continuous engine cannot drive (a windowed key/value cache, as
onnxruntime-genai's builder makes for sliding-window layers: Mistral's, gpt-oss's; a hybrid with
per-layer convolution states: LFM2) loads on onnxruntime-genai's Generator instead, says why in
one log line, and serves the APIs: chat, completions, streaming. gpt-oss (attention sinks,
experts, the harmony template) and LFM2 answer as onnxruntime-genai's Generator run directly."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime_genai as og
import pytest
import requests

from cli.model_build import build_model
from tests.conftest import MODEL_CACHE
from tests.helpers import sse_data, user
from worker.models.chat_tokenizer import chat_template
from worker.models.model_registry import provider_config

WINDOWED = "tiny-random-mistral-windowed"
GPT_OSS = "tiny-random-gpt-oss"
HYBRID = "tiny-random-lfm2-hybrid"
CONVERSATION = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "What colour is the sky?"},
]


@pytest.fixture(scope="module")
def windowed(api_url) -> str:
    build_model(WINDOWED, MODEL_CACHE)
    return WINDOWED


@pytest.fixture(scope="module")
def gpt_oss(api_url) -> str:
    build_model(GPT_OSS, MODEL_CACHE)
    return GPT_OSS


@pytest.fixture(scope="module")
def hybrid(api_url) -> str:
    build_model(HYBRID, MODEL_CACHE)
    return HYBRID


def fallback_lines(worker, model: str) -> list[str]:
    """The worker's log lines saying why `model` runs on the Generator."""
    lines = worker.log_path.read_text().splitlines()
    return [line for line in lines if "Generator runs it" in line and f"{model}:" in line]


def generator_answer(model: str, messages: list[dict], max_tokens: int, intra_op_threads: int) -> tuple[str, int]:
    """onnxruntime-genai alone, greedy: its chat template, Generator and decoder; (text, tokens)."""
    folder = MODEL_CACHE / model
    genai_model = og.Model(provider_config(str(folder), "cpu", intra_op_threads))
    tokenizer = og.Tokenizer(genai_model)
    prompt = tokenizer.apply_chat_template(
        json.dumps(messages), template_str=chat_template(folder), add_generation_prompt=True
    )
    tokens = tokenizer.encode(prompt)
    eos = json.loads((folder / "genai_config.json").read_text())["model"]["eos_token_id"]
    params = og.GeneratorParams(genai_model)
    params.set_search_options(max_length=len(tokens) + max_tokens, do_sample=False)
    generator = og.Generator(genai_model, params)
    generator.append_tokens(np.asarray(tokens, dtype=np.int32))
    stream, text, count = tokenizer.create_stream(), "", 0
    while not generator.is_done() and count < max_tokens:
        generator.generate_next_token()
        token = int(generator.get_next_tokens()[0])
        if token in (eos if isinstance(eos, list) else [eos]):
            break
        text, count = text + stream.decode(token), count + 1
    return text, count


def test_chat_is_answered_by_the_generator_with_one_log_line_saying_why(windowed, api_url, worker):
    body = {"model": windowed, "messages": user("hi"), "max_tokens": 6, "temperature": 0}
    response = requests.post(f"{api_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert isinstance(answer["choices"][0]["message"]["content"], str)
    assert answer["usage"]["completion_tokens"] > 0 and answer["usage"]["prompt_tokens"] > 0
    lines = fallback_lines(worker, windowed)
    assert len(lines) == 1 and "sliding_window" in lines[0]


def test_gpt_oss_chat_on_the_generator_is_onnxruntime_genais_greedy_answer(gpt_oss, api_url, worker, settings):
    body = {"model": gpt_oss, "messages": CONVERSATION, "max_tokens": 12, "temperature": 0}
    response = requests.post(f"{api_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer = response.json()
    text, count = generator_answer(gpt_oss, CONVERSATION, 12, settings.intra_op_threads)
    assert count > 0
    assert (answer["choices"][0]["message"]["content"], answer["usage"]["completion_tokens"]) == (text, count)
    # Only its windowed cache sends gpt-oss to the Generator: sinks and experts are not named.
    lines = fallback_lines(worker, gpt_oss)
    assert len(lines) == 1 and "sliding_window" in lines[0]


def test_a_hybrid_with_convolution_states_is_served_by_the_generator_as_it_answers_alone(
    hybrid, api_url, worker, settings
):
    body = {"model": hybrid, "messages": CONVERSATION, "max_tokens": 12, "temperature": 0}
    response = requests.post(f"{api_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer = response.json()
    text, count = generator_answer(hybrid, CONVERSATION, 12, settings.intra_op_threads)
    assert count > 0
    assert (answer["choices"][0]["message"]["content"], answer["usage"]["completion_tokens"]) == (text, count)
    lines = fallback_lines(worker, hybrid)
    assert len(lines) == 1 and "hybrid" in lines[0] and "convolution" in lines[0]


def test_gpt_oss_streamed_chat_on_the_generator_is_onnxruntime_genais_greedy_answer(gpt_oss, api_url, settings):
    body = {"model": gpt_oss, "messages": CONVERSATION, "max_tokens": 12, "temperature": 0, "stream": True}
    response = requests.post(f"{api_url}/v1/chat/completions", json=body, timeout=120, stream=True)
    assert response.status_code == 200
    payloads = sse_data(response)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert streamed == generator_answer(gpt_oss, CONVERSATION, 12, settings.intra_op_threads)[0]


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
