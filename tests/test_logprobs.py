"""Logprobs through the openai SDK: chat's `logprobs` + `top_logprobs` (with tools and schemas too:
entries for the content's tokens only), completions' `logprobs` (with `echo`, the prompt's tokens
first), whole and streamed, and the limits as 400s."""

from __future__ import annotations

import json
import math

import onnxruntime_genai as og
import pytest
import requests
from openai import BadRequestError, OpenAI

from contracts.jobs import GenerationJob
from contracts.settings import Settings
from tests.helpers import ASYNC, SMOLLM2, TINY, user, wait_for_first_token
from tests.tool_schemas import CAPITAL, WEATHER
from worker.engines.generation_engine import StaticBatchEngine
from worker.engines.token_logprobs import FLOOR
from worker.errors import JobRejected
from worker.models.model_registry import LoadedModel, ModelRegistry, provider_config

QUESTION = user("What is the capital of France?")
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def client(api_url: str) -> OpenAI:
    return OpenAI(base_url=f"{api_url}/v1", api_key="x", max_retries=0)


def assert_alternatives(entry, k: int, greedy: bool) -> None:
    """Sorted, at most k, probabilities summing to at most 1; a greedy token is the most likely."""
    values = [top.logprob for top in entry.top_logprobs]
    assert len(values) == k and values == sorted(values, reverse=True)
    assert all(value <= 0 for value in values) and sum(math.exp(v) for v in values) <= 1 + 1e-6
    if greedy:
        assert entry.logprob == pytest.approx(values[0]) and entry.token == entry.top_logprobs[0].token


def joined(entries) -> str:
    return b"".join(bytes(e.bytes) for e in entries).decode()


def streamed_entries(chunks) -> list:
    """The logprob entries of a stream's chunks: only on content deltas, each joining to its text."""
    entries = []
    for chunk in chunks:
        (choice,) = chunk.choices
        if choice.delta.tool_calls:
            assert choice.logprobs is None
        elif choice.logprobs is not None:
            assert joined(choice.logprobs.content) == choice.delta.content
            entries += choice.logprobs.content
    return entries


def test_chat_logprobs_shape_and_invariants(client: OpenAI):
    completion = client.chat.completions.create(
        model=SMOLLM2, messages=QUESTION, max_tokens=12, temperature=0, logprobs=True, top_logprobs=5
    )
    (choice,) = completion.choices
    content = choice.logprobs.content
    assert choice.logprobs.refusal is None
    # One entry per output token (an end-of-text token has none, as OpenAI shows none).
    ended = choice.finish_reason == "stop"
    assert len(content) == completion.usage.completion_tokens - ended
    for entry in content:
        assert isinstance(entry.token, str) and entry.bytes == list(bytes(entry.bytes))
        assert_alternatives(entry, 5, greedy=True)
        for top in entry.top_logprobs:
            assert isinstance(top.token, str) and isinstance(top.bytes, list)
    assert b"".join(bytes(e.bytes) for e in content).decode() == choice.message.content


def test_chat_stream_carries_the_logprobs_of_its_text(client: OpenAI):
    asked = {"model": SMOLLM2, "messages": QUESTION, "max_tokens": 10, "temperature": 0, "logprobs": True}
    whole = client.chat.completions.create(**asked, top_logprobs=2).choices[0].logprobs.content
    chunks = [c for c in client.chat.completions.create(**asked, top_logprobs=2, stream=True) if c.choices]
    streamed = []
    for chunk in chunks:
        if chunk.choices[0].delta.content:
            pieces = chunk.choices[0].logprobs.content
            assert b"".join(bytes(e.bytes) for e in pieces).decode() == chunk.choices[0].delta.content
            streamed += pieces
    assert [e.token for e in streamed] == [e.token for e in whole]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in whole], abs=1e-4)
    assert [[t.token for t in e.top_logprobs] for e in streamed] == [[t.token for t in e.top_logprobs] for e in whole]


def test_chat_logprobs_without_top_logprobs_and_before_temperature(client: OpenAI):
    """Values are the model's distribution, before temperature: a hot sample reports the same
    alternatives at its first position as a greedy one."""
    asked = {"model": SMOLLM2, "messages": QUESTION, "max_tokens": 1, "logprobs": True}
    plain = client.chat.completions.create(**asked, temperature=0).choices[0].logprobs.content
    assert len(plain) == 1 and plain[0].top_logprobs == []
    greedy = client.chat.completions.create(**asked, temperature=0, top_logprobs=4).choices[0].logprobs.content[0]
    hot = client.chat.completions.create(**asked, temperature=1.8, seed=7, top_logprobs=4).choices[0].logprobs.content
    assert [t.token for t in hot[0].top_logprobs] == [t.token for t in greedy.top_logprobs]
    assert [t.logprob for t in hot[0].top_logprobs] == pytest.approx([t.logprob for t in greedy.top_logprobs], abs=1e-4)
    assert plain[0].logprob == pytest.approx(greedy.logprob, abs=1e-4)


def test_completion_echo_puts_the_prompts_tokens_first(client: OpenAI):
    completion = client.completions.create(
        model=SMOLLM2, prompt=PROMPT, max_tokens=4, temperature=0, echo=True, logprobs=3
    )
    (choice,) = completion.choices
    lp = choice.logprobs
    prompt_tokens = completion.usage.prompt_tokens
    assert choice.text.startswith(PROMPT)
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert len(lp.tokens) == prompt_tokens + completion.usage.completion_tokens - (choice.finish_reason == "stop")
    assert "".join(lp.tokens[:prompt_tokens]) == PROMPT and "".join(lp.tokens) == choice.text
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    for i in range(1, len(lp.tokens)):
        top = lp.top_logprobs[i]
        assert lp.tokens[i] in top and top[lp.tokens[i]] == lp.token_logprobs[i] and 3 <= len(top) <= 4
        assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-6
        if i >= prompt_tokens:  # generated greedily: the most likely token
            assert lp.token_logprobs[i] == pytest.approx(max(top.values()))


def test_completion_stream_pieces_join_to_the_whole_answer(client: OpenAI):
    asked = {"model": SMOLLM2, "prompt": PROMPT, "max_tokens": 4, "temperature": 0, "echo": True, "logprobs": 2}
    whole = client.completions.create(**asked).choices[0]
    chunks = [c.choices[0] for c in client.completions.create(**asked, stream=True) if c.choices]
    assert "".join(c.text for c in chunks) == whole.text
    assert chunks[0].text == PROMPT and chunks[0].logprobs.token_logprobs[0] is None
    for field in ("tokens", "text_offset"):
        assert [v for c in chunks if c.logprobs for v in getattr(c.logprobs, field)] == getattr(whole.logprobs, field)
    streamed = [v for c in chunks if c.logprobs for v in c.logprobs.token_logprobs]
    assert streamed[1:] == pytest.approx(whole.logprobs.token_logprobs[1:], abs=1e-4)


def test_completion_logprobs_zero_gives_the_chosen_token_only(client: OpenAI):
    completion = client.completions.create(model=TINY, prompt=["hi", "there"], max_tokens=3, logprobs=0, n=2)
    for choice in completion.choices:
        lp = choice.logprobs
        assert len(lp.tokens) == 3 and lp.text_offset[0] == 0
        assert [list(top) for top in lp.top_logprobs] == [[token] for token in lp.tokens]


def test_completion_echo_of_a_prompt_read_in_several_runs(client: OpenAI):
    prompt = "one two three four five six seven eight nine ten " * 4  # past one 32-token run
    completion = client.completions.create(model=TINY, prompt=prompt, max_tokens=2, echo=True, logprobs=1)
    lp, prompt_tokens = completion.choices[0].logprobs, completion.usage.prompt_tokens
    assert prompt_tokens > 32 and len(lp.tokens) == prompt_tokens + 2
    assert "".join(lp.tokens[:prompt_tokens]) == prompt and lp.text_offset[prompt_tokens] == len(prompt)
    assert lp.token_logprobs[0] is None and all(isinstance(v, float) for v in lp.token_logprobs[1:])


@pytest.mark.parametrize(
    ("endpoint", "change", "param"),
    [
        ("chat", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ("chat", {"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
        ("chat", {"top_logprobs": 3}, "top_logprobs"),
        ("chat", {"logprobs": False, "top_logprobs": 2}, "top_logprobs"),
        ("completions", {"logprobs": 6}, "logprobs"),
        ("completions", {"logprobs": -1}, "logprobs"),
        ("completions", {"logprobs": 1, "echo": True, "extra_body": {"use_raw_prompt": False}}, "use_raw_prompt"),
    ],
)
def test_logprobs_out_of_range_are_400s(client: OpenAI, endpoint, change, param):
    with pytest.raises(BadRequestError) as raised:
        if endpoint == "chat":
            client.chat.completions.create(model=TINY, messages=user("hi"), max_tokens=2, **change)
        else:
            client.completions.create(model=TINY, prompt="hi", max_tokens=2, **change)
    assert raised.value.body["param"] == param and raised.value.body["type"] == "invalid_request_error"


def test_databricks_invocations_carry_logprobs(api_url: str):
    """Databricks' serving endpoints take the same fields (its errors in its own shape)."""
    url = f"{api_url}/serving-endpoints/{TINY}/invocations"
    body = requests.post(url, json={"prompt": "hi", "max_tokens": 2, "logprobs": 1}, timeout=60).json()
    assert len(body["choices"][0]["logprobs"]["tokens"]) == 2
    chat = {"messages": user("hi"), "max_tokens": 2, "logprobs": True, "top_logprobs": 2}
    content = requests.post(url, json=chat, timeout=60).json()["choices"][0]["logprobs"]["content"]
    assert len(content) == 2 and all(len(entry["top_logprobs"]) == 2 for entry in content)
    refused = requests.post(url, json={**chat, "top_logprobs": 21}, timeout=60)
    assert refused.status_code == 400 and refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_static_batch_engine_refuses_logprobs_clearly(model_dir):
    """onnxruntime-genai's engine (the GPU path, run here on the CPU) cannot report them: a 400
    naming logprobs before the job starts, never a silent answer without them."""
    registry = ModelRegistry(Settings(model_dir=model_dir, intra_op_threads=1), "cpu")
    loaded = registry.get(TINY)
    model = og.Model(provider_config(str(model_dir / TINY), "cpu", intra_op_threads=1))
    engine = StaticBatchEngine(model, og.Tokenizer(model), loaded.engine.eos_ids, 0, 1, 0, "t")
    static = LoadedModel(
        TINY,
        loaded.tokenizer,
        loaded.chat_template,
        loaded.context_length,
        engine,
        loaded.model_context,
        loaded.vocab_size,
    )
    try:
        job = GenerationJob(job_id="j", model=TINY, messages=user("hi"), logprobs=0)
        with pytest.raises(JobRejected) as raised:
            static.prepare(job, emit=lambda event: None)
        assert raised.value.info.status == 400 and raised.value.info.param == "logprobs"
        assert static.prepare(job.model_copy(update={"logprobs": None}), emit=lambda event: None).logprobs is None
    finally:
        engine.stop()
        registry.close()


def test_text_answer_with_tools_offered_has_its_contents_logprobs(client: OpenAI):
    completion = client.chat.completions.create(
        model=SMOLLM2,
        messages=QUESTION,
        tools=[WEATHER],
        tool_choice="auto",
        max_tokens=12,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    (choice,) = completion.choices
    assert choice.message.tool_calls is None and choice.message.content
    for entry in choice.logprobs.content:
        assert_alternatives(entry, 3, greedy=True)
    assert joined(choice.logprobs.content) == choice.message.content


def test_a_required_tool_call_has_no_content_logprobs(client: OpenAI):
    asked = {
        "model": SMOLLM2,
        "messages": user("What is the weather in Paris?"),
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 60,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 2,
    }
    (choice,) = client.chat.completions.create(**asked).choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.logprobs.content is None and choice.logprobs.refusal is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)
    chunks = [c for c in client.chat.completions.create(**asked, stream=True) if c.choices]
    assert any(c.choices[0].delta.tool_calls for c in chunks) and streamed_entries(chunks) == []


def test_streamed_logprobs_with_tools_equal_the_whole_answers(client: OpenAI):
    asked = {
        "model": SMOLLM2,
        "messages": QUESTION,
        "tools": [WEATHER],
        "max_tokens": 10,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 2,
    }
    whole = client.chat.completions.create(**asked).choices[0]
    streamed = streamed_entries([c for c in client.chat.completions.create(**asked, stream=True) if c.choices])
    assert whole.logprobs.content and [e.token for e in streamed] == [e.token for e in whole.logprobs.content]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in whole.logprobs.content], abs=1e-4)
    assert [[t.token for t in e.top_logprobs] for e in streamed] == [
        [t.token for t in e.top_logprobs] for e in whole.logprobs.content
    ]


def test_a_json_schema_answer_has_logprobs_for_all_its_tokens(client: OpenAI):
    """The content is the JSON: every token of it has an entry (values of the raw distribution, so
    a token the schema forced need not be among the most likely)."""
    completion = client.chat.completions.create(
        model=SMOLLM2,
        messages=user("What is the capital of France? Answer in JSON."),
        max_tokens=40,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": CAPITAL, "strict": True}},
    )
    (choice,) = completion.choices
    assert choice.finish_reason == "stop" and isinstance(json.loads(choice.message.content)["city"], str)
    assert joined(choice.logprobs.content) == choice.message.content
    assert len(choice.logprobs.content) == completion.usage.completion_tokens
    for entry in choice.logprobs.content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob >= FLOOR


def test_a_row_without_logprobs_beside_one_with_them_answers_as_alone(chat, api_url: str):
    body = {"model": TINY, "messages": user("hi"), "max_tokens": 8, "temperature": 0}
    alone = chat(body).json()["choices"][0]
    long_id = chat({**body, "max_tokens": 8000, "logprobs": True, "top_logprobs": 5}, headers=ASYNC).json()["id"]
    wait_for_first_token(api_url, long_id)  # decoding: its row is in the batch
    response = chat(body)
    requests.delete(f"{api_url}/v1/jobs/{long_id}", timeout=10)
    job = requests.get(f"{api_url}/v1/jobs/{response.headers['X-Request-Id']}", timeout=10).json()
    assert job["batch_size"] == 2  # decoded together with the row computing logprobs
    (choice,) = response.json()["choices"]
    assert choice["logprobs"] is None
    assert (choice["message"], choice["finish_reason"]) == (alone["message"], alone["finish_reason"])


def test_a_row_with_logprobs_beside_one_without_them_has_its_own(chat, api_url: str):
    body = {"model": TINY, "messages": user("hi"), "max_tokens": 8, "temperature": 0, "logprobs": True}
    alone = chat({**body, "top_logprobs": 3}).json()["choices"][0]
    long_id = chat({**body, "max_tokens": 8000, "logprobs": False}, headers=ASYNC).json()["id"]
    wait_for_first_token(api_url, long_id)  # decoding: its row is in the batch
    response = chat({**body, "top_logprobs": 3})
    requests.delete(f"{api_url}/v1/jobs/{long_id}", timeout=10)
    job = requests.get(f"{api_url}/v1/jobs/{response.headers['X-Request-Id']}", timeout=10).json()
    assert job["batch_size"] == 2
    (choice,) = response.json()["choices"]
    assert choice["message"] == alone["message"]
    entries, alone_entries = choice["logprobs"]["content"], alone["logprobs"]["content"]
    assert [e["token"] for e in entries] == [e["token"] for e in alone_entries]
    assert [e["logprob"] for e in entries] == pytest.approx([e["logprob"] for e in alone_entries], abs=1e-4)
    assert [len(e["top_logprobs"]) for e in entries] == [3] * len(entries)
