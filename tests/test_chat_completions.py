"""POST /v1/chat/completions through HTTP against Redis, a Celery worker and onnxruntime-genai."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import onnxruntime_genai as og
import pytest
import requests

from tests.helpers import SMOLLM2, TINY, sse_data, user


@pytest.fixture(scope="module")
def tiny_tokenizer(model_dir):
    folder = model_dir / TINY
    tokenizer = og.Tokenizer(og.Model(str(folder)))
    return tokenizer, (folder / "chat_template.jinja").read_text()


def prompt_token_count(tiny_tokenizer, messages: list[dict]) -> int:
    tokenizer, template = tiny_tokenizer
    prompt = tokenizer.apply_chat_template(
        messages=json.dumps(messages), add_generation_prompt=True, template_str=template
    )
    return len(tokenizer.encode(prompt))


def test_completion_has_openai_shape_and_request_id(chat):
    response = chat({"model": TINY, "messages": user("hello"), "max_tokens": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"] == f"chatcmpl-{response.headers['X-Request-Id']}"
    assert body["model"] == TINY
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] == "length"


def test_usage_counts_equal_the_tokenizers(chat, tiny_tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count the tokens of this."}]
    body = chat({"model": TINY, "messages": messages, "max_tokens": 7}).json()
    cached = body["usage"].pop("prompt_tokens_details")["cached_tokens"]
    assert body["usage"] == {
        "prompt_tokens": prompt_token_count(tiny_tokenizer, messages),
        "completion_tokens": 7,
        "total_tokens": prompt_token_count(tiny_tokenizer, messages) + 7,
    }
    assert 0 <= cached < body["usage"]["prompt_tokens"]


def test_content_as_text_parts_is_the_same_prompt(chat):
    plain = chat({"model": TINY, "messages": user("ab cd"), "max_tokens": 3}).json()
    parts = [{"role": "user", "content": [{"type": "text", "text": "ab "}, {"type": "text", "text": "cd"}]}]
    again = chat({"model": TINY, "messages": parts, "max_tokens": 3}).json()["usage"]
    assert again["prompt_tokens"] == plain["usage"]["prompt_tokens"]


def test_max_completion_tokens_limits_output(chat):
    body = chat({"model": TINY, "messages": user("hi"), "max_completion_tokens": 4}).json()
    assert body["usage"]["completion_tokens"] == 4
    assert body["choices"][0]["finish_reason"] == "length"


def test_stream_sends_chunks_then_done(chat):
    request = {"model": TINY, "messages": user("stream me"), "max_tokens": 6, "temperature": 1.0, "seed": 3}
    whole = chat(request).json()["choices"][0]["message"]["content"]
    response = chat({**request, "stream": True}, stream=True)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    payloads = sse_data(response)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "usage" not in chunks[0]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole


def test_stream_include_usage_adds_a_usage_chunk(chat):
    request = {
        "model": TINY,
        "messages": user("x"),
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = [json.loads(p) for p in sse_data(chat(request, stream=True))[:-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    assert all(c["usage"] is None for c in chunks[:-1])


def test_n_returns_n_choices_and_counts_all_tokens(chat):
    body = chat({"model": TINY, "messages": user("hi"), "max_tokens": 5, "n": 3, "temperature": 1.0}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"]["completion_tokens"] == 15


def test_n_streams_every_choice(chat):
    request = {"model": TINY, "messages": user("hi"), "max_tokens": 3, "n": 2, "stream": True}
    chunks = [json.loads(p) for p in sse_data(chat(request, stream=True))[:-1]]
    finished = sorted(c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"])
    assert finished == [0, 1]


def test_stop_string_cuts_the_text_before_it(chat):
    request = {"model": TINY, "messages": user("hi"), "max_tokens": 40, "temperature": 1.0, "seed": 11}
    full = chat(request).json()["choices"][0]["message"]["content"]
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    expected = full[: full.index(stop)]
    stopped = chat({**request, "stop": [stop]}).json()
    assert stopped["choices"][0]["message"]["content"] == expected
    assert stopped["choices"][0]["finish_reason"] == "stop"
    chunks = [json.loads(p) for p in sse_data(chat({**request, "stop": stop, "stream": True}, stream=True))[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_same_seed_same_text_other_seed_other_text(chat):
    request = {"model": TINY, "messages": user("tell me"), "max_tokens": 20, "temperature": 1.0}
    first = chat({**request, "seed": 7}).json()["choices"][0]["message"]["content"]
    again = chat({**request, "seed": 7}).json()["choices"][0]["message"]["content"]
    foundry = chat({**request, "random_seed": 7}).json()["choices"][0]["message"]["content"]
    other = chat({**request, "seed": 8}).json()["choices"][0]["message"]["content"]
    assert first == again == foundry
    assert other != first


def test_concurrent_requests_all_complete(chat):
    def ask(i: int):
        return chat({"model": TINY, "messages": user(f"request {i}"), "max_tokens": 20 + i})

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(ask, range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    assert [r.json()["usage"]["completion_tokens"] for r in responses] == [20 + i for i in range(6)]


def test_smollm2_knows_the_capital_of_france(chat):
    question = user("What is the capital of France? Answer in one sentence.")
    body = chat({"model": SMOLLM2, "messages": question, "max_tokens": 40, "temperature": 0}).json()
    assert "Paris" in body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"


EIGHT_QUESTIONS = [
    "Name three colors.",
    "What is 2 + 2?",
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Why is the sky blue?",
    "Give me a word that rhymes with cat.",
    "List four animals that live in cold places, then say which is the largest of them.",
    "What do bees make?",
]


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 0.8, "seed": 11}], ids=["greedy", "seeded"])
def test_smollm2_batched_answers_equal_single_answers(chat, api_url, sampling):
    request = {"model": SMOLLM2, "max_tokens": 24, **sampling}
    single = [
        chat({**request, "messages": user(q)}).json()["choices"][0]["message"]["content"] for q in EIGHT_QUESTIONS
    ]
    with ThreadPoolExecutor(max_workers=len(EIGHT_QUESTIONS)) as pool:
        together = list(pool.map(lambda q: chat({**request, "messages": user(q)}), EIGHT_QUESTIONS))
    assert [r.json()["choices"][0]["message"]["content"] for r in together] == single
    jobs = [requests.get(f"{api_url}/v1/jobs/{r.headers['X-Request-Id']}", timeout=10).json() for r in together]
    assert max(job["batch_size"] for job in jobs) > 1  # they really were decoded together
