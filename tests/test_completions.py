"""POST /v1/completions: prompts batched in one job, OpenAI and Databricks fields."""

from __future__ import annotations

import json

import onnxruntime_genai as og
import pytest
import requests
from openai import OpenAI

from tests.helpers import ASYNC, SMOLLM2, TINY, assert_error, sse_data, wait_for


@pytest.fixture(scope="module")
def complete(api_url):
    def post(body: dict, **kwargs) -> requests.Response:
        return requests.post(f"{api_url}/v1/completions", json=body, timeout=120, **kwargs)

    return post


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return og.Tokenizer(og.Model(str(model_dir / TINY)))


def test_single_prompt_has_openai_shape_and_default_length(complete):
    response = complete({"model": TINY, "prompt": "Once upon a time"})
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["id"] == f"cmpl-{response.headers['X-Request-Id']}"
    (choice,) = body["choices"]
    assert choice["index"] == 0 and isinstance(choice["text"], str) and choice["logprobs"] is None
    assert choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 16  # OpenAI's default max_tokens


def test_prompt_list_is_one_batch_with_choices_by_prompt_and_n(complete, tokenizer):
    prompts = ["alpha beta", "gamma", "delta epsilon zeta"]
    body = complete({"model": TINY, "prompt": prompts, "max_tokens": 4, "n": 2, "temperature": 1.0}).json()
    assert [c["index"] for c in body["choices"]] == list(range(6))
    assert body["usage"]["prompt_tokens"] == sum(len(tokenizer.encode(p)) for p in prompts)
    assert body["usage"]["completion_tokens"] == 6 * 4
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 24


def test_batched_prompts_answer_as_each_prompt_alone(complete):
    prompts = ["The capital of France is", "One, two, three,", "Water boils at"]
    request = {"model": SMOLLM2, "max_tokens": 10, "temperature": 0}
    alone = [complete({**request, "prompt": p}).json()["choices"][0]["text"] for p in prompts]
    together = complete({**request, "prompt": prompts})
    assert [c["text"] for c in together.json()["choices"]] == alone
    job = requests.get(f"{together.url.rsplit('/v1/', 1)[0]}/v1/jobs/{together.headers['X-Request-Id']}", timeout=10)
    assert job.json()["batch_size"] == 3  # one job, one batch of three rows


def test_stream_chunks_name_their_prompt_index(complete):
    request = {"model": TINY, "prompt": ["a", "b"], "max_tokens": 5, "temperature": 1.0, "seed": 4}
    whole = complete(request).json()
    payloads = sse_data(complete({**request, "stream": True, "stream_options": {"include_usage": True}}, stream=True))
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    for index in (0, 1):
        text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"] and c["choices"][0]["index"] == index)
        assert text == whole["choices"][index]["text"]
    assert chunks[-1]["choices"] == []
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")
    assert {k: chunks[-1]["usage"][k] for k in counts} == {k: whole["usage"][k] for k in counts}


def test_echo_prefixes_the_prompt(complete):
    body = complete({"model": TINY, "prompt": ["first", "second"], "max_tokens": 3, "echo": True}).json()
    assert body["choices"][0]["text"].startswith("first")
    assert body["choices"][1]["text"].startswith("second")
    chunks = [
        json.loads(p)
        for p in sse_data(
            complete({"model": TINY, "prompt": "x1", "max_tokens": 2, "echo": True, "stream": True}, stream=True)
        )[:-1]
    ]
    assert chunks[0]["choices"][0]["text"] == "x1"


def test_use_raw_prompt_false_wraps_the_prompt_in_the_chat_template(complete, tokenizer):
    raw = complete({"model": TINY, "prompt": "hello", "max_tokens": 1}).json()["usage"]["prompt_tokens"]
    wrapped = complete({"model": TINY, "prompt": "hello", "max_tokens": 1, "use_raw_prompt": False}).json()
    assert raw == len(tokenizer.encode("hello"))
    assert wrapped["usage"]["prompt_tokens"] > raw + 10


def test_stop_and_seed(complete):
    request = {"model": TINY, "prompt": "go", "max_tokens": 30, "temperature": 1.0, "seed": 5}
    full = complete(request).json()["choices"][0]["text"]
    assert complete(request).json()["choices"][0]["text"] == full
    stop = full[10:13]
    stopped = complete({**request, "stop": stop}).json()["choices"][0]
    assert stopped["text"] == full[: full.index(stop)] and stopped["finish_reason"] == "stop"


def test_error_behavior_error_names_the_prompt_past_the_context(complete):
    response = complete({"model": TINY, "prompt": ["short", "hello " * 9000], "max_tokens": 5})
    error = assert_error(response, 400, param="prompt", code="context_length_exceeded")
    assert "prompt[1]" in error["message"]


def test_error_behavior_truncate_keeps_what_fits(complete, settings):
    body = complete(
        {"model": TINY, "prompt": ["short", "hello " * 9000], "max_tokens": 5, "error_behavior": "truncate"}
    ).json()
    assert [c["finish_reason"] for c in body["choices"]] == ["length", "length"]
    assert body["usage"]["prompt_tokens"] <= 2 * (8192 - 5)
    assert body["usage"]["completion_tokens"] == 10


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"prompt": []}, "prompt"),
        ({"prompt": ["ok", 3]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": [""]}, "prompt"),
        ({"prompt": ["p"] * 65}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"suffix": "tail"}, "suffix"),
        ({"logprobs": 6}, "logprobs"),
        ({"error_behavior": "ignore"}, "error_behavior"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"best_of": 2}, "best_of"),
    ],
)
def test_bad_completion_field_is_400_naming_it(complete, change, param):
    body = {k: v for k, v in {"model": TINY, "prompt": "hi", **change}.items() if v is not None}
    assert_error(complete(body), 400, param=param)


def test_unknown_model_is_404(complete):
    assert_error(complete({"model": "nope", "prompt": "hi"}), 404, param="model", code="model_not_found")


def test_async_completion_job_shows_a_text_completion(complete, api_url):
    response = complete({"model": TINY, "prompt": ["a", "b"], "max_tokens": 2}, headers=ASYNC)
    assert response.status_code == 202
    job = wait_for(api_url, response.json()["id"], {"succeeded"})
    assert job["kind"] == "completion"
    assert job["result"]["object"] == "text_completion" and len(job["result"]["choices"]) == 2


def test_openai_sdk_completions(api_url):
    client = OpenAI(base_url=f"{api_url}/v1", api_key="x", max_retries=0)
    completion = client.completions.create(
        model=SMOLLM2, prompt=["The capital of France is"], max_tokens=8, temperature=0
    )
    assert "Paris" in completion.choices[0].text
    streamed = list(client.completions.create(model=TINY, prompt=["a", "b"], max_tokens=3, stream=True))
    assert {c.choices[0].index for c in streamed if c.choices} == {0, 1}


def test_top_k_and_top_p_are_honoured(complete):
    """Sampling from only the most likely token (top_k=1, or a tiny top_p) is greedy decoding."""
    request = {"model": TINY, "prompt": "tell", "max_tokens": 12}
    greedy = complete({**request, "temperature": 0}).json()["choices"][0]["text"]
    sampled = complete({**request, "temperature": 1.0, "seed": 1}).json()["choices"][0]["text"]
    top_k = complete({**request, "temperature": 1.0, "seed": 1, "top_k": 1}).json()["choices"][0]["text"]
    top_p = complete({**request, "temperature": 1.0, "seed": 1, "top_p": 0.001}).json()["choices"][0]["text"]
    assert sampled != greedy
    assert top_k == greedy and top_p == greedy
