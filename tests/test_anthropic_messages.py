"""The `anthropic` SDK, unchanged, against Ladle's Messages API with API keys; Anthropic's errors,
streams and models list; the OpenAI shape of the models routes without `anthropic-version`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import anthropic
import jsonschema
import openai
import pytest
import requests

from api.anthropic import stream as anthropic_stream
from cli.embedded_redis import EmbeddedRedis
from contracts import keys, workers
from contracts.queues import queue_for_device
from contracts.redis_connection import redis_client
from contracts.settings import Settings
from contracts.workers import WorkerInfo
from tests.helpers import MINILM, SMOLLM2, TINY, sse_frames
from tests.stack import ApiServer

KEY = "sk-ant-test-key"
OTHER_KEY = "sk-ant-other-key"
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
# No arguments: even the tiny random model's call of it closes at once.
CLOCK = {
    "name": "current_time",
    "description": "The time now.",
    "input_schema": {"type": "object", "properties": {}, "additionalProperties": False},
}
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
# The SDK has no sampling arguments any more (newer Claude models take none): they go in the body.
GREEDY = {"extra_body": {"temperature": 0}}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.fixture(scope="module")
def base(settings: Settings, api_url: str) -> Iterator[str]:
    """An API with two keys, on the shared Redis and workers (`api_url` starts them)."""
    server = ApiServer(settings.with_overrides(api_keys=(KEY, OTHER_KEY), rate_limit="off"))
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def client(base: str) -> anthropic.Anthropic:
    """The SDK as users configure it: base URL and key (sent as x-api-key)."""
    return anthropic.Anthropic(base_url=base, api_key=KEY, max_retries=0)


def text_of(message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def test_create_answers_with_a_message(client: anthropic.Anthropic):
    raw = client.messages.with_raw_response.create(
        model=SMOLLM2,
        max_tokens=20,
        **GREEDY,
        messages=CAPITAL,
        thinking={"type": "enabled", "budget_tokens": 1024},  # accepted; these models do not think
        metadata={"user_id": "user-1"},
    )
    message = raw.parse()
    assert "Paris" in text_of(message)
    assert [block.type for block in message.content] == ["text"]
    assert message.type == "message" and message.role == "assistant" and message.model == SMOLLM2
    assert message.stop_reason in ("end_turn", "max_tokens") and message.stop_sequence is None
    assert message.id == f"msg_{raw.headers['request-id']}" == f"msg_{raw.headers['x-request-id']}"
    assert message.usage.input_tokens + message.usage.cache_read_input_tokens > 10
    assert 0 < message.usage.output_tokens <= 20
    assert message.usage.cache_creation_input_tokens == 0


def test_max_tokens_ends_the_answer(client: anthropic.Anthropic):
    message = client.messages.create(model=TINY, max_tokens=3, messages=CAPITAL)
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


def test_cached_prefix_counts_as_cache_read(client: anthropic.Anthropic):
    """The second ask of a long prompt reads its prefix from the prefix cache: Anthropic's cache_read_input_tokens."""
    system = "You are a helpful assistant. " * 40
    first = client.messages.create(model=TINY, max_tokens=2, system=system, messages=CAPITAL).usage
    second = client.messages.create(model=TINY, max_tokens=2, system=system, messages=CAPITAL).usage
    total = first.input_tokens + first.cache_read_input_tokens
    assert second.input_tokens + second.cache_read_input_tokens == total
    assert second.cache_read_input_tokens > 0


def test_stream_accumulates_to_the_whole_answer(client: anthropic.Anthropic):
    whole = client.messages.create(model=SMOLLM2, max_tokens=16, **GREEDY, messages=CAPITAL)
    with client.messages.stream(model=SMOLLM2, max_tokens=16, **GREEDY, messages=CAPITAL) as stream:
        streamed_text = "".join(stream.text_stream)
        final = stream.get_final_message()  # the SDK's accumulator raises on events out of order
    assert streamed_text == text_of(final) == text_of(whole)
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens + final.usage.cache_read_input_tokens == (
        whole.usage.input_tokens + whole.usage.cache_read_input_tokens
    )
    assert final.id.startswith("msg_")


def test_stream_wire_format(base: str):
    body = {"model": TINY, "max_tokens": 4, "stream": True, "messages": CAPITAL}
    with requests.post(
        f"{base}/v1/messages", json=body, headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}, stream=True
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = list(sse_frames(response))
    names = [frame["event"] for frame in frames]
    assert all(frame["data"]["type"] == frame["event"] for frame in frames)
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    blocks = [n for n in names if n.startswith("content_block")]
    assert blocks[0] == "content_block_start" and blocks[-1] == "content_block_stop"
    assert set(blocks[1:-1]) == {"content_block_delta"}
    start = frames[0]["data"]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["model"] == TINY
    delta = frames[-2]["data"]
    assert delta["delta"]["stop_reason"] == "max_tokens" and delta["usage"]["output_tokens"] == 4


def test_tool_use_and_tool_result_round_trip(client: anthropic.Anthropic):
    asked = client.messages.create(
        model=SMOLLM2,
        max_tokens=60,
        **GREEDY,
        messages=WEATHER_QUESTION,
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},  # a 135M model repeats calls
    )
    assert asked.stop_reason == "tool_use"
    calls = [block for block in asked.content if block.type == "tool_use"]
    assert calls and all(call.name == "get_weather" and call.id.startswith("toolu_") for call in calls)
    for call in calls:
        jsonschema.validate(call.input, WEATHER["input_schema"])  # constrained decoding: always valid
    results = [
        {"type": "tool_result", "tool_use_id": call.id, "content": [{"type": "text", "text": "Sunny, 24 °C."}]}
        for call in calls
    ]
    answered = client.messages.create(
        model=SMOLLM2,
        max_tokens=30,
        **GREEDY,
        tools=[WEATHER],
        messages=[
            *WEATHER_QUESTION,
            {"role": "assistant", "content": asked.content},
            {"role": "user", "content": results},
        ],
    )
    assert answered.content and answered.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert answered.usage.input_tokens + answered.usage.cache_read_input_tokens > (
        asked.usage.input_tokens + asked.usage.cache_read_input_tokens
    )


def test_tool_choice_tool_none_and_no_parallel_calls(client: anthropic.Anthropic):
    named = client.messages.create(
        model=TINY,
        max_tokens=40,
        messages=WEATHER_QUESTION,
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "tool", "name": "current_time"},
    )
    assert [(block.type, block.name, block.input) for block in named.content] == [("tool_use", "current_time", {})]
    assert named.stop_reason == "tool_use"
    single = client.messages.create(
        model=TINY,
        max_tokens=80,
        messages=WEATHER_QUESTION,
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert len([block for block in single.content if block.type == "tool_use"]) == 1
    refused = client.messages.create(
        model=TINY, max_tokens=5, messages=WEATHER_QUESTION, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert [block.type for block in refused.content] == ["text"] and refused.stop_reason == "max_tokens"


def test_streamed_tool_use_equals_the_whole_answer(client: anthropic.Anthropic):
    request = {"model": SMOLLM2, "max_tokens": 60, **GREEDY, "messages": WEATHER_QUESTION, "tools": [WEATHER]}
    whole = client.messages.create(**request, tool_choice={"type": "tool", "name": "get_weather"})
    with client.messages.stream(**request, tool_choice={"type": "tool", "name": "get_weather"}) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert any(e.type == "content_block_delta" and e.delta.type == "input_json_delta" for e in events)
    assert [(b.type, b.name, b.input) for b in final.content] == [(b.type, b.name, b.input) for b in whole.content]
    assert final.stop_reason == "tool_use"


def test_stop_sequence_cuts_the_answer(client: anthropic.Anthropic):
    request = {"model": SMOLLM2, "max_tokens": 30, **GREEDY, "messages": CAPITAL}
    free = text_of(client.messages.create(**request))
    stop = free.split()[2]  # a word the greedy answer is bound to write again
    cut = client.messages.create(**request, stop_sequences=["never-written", stop])
    assert text_of(cut) == free[: free.index(stop)]
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", stop)
    with client.messages.stream(**request, stop_sequences=["never-written", stop]) as stream:
        streamed = stream.get_final_message()
    assert (streamed.stop_reason, streamed.stop_sequence) == ("stop_sequence", stop)


def test_count_tokens_equals_the_prompt_a_message_reads(client: anthropic.Anthropic, base: str):
    system = "You are a weather bot."
    counted = client.messages.count_tokens(model=TINY, system=system, messages=WEATHER_QUESTION, tools=[WEATHER, CLOCK])
    message = client.messages.create(
        model=TINY, max_tokens=1, system=system, messages=WEATHER_QUESTION, tools=[WEATHER, CLOCK]
    )
    assert counted.input_tokens == message.usage.input_tokens + message.usage.cache_read_input_tokens
    chat = requests.post(
        f"{base}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={
            "model": TINY,
            "max_tokens": 1,
            "messages": [{"role": "system", "content": system}, *WEATHER_QUESTION],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]},
                }
                for t in (WEATHER, CLOCK)
            ],
        },
        timeout=60,
    ).json()
    assert counted.input_tokens == chat["usage"]["prompt_tokens"]
    without_tools = client.messages.count_tokens(model=TINY, system=system, messages=WEATHER_QUESTION)
    assert 0 < without_tools.input_tokens < counted.input_tokens


def test_claude_code_shaped_request(client: anthropic.Anthropic):
    """What Claude Code sends: beta route and headers, system blocks with cache_control, a draft-07 tool
    schema, fields Ladle ignores; streamed."""
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"command": {"type": "string", "maxLength": 40}, "timeout": {"type": "number"}},
        "required": ["command"],
        "additionalProperties": False,
    }
    with client.beta.messages.stream(
        model=TINY,
        max_tokens=8,
        betas=["interleaved-thinking-2025-05-14"],
        system=[
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be concise."},
        ],
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "list files", "cache_control": {"type": "ephemeral"}}],
            }
        ],
        tools=[{"name": "Bash", "description": "Run a command.", "input_schema": schema}],
        metadata={"user_id": "user_abc_account_def_session_ghi"},
        extra_body={"temperature": 1, "context_management": {"edits": []}},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason in ("end_turn", "max_tokens", "tool_use")
    for block in final.content:
        if block.type == "tool_use":
            jsonschema.validate(block.input, schema)


def error_of(raised: pytest.ExceptionInfo) -> dict:
    body = raised.value.body
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    return body["error"]


def test_errors_are_anthropics(client: anthropic.Anthropic, base: str):
    post_body = {"model": TINY, "messages": CAPITAL}
    with pytest.raises(anthropic.BadRequestError) as raised:  # the SDK itself requires max_tokens
        client.post("/v1/messages", cast_to=anthropic.types.Message, body=post_body)
    assert error_of(raised)["type"] == "invalid_request_error" and "max_tokens" in error_of(raised)["message"]
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    with pytest.raises(anthropic.BadRequestError, match="text only"):
        client.messages.create(model=TINY, max_tokens=5, messages=[{"role": "user", "content": [image]}])
    with pytest.raises(anthropic.NotFoundError) as raised:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=CAPITAL)
    assert error_of(raised)["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError, match="context length"):  # the SDK refuses it unstreamed
        client.post("/v1/messages", cast_to=anthropic.types.Message, body={**post_body, "max_tokens": 10**6})
    with pytest.raises(anthropic.BadRequestError, match="mcp_servers"):
        client.messages.create(
            model=TINY,
            max_tokens=5,
            messages=CAPITAL,
            extra_body={"mcp_servers": [{"type": "url", "url": "https://x"}]},
        )
    with pytest.raises(anthropic.BadRequestError, match="wrong_model_type|not a generation model"):
        client.messages.count_tokens(model=MINILM, messages=CAPITAL)
    # Any path under /v1/messages answers in Anthropic's shape, routed or not.
    missing = requests.post(f"{base}/v1/messages/no-such-route", json={}, headers={"x-api-key": KEY}, timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


def test_keys_x_api_key_bearer_and_isolation(client: anthropic.Anthropic, base: str):
    with pytest.raises(anthropic.AuthenticationError) as raised:
        anthropic.Anthropic(base_url=base, api_key="wrong", max_retries=0).messages.count_tokens(
            model=TINY, messages=CAPITAL
        )
    assert error_of(raised)["type"] == "authentication_error"
    bearer = anthropic.Anthropic(base_url=base, auth_token=OTHER_KEY, max_retries=0)
    assert bearer.messages.count_tokens(model=TINY, messages=CAPITAL).input_tokens > 0
    # A job is its key's: the message's job is visible to the key that sent it (x-api-key) only.
    job_id = client.messages.create(model=TINY, max_tokens=1, messages=CAPITAL).id.removeprefix("msg_")
    mine = requests.get(f"{base}/v1/jobs/{job_id}", headers={"x-api-key": KEY}, timeout=30)
    assert mine.status_code == 200 and mine.json()["status"] == "succeeded"
    theirs = requests.get(f"{base}/v1/jobs/{job_id}", headers={"x-api-key": OTHER_KEY}, timeout=30)
    assert theirs.status_code == 404


def test_rate_limit_is_a_429_with_retry_after(settings: Settings, api_url: str):
    server = ApiServer(settings.with_overrides(api_keys=("sk-ant-limited",), rate_limit="1/minute"))
    try:
        limited = anthropic.Anthropic(base_url=server.url, api_key="sk-ant-limited", max_retries=0)
        assert limited.messages.count_tokens(model=TINY, messages=CAPITAL).input_tokens > 0
        with pytest.raises(anthropic.RateLimitError) as raised:
            limited.messages.count_tokens(model=TINY, messages=CAPITAL)
        assert error_of(raised)["type"] == "rate_limit_error"
        assert int(raised.value.response.headers["retry-after"]) >= 1
    finally:
        server.stop()


def test_job_cancelled_mid_stream_is_an_error_event(client: anthropic.Anthropic, base: str):
    with pytest.raises(anthropic.APIStatusError) as raised:  # raised while the stream is read
        with client.messages.stream(model=TINY, max_tokens=4000, messages=CAPITAL) as stream:
            for event in stream:
                if event.type == "message_start":
                    job_id = event.message.id.removeprefix("msg_")
                elif event.type == "content_block_start":  # the job is generating: cancel it
                    requests.delete(f"{base}/v1/jobs/{job_id}", headers={"x-api-key": KEY}, timeout=30)
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"] == {"type": "invalid_request_error", "message": "The job was cancelled."}


def test_respond_async_answers_with_the_job(base: str):
    body = {"model": TINY, "max_tokens": 2, "messages": CAPITAL}
    response = requests.post(
        f"{base}/v1/messages", json=body, headers={"x-api-key": KEY, "Prefer": "respond-async"}, timeout=30
    )
    assert response.status_code == 202 and response.json()["object"] == "job"


def test_models_in_anthropics_shape(client: anthropic.Anthropic):
    models = list(client.models.list())
    ids = [model.id for model in models]
    assert SMOLLM2 in ids and TINY in ids and MINILM not in ids  # chat models only
    assert all(model.type == "model" and model.created_at.year >= 2024 for model in models)
    assert [model.id for model in client.models.list(limit=1)] == ids  # the SDK follows has_more / last_id
    page = client.models.list(limit=1)
    assert page.has_more and page.first_id == page.last_id == ids[0]
    one = client.models.retrieve(SMOLLM2)
    assert (one.id, one.display_name, one.type) == (SMOLLM2, SMOLLM2, "model")
    assert one.max_input_tokens > 1000
    with pytest.raises(anthropic.NotFoundError) as raised:
        client.models.retrieve("claude-opus-4-1")
    assert error_of(raised)["type"] == "not_found_error"


def test_models_in_openais_shape_without_anthropic_version(base: str):
    headers = {"Authorization": f"Bearer {KEY}"}
    listed = requests.get(f"{base}/v1/models", headers=headers, timeout=30).json()
    assert listed["object"] == "list" and {m["id"] for m in listed["data"]} >= {SMOLLM2, TINY, MINILM}
    sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
    model = sdk.models.retrieve(TINY)
    assert (model.id, model.object, model.owned_by) == (TINY, "model", "ladle")
    listed_tiny = next(m for m in listed["data"] if m["id"] == TINY)
    assert (model.created, model.owned_by) == (listed_tiny["created"], listed_tiny["owned_by"])
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.models.retrieve("nope")
    assert raised.value.body["code"] == "model_not_found" and raised.value.body["param"] == "model"
    foundry = requests.get(f"{base}/openai/models/{MINILM}", headers=headers, timeout=30)
    assert foundry.json()["id"] == MINILM
    unknown = requests.get(f"{base}/openai/models/nope", headers=headers, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


@pytest.fixture
def queue_without_worker(settings: Settings, tmp_path) -> Iterator[tuple[str, object]]:
    """An API on a private Redis where a (fake) worker advertises the CPU queue but never takes a job."""
    redis_server = EmbeddedRedis(tmp_path / "redis", persist=False)
    url = redis_server.start()
    client = redis_client(settings.with_overrides(redis_url=url))
    fake = WorkerInfo(
        name="fake@nowhere",
        pid=1,
        seen_at=time.time(),
        device="cpu",
        lane="compute",
        queues=[queue_for_device("cpu")],
        execution_providers=["cpu"],
        capacity=1,
    )
    workers.publish(client, fake, ttl_s=600)
    server = ApiServer(settings.with_overrides(redis_url=url, api_keys=(), rate_limit="off"))
    yield server.url, client
    server.stop()
    redis_server.stop()


def test_queued_stream_pings_and_its_client_leaving_cancels_it(queue_without_worker, monkeypatch):
    url, redis = queue_without_worker
    monkeypatch.setattr(anthropic_stream, "PING_INTERVAL_S", 0.2)
    body = {"model": TINY, "max_tokens": 5, "stream": True, "messages": CAPITAL}
    with requests.post(f"{url}/v1/messages", json=body, stream=True, timeout=30) as response:
        assert response.status_code == 200
        job_id = response.headers["request-id"]
        frames = sse_frames(response)
        seen = [next(frames)["event"] for _ in range(3)]
    assert seen == ["message_start", "ping", "ping"]
    deadline = time.monotonic() + 10
    while not redis.exists(keys.job_cancel_key(job_id)):
        assert time.monotonic() < deadline, "the job of a stream whose client left was not cancelled"
        time.sleep(0.05)


def test_no_worker_is_overloaded(settings: Settings, tmp_path):
    redis_server = EmbeddedRedis(tmp_path / "redis", persist=False)
    server = ApiServer(settings.with_overrides(redis_url=redis_server.start(), worker_wait_s=0.5))
    try:
        sdk = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
        with pytest.raises(anthropic.ServiceUnavailableError) as raised:
            sdk.messages.create(model=TINY, max_tokens=2, messages=CAPITAL)
        assert error_of(raised)["type"] == "overloaded_error"
        assert raised.value.response.headers["retry-after"] == "10"
    finally:
        server.stop()
        redis_server.stop()


def test_prefill_is_refused(client: anthropic.Anthropic):
    with pytest.raises(anthropic.BadRequestError, match="Prefill"):
        client.messages.create(
            model=TINY, max_tokens=5, messages=[*CAPITAL, {"role": "assistant", "content": "The capital is"}]
        )


def test_output_format_constrains_the_answer(client: anthropic.Anthropic):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    }
    message = client.messages.create(
        model=SMOLLM2,
        max_tokens=40,
        **GREEDY,
        messages=CAPITAL,
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    jsonschema.validate(json.loads(text_of(message)), schema)
