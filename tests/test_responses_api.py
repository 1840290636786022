"""OpenAI's Responses API (`/v1/responses`) through the official openai SDK and openai-agents, unchanged,
against the real stack: answers, streamed events, structured output, function calls across turns,
stored state (retrieve, input items, delete) shared by API processes, API-key isolation and errors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import agents
import pytest
import redis
import requests
from openai import AsyncOpenAI, BadRequestError, NotFoundError, OpenAI
from pydantic import BaseModel

from api.responses.store import ResponseStore, StoredResponse
from contracts.settings import Settings
from tests.helpers import SMOLLM2, TINY, assert_error, sse_events, sse_frames
from tests.stack import ApiServer

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
QUESTION = "What is the capital of France?"
KEY_A, KEY_B = "responses-key-a", "responses-key-b"


@pytest.fixture(scope="module")
def client(api_url: str) -> OpenAI:
    return OpenAI(base_url=f"{api_url}/v1", api_key="x", max_retries=0)


@pytest.fixture(scope="module")
def keyed_url(settings: Settings, api_url: str) -> Iterator[str]:
    """An API with two keys, on the shared Redis and workers (`api_url` starts them)."""
    server = ApiServer(settings.with_overrides(api_keys=(KEY_A, KEY_B), rate_limit="off"))
    yield server.url
    server.stop()


def _small(client: OpenAI, **overrides):
    """A short TINY response (plumbing, not answers)."""
    return client.responses.create(**{"model": TINY, "input": "hi", "max_output_tokens": 4, **overrides})


def test_create_answers_with_text_and_usage(client: OpenAI):
    response = client.responses.create(model=SMOLLM2, input=QUESTION, max_output_tokens=20, temperature=0)
    assert "Paris" in response.output_text
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.error is None and response.incomplete_details is None
    assert response.model == SMOLLM2
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].annotations == []
    usage = response.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert response.max_output_tokens == 20 and response.temperature == 0
    assert response.service_tier == "default" and response.store is True and response.background is False


def test_response_echoes_the_request_parameters(client: OpenAI):
    response = _small(
        client,
        instructions="Be brief.",
        top_p=0.9,
        metadata={"ticket": "42"},
        reasoning={"effort": "low"},
        text={"verbosity": "low"},
        truncation="disabled",
        user="u-1",
        prompt_cache_key="k",
        safety_identifier="s",
        include=["message.output_text.logprobs"],
    )
    assert response.instructions == "Be brief."
    assert response.top_p == 0.9 and response.metadata == {"ticket": "42"}
    assert response.reasoning.effort == "low"
    assert response.text.verbosity == "low" and response.text.format.type == "text"
    assert (response.user, response.prompt_cache_key, response.safety_identifier) == ("u-1", "k", "s")
    assert response.tool_choice == "auto" and response.tools == [] and response.parallel_tool_calls is True


def test_max_output_tokens_makes_the_response_incomplete(client: OpenAI):
    response = _small(client, max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"
    assert response.usage.output_tokens == 3


def test_cached_prompt_tokens_are_reported(client: OpenAI):
    rules = (
        "You are a careful assistant. Answer in one short sentence, name one thing only, use plain words, "
        "never add a list, never explain, and never ask a question back."
    )
    _small(client, model=SMOLLM2, instructions=rules, input="Name a color.")
    again = _small(client, model=SMOLLM2, instructions=rules, input="Name a fruit.")
    assert again.usage.input_tokens_details.cached_tokens > 0


def test_stream_follows_openai_event_order(client: OpenAI):
    with client.responses.stream(model=SMOLLM2, input=QUESTION, max_output_tokens=20, temperature=0) as stream:
        events = list(stream)  # the SDK's helper raises on an event out of order
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == final.output_text
    assert "Paris" in final.output_text and final.status == "completed"
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens


def test_streamed_and_stored_response_are_the_same(client: OpenAI, api_url: str):
    with requests.post(
        f"{api_url}/v1/responses",
        json={"model": TINY, "input": "hi", "max_output_tokens": 5, "stream": True},
        stream=True,
        timeout=60,
    ) as streamed:
        assert streamed.headers["Content-Type"].startswith("text/event-stream")
        frames = sse_events(streamed)
    assert all(frame["event"] == frame["data"]["type"] for frame in frames)
    last = frames[-1]["data"]
    assert last["type"] == "response.incomplete"
    stored = client.responses.retrieve(last["response"]["id"])
    assert stored.model_dump(mode="json") == client.responses.retrieve(stored.id).model_dump(mode="json")
    assert stored.output[0].model_dump(mode="json") == last["response"]["output"][0] | {"phase": None}
    assert stored.usage.output_tokens == 5


def test_parse_returns_the_pydantic_model(client: OpenAI):
    class Capital(BaseModel):
        country: str
        city: str

    response = client.responses.parse(
        model=SMOLLM2,
        input="France's capital city is Paris. Give the country and its capital as JSON.",
        text_format=Capital,
        max_output_tokens=60,
        temperature=0,
    )
    assert isinstance(response.output_parsed, Capital)
    assert response.text.format.type == "json_schema" and response.text.format.name == "Capital"


def test_json_object_format_answers_json(client: OpenAI):
    response = client.responses.create(
        model=SMOLLM2,
        input='Reply with a JSON object with the key "answer" saying hello.',
        text={"format": {"type": "json_object"}},
        max_output_tokens=60,
        temperature=0,
    )
    assert response.status == "completed" and response.text.format.type == "json_object"
    assert isinstance(json.loads(response.output_text), dict)


def test_function_call_round_trip_through_previous_response_id(client: OpenAI):
    first = client.responses.create(
        model=SMOLLM2,
        input="What is the weather in Paris?",
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=40,
        temperature=0,
    )
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_") and call.id.startswith("fc_")
    assert set(json.loads(call.arguments)) == {"city"}
    assert first.tools[0].name == "get_weather" and first.tool_choice.name == "get_weather"

    second = client.responses.create(
        model=SMOLLM2,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 22 degrees"}],
        tools=[WEATHER_TOOL],
        max_output_tokens=40,
        temperature=0,
    )
    assert second.status == "completed" and second.previous_response_id == first.id
    assert second.output_text
    seen = list(client.responses.input_items.list(second.id, order="asc"))
    assert [item.type for item in seen] == ["message", "function_call", "function_call_output"]
    assert seen[1].call_id == seen[2].call_id == call.call_id


def test_streamed_function_call_events(client: OpenAI):
    with client.responses.stream(
        model=SMOLLM2,
        input="What is the weather in Paris?",
        tools=[WEATHER_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,  # one call, then the answer ends (not cut by max_output_tokens)
        max_output_tokens=40,
        temperature=0,
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert "response.output_text.delta" not in types
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.arguments == ""
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    [call] = final.output
    assert arguments == done.arguments == call.arguments and json.loads(arguments)["city"]
    assert types.index("response.function_call_arguments.done") < types.index("response.output_item.done")
    assert types[-1] == "response.completed" and call.call_id == added.item.call_id


def test_tools_ladle_does_not_run_are_left_out_and_named(client: OpenAI):
    raw = client.responses.with_raw_response.create(
        model=TINY,
        input="hi",
        max_output_tokens=4,
        tools=[
            {"type": "web_search"},
            {"type": "file_search", "vector_store_ids": ["vs_1"]},
            WEATHER_TOOL,
            {"type": "web_search"},
        ],
    )
    assert raw.headers["X-Ladle-Tools-Left-Out"] == "web_search,file_search"
    response = raw.parse()
    assert [tool.type for tool in response.tools] == ["web_search", "file_search", "function", "web_search"]
    plain = _small(client)
    assert "X-Ladle-Tools-Left-Out" not in client.responses.with_raw_response.retrieve(plain.id).headers


def test_truncation_disabled_rejects_input_past_the_context(client: OpenAI, api_url: str):
    too_long = "hello " * 9000  # TINY's context is 8192 tokens
    response = requests.post(
        f"{api_url}/v1/responses", json={"model": TINY, "input": too_long, "max_output_tokens": 4}, timeout=60
    )
    assert_error(response, 400, "input", "context_length_exceeded")
    # A rejected request makes no response.
    assert (
        requests.get(f"{api_url}/v1/responses/resp_{response.headers['X-Request-Id']}", timeout=10).status_code == 404
    )


def test_truncation_auto_drops_the_oldest_items(client: OpenAI):
    response = client.responses.create(
        model=TINY,
        input=[
            {"role": "user", "content": "hello " * 9000},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "hi"},
        ],
        truncation="auto",
        max_output_tokens=4,
    )
    assert response.status == "incomplete" and response.truncation == "auto"
    assert response.usage.input_tokens < 100


def test_retrieve_returns_the_stored_response(client: OpenAI):
    created = _small(client, metadata={"a": "b"})
    fetched = client.responses.retrieve(created.id)
    assert fetched.model_dump(mode="json") == created.model_dump(mode="json")


def test_input_items_are_listed_in_order_a_page_at_a_time(client: OpenAI):
    given = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(5)]
    response = _small(client, input=given)
    newest_first = client.responses.input_items.list(response.id)
    assert [item.content[0].text for item in newest_first.data] == [f"turn {i}" for i in reversed(range(5))]
    first_page = client.responses.input_items.list(response.id, order="asc", limit=2)
    assert [item.content[0].text for item in first_page.data] == ["turn 0", "turn 1"]
    assert first_page.has_more and first_page.first_id == first_page.data[0].id
    assert first_page.last_id == first_page.data[1].id
    second_page = client.responses.input_items.list(response.id, order="asc", limit=2, after=first_page.last_id)
    assert [item.content[0].text for item in second_page.data] == ["turn 2", "turn 3"]
    everything = list(client.responses.input_items.list(response.id, order="asc", limit=2))
    assert [item.content[0].text for item in everything] == [f"turn {i}" for i in range(5)]
    assert len({item.id for item in everything}) == 5
    assert [item.role for item in everything] == ["user", "assistant", "user", "assistant", "user"]


def test_delete_then_retrieve_is_not_found(client: OpenAI, api_url: str):
    response = _small(client)
    deleted = requests.delete(f"{api_url}/v1/responses/{response.id}", timeout=10)
    assert deleted.json() == {"id": response.id, "object": "response.deleted", "deleted": True}
    with pytest.raises(NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(NotFoundError) as raised:
        _small(client, previous_response_id=response.id)
    assert raised.value.body["param"] == "previous_response_id"
    assert requests.delete(f"{api_url}/v1/responses/{response.id}", timeout=10).status_code == 404


def test_a_response_too_large_to_store_whole_cannot_be_continued(client: OpenAI, settings: Settings, api_url: str):
    store = ResponseStore(redis.Redis.from_url(settings.redis_url), ttl_s=600, max_bytes=2000)
    big = [{"id": "msg_big", "type": "message", "role": "user", "status": "completed", "content": "x" * 3000}]
    fields = _small(client).model_dump(mode="json", include={"model", "store", "tools", "text", "metadata"})
    stored = store.create(StoredResponse(id="resp_toolarge", job_id="toolarge", created_at=1, fields=fields, input=big))
    assert stored.context_dropped and stored.input == []
    assert store.get("resp_toolarge").context_dropped
    continued = requests.post(
        f"{api_url}/v1/responses",
        json={"model": TINY, "input": "hi", "previous_response_id": "resp_toolarge"},
        timeout=30,
    )
    assert_error(continued, 400, "previous_response_id", "previous_response_too_large")
    listed = requests.get(f"{api_url}/v1/responses/resp_toolarge/input_items", timeout=10)
    assert_error(listed, 400, "response_id", "input_too_large")


def test_store_false_keeps_nothing(client: OpenAI):
    response = _small(client, store=False)
    assert response.store is False and response.status == "incomplete"
    with pytest.raises(NotFoundError):
        client.responses.retrieve(response.id)


def test_input_tokens_count_what_usage_reports(client: OpenAI):
    request = {"model": TINY, "input": "How many tokens is this?", "instructions": "Answer briefly."}
    counted = client.responses.input_tokens.count(**request)
    assert counted.object == "response.input_tokens"
    assert counted.input_tokens == _small(client, **request).usage.input_tokens
    with_tools = client.responses.input_tokens.count(**request, tools=[WEATHER_TOOL])
    assert with_tools.input_tokens == _small(client, **request, tools=[WEATHER_TOOL]).usage.input_tokens
    assert with_tools.input_tokens > counted.input_tokens  # the tools are described in the prompt


def test_instructions_are_not_carried_to_the_next_turn(client: OpenAI):
    first = _small(client, instructions="Always answer in French.", input="hello")
    continued = client.responses.input_tokens.count(model=TINY, previous_response_id=first.id, input="again")
    spelled_out = client.responses.input_tokens.count(
        model=TINY,
        input=[
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "again"},
        ],
    )
    assert continued.input_tokens == spelled_out.input_tokens
    second = _small(client, previous_response_id=first.id, input="again")
    assert second.instructions is None


def test_cancel_and_stream_back_need_background_mode(client: OpenAI, api_url: str):
    response = _small(client)
    with pytest.raises(BadRequestError) as raised:
        client.responses.cancel(response.id)
    assert "background=true" in raised.value.message
    streamed = requests.get(f"{api_url}/v1/responses/{response.id}?stream=true", timeout=10)
    assert_error(streamed, 400, "stream")


def _until_ended(client: OpenAI, response_id: str, timeout_s: float = 60):
    """Poll a background response until it has ended; returns it."""
    deadline = time.monotonic() + timeout_s
    while (response := client.responses.retrieve(response_id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, f"still {response.status}"
        time.sleep(0.05)
    return response


def test_background_response_is_polled_until_it_ends(client: OpenAI):
    queued = _small(client, background=True)
    assert queued.status == "queued" and queued.background is True and queued.output == []
    ended = _until_ended(client, queued.id)
    assert ended.status == "incomplete" and ended.background is True
    assert ended.output[0].content[0].text and ended.usage.output_tokens == 4


def test_background_response_streams_back_from_its_events(client: OpenAI):
    queued = client.responses.create(
        model=SMOLLM2, input=QUESTION, max_output_tokens=20, temperature=0, background=True
    )
    with client.responses.stream(response_id=queued.id) as stream:
        events = list(stream)  # the SDK's helper checks the order
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[0].response.status == "queued"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == final.output_text
    assert "Paris" in final.output_text and final.status == "completed"
    resumed = list(client.responses.retrieve(queued.id, stream=True, starting_after=3))
    assert [e.model_dump() for e in resumed] == [
        e.model_dump() for e in list(client.responses.retrieve(queued.id, stream=True))[4:]
    ]
    assert _until_ended(client, queued.id).output_text == final.output_text


def test_background_stream_left_early_keeps_running(client: OpenAI):
    stream = client.responses.create(model=TINY, input="hi", max_output_tokens=200, background=True, stream=True)
    first = next(iter(stream))
    stream.close()
    assert first.type == "response.created"
    assert _until_ended(client, first.response.id).status == "incomplete"


def test_cancel_stops_a_background_response(client: OpenAI):
    queued = _small(client, background=True, max_output_tokens=8000)
    cancelled = client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled" and cancelled.id == queued.id
    assert client.responses.retrieve(queued.id).status == "cancelled"
    assert client.responses.cancel(queued.id).status == "cancelled"  # again: as it is


def test_client_disconnect_cancels_the_job(api_url: str):
    body = {"model": TINY, "input": "hi", "max_output_tokens": 8000, "stream": True}
    with requests.post(f"{api_url}/v1/responses", json=body, stream=True, timeout=60) as response:
        frames = sse_frames(response)
        while next(frames)["event"] != "response.output_text.delta":
            pass
        response_id = f"resp_{response.headers['X-Request-Id']}"
    deadline = time.monotonic() + 30
    while (status := requests.get(f"{api_url}/v1/responses/{response_id}", timeout=10).json()["status"]) != "cancelled":
        assert time.monotonic() < deadline, f"still {status}"
        time.sleep(0.1)


def test_api_keys_keep_responses_apart(keyed_url: str):
    owner = OpenAI(base_url=f"{keyed_url}/v1", api_key=KEY_A, max_retries=0)
    other = OpenAI(base_url=f"{keyed_url}/v1", api_key=KEY_B, max_retries=0)
    response = _small(owner)
    assert owner.responses.retrieve(response.id).id == response.id
    with pytest.raises(NotFoundError):
        other.responses.retrieve(response.id)
    with pytest.raises(NotFoundError):
        other.responses.input_items.list(response.id)
    with pytest.raises(NotFoundError) as raised:
        _small(other, previous_response_id=response.id)
    assert raised.value.body["param"] == "previous_response_id"
    with pytest.raises(NotFoundError):
        other.responses.delete(response.id)
    assert _small(owner, previous_response_id=response.id).previous_response_id == response.id


def test_state_survives_an_api_restart(settings: Settings, api_url: str):
    first = ApiServer(settings)
    created = _small(OpenAI(base_url=f"{first.url}/v1", api_key="x", max_retries=0), input="remember me")
    first.stop()
    second = ApiServer(settings)
    try:
        client = OpenAI(base_url=f"{second.url}/v1", api_key="x", max_retries=0)
        assert client.responses.retrieve(created.id).output_text == created.output_text
        assert [item.content[0].text for item in client.responses.input_items.list(created.id)] == ["remember me"]
        assert _small(client, previous_response_id=created.id).status == "incomplete"
    finally:
        second.stop()


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"input": "hi", "temprature": 1}, 400, "temprature", "unknown_parameter"),
        ({"input": [{"role": "user", "content": "hi", "name": "x"}]}, 400, "input.0.name", "unknown_parameter"),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, 400, "input.0.content.0", None),
        ({"input": [{"type": "item_reference", "id": "x"}]}, 400, "input.0", None),
        ({"input": "hi", "temperature": 3}, 400, "temperature", None),
        ({"input": "hi", "max_output_tokens": 0}, 400, "max_output_tokens", None),
        ({"input": "hi", "max_output_tokens": 100000}, 400, "max_output_tokens", "context_length_exceeded"),
        (
            {"input": "hi", "tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "name": "nope"}},
            400,
            "tool_choice",
            None,
        ),
        ({"input": "hi", "tool_choice": "required", "tools": [{"type": "web_search"}]}, 400, "tool_choice", None),
        ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, 400, "text.format.schema", None),
        ({"input": "hi", "stream_options": {"include_obfuscation": False}}, 400, "stream_options", None),
        ({"input": "hi", "background": True, "store": False}, 400, "store", None),
        ({"input": "hi", "previous_response_id": "resp_nope"}, 404, "previous_response_id", "response_not_found"),
        ({}, 400, "input", "missing_required_parameter"),
        ({"input": "hi", "model": "no-such-model"}, 404, None, "model_not_found"),
    ],
)
def test_errors_name_their_parameter(api_url: str, body: dict, status: int, param: str | None, code: str | None):
    response = requests.post(f"{api_url}/v1/responses", json={"model": TINY, **body}, timeout=30)
    assert_error(response, status, param, code)


def test_unknown_parameters_are_all_named(api_url: str):
    body = {"model": TINY, "input": "hi", "alpha": 1, "beta": 2}
    error = assert_error(requests.post(f"{api_url}/v1/responses", json=body, timeout=30), 400, "alpha")
    assert "'alpha'" in error["message"] and "'beta'" in error["message"]


def test_unknown_response_routes_are_not_found(api_url: str):
    for path in ("/v1/responses/resp_nope", "/v1/responses/nope/input_items", "/v1/responses/x" + "y" * 300):
        assert_error(requests.get(f"{api_url}{path}", timeout=10), 404, "response_id", "response_not_found")


def test_agents_default_model_runs_a_function_tool(api_url: str):
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        calls.append(city)
        return f"Sunny in {city}, 22 degrees."

    agents.set_default_openai_client(AsyncOpenAI(base_url=f"{api_url}/v1", api_key="x"), use_for_tracing=False)
    agents.set_tracing_disabled(True)
    agent = agents.Agent(
        name="Weather",
        instructions="Answer questions about the weather.",
        model=SMOLLM2,
        tools=[get_weather],
        # A 135M model may answer without calling: force the first call. Agents then resets
        # tool_choice (reset_tool_choice), so the next turn can answer in words.
        model_settings=agents.ModelSettings(
            tool_choice="required", parallel_tool_calls=False, temperature=0, max_tokens=60
        ),
    )
    result = agents.Runner.run_sync(agent, "What is the weather in Paris?", max_turns=4)
    assert calls and isinstance(calls[0], str)
    assert isinstance(result.final_output, str) and result.final_output
    assert all(response.response_id.startswith("resp_") for response in result.raw_responses)
