"""OpenAI's deprecated `functions` and `function_call` on chat completions: run as tools and
tool_choice (at most one call), answered in the legacy shape (`message.function_call`, finish_reason
"function_call"), and legacy calls and results sent back in later turns seen as tool calls and results.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from openai import OpenAI

from api.chat.protocol import ChatCompletionRequest
from tests.helpers import SMOLLM2, TINY, assert_error, user
from tests.tool_schemas import BOUNDED, NOW, PICK, WEATHER

PICK_F, NOW_F, WEATHER_F = PICK["function"], NOW["function"], WEATHER["function"]
PARIS = user("What is the weather in Paris?")
# The same past call of get_weather, in the legacy shape and in the tools shape (with the ID the
# API gives a legacy call: `call_<index of its message>`).
LEGACY_CALL = {
    "role": "assistant",
    "content": None,
    "function_call": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
}
TOOL_CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": "call_1", "type": "function", "function": LEGACY_CALL["function_call"]}],
}
RESULT = '{"temperature_c": 21}'


@pytest.fixture(scope="module")
def client(api_url: str) -> OpenAI:
    return OpenAI(base_url=f"{api_url}/v1", api_key="x", max_retries=0)


@pytest.mark.parametrize(
    ("legacy", "tools"),
    [
        ({}, {}),
        ({"function_call": "auto"}, {"tool_choice": "auto"}),
        ({"function_call": "none"}, {"tool_choice": "none"}),
        ({"function_call": {"name": "pick"}}, {"tool_choice": {"type": "function", "function": {"name": "pick"}}}),
    ],
)
def test_a_legacy_request_runs_as_tools_without_parallel_calls(legacy: dict, tools: dict):
    base = {"model": TINY, "messages": user("hi")}
    legacy_job = ChatCompletionRequest.model_validate({**base, "functions": [PICK_F, NOW_F], **legacy}).to_job("j")
    tools_body = {**base, "tools": [PICK, NOW], "parallel_tool_calls": False, **tools}
    assert legacy_job == ChatCompletionRequest.model_validate(tools_body).to_job("j")


def test_legacy_messages_reach_the_worker_as_tool_messages():
    messages = [*PARIS, LEGACY_CALL, {"role": "function", "name": "get_weather", "content": RESULT}]
    job = ChatCompletionRequest.model_validate({"model": TINY, "messages": messages}).to_job("j")
    assert job.messages == [
        *PARIS,
        {"role": "assistant", "tool_calls": TOOL_CALL["tool_calls"]},  # content null: left out, as for tool calls
        {"role": "tool", "name": "get_weather", "content": RESULT, "tool_call_id": "call_1"},
    ]


def test_a_named_function_call_is_answered_in_the_legacy_shape(chat):
    body = {"model": SMOLLM2, "messages": PARIS, "functions": [WEATHER_F, NOW_F], "max_tokens": 60, "temperature": 0}
    response = chat({**body, "function_call": {"name": "get_weather"}})
    assert response.status_code == 200, response.text
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"].keys() == {"role", "content", "function_call"}  # no tool_calls
    assert choice["message"]["content"] is None
    call = choice["message"]["function_call"]
    assert call.keys() == {"name", "arguments"} and call["name"] == "get_weather"
    jsonschema.validate(json.loads(call["arguments"]), WEATHER_F["parameters"])


def test_a_random_model_calls_the_named_function_once_with_valid_arguments(client: OpenAI):
    choice = client.chat.completions.create(
        model=TINY,
        messages=user("hi"),
        functions=[PICK_F, NOW_F],
        function_call={"name": "pick"},
        max_tokens=80,
        seed=7,
    ).choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.tool_calls is None and choice.message.content is None
    assert choice.message.function_call.name == "pick"
    jsonschema.validate(json.loads(choice.message.function_call.arguments), BOUNDED)


def test_an_auto_call_after_a_legacy_call_is_as_after_the_same_tool_call(client: OpenAI):
    ask = {"role": "user", "content": "What is the weather in London?"}
    request = {"model": SMOLLM2, "max_tokens": 80, "temperature": 0}
    legacy = client.chat.completions.create(messages=[*PARIS, LEGACY_CALL, ask], functions=[WEATHER_F], **request)
    tools = client.chat.completions.create(messages=[*PARIS, TOOL_CALL, ask], tools=[WEATHER], **request)
    choice = legacy.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.content is None and choice.message.tool_calls is None
    (tool_call,) = tools.choices[0].message.tool_calls
    assert (choice.message.function_call.name, choice.message.function_call.arguments) == (
        tool_call.function.name,
        tool_call.function.arguments,
    )
    jsonschema.validate(json.loads(choice.message.function_call.arguments), WEATHER_F["parameters"])
    assert legacy.usage.prompt_tokens == tools.usage.prompt_tokens  # the past call is rendered the same


def test_a_streamed_function_call_joins_to_the_answer(client: OpenAI):
    request = {
        "model": SMOLLM2,
        "messages": PARIS,
        "functions": [WEATHER_F],
        "function_call": {"name": "get_weather"},
        "max_tokens": 60,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**request).choices[0]
    chunks = [c.choices[0] for c in client.chat.completions.create(stream=True, **request) if c.choices]
    assert all(c.delta.tool_calls is None for c in chunks)
    parts = [c.delta.function_call for c in chunks if c.delta.function_call]
    assert (parts[0].name, parts[0].arguments) == ("get_weather", "")
    assert all(p.name is None for p in parts[1:])
    assert "".join(p.arguments for p in parts) == whole.message.function_call.arguments
    assert [c.finish_reason for c in chunks if c.finish_reason] == [whole.finish_reason] == ["function_call"]


def test_a_function_result_sent_back_is_answered_as_a_tool_result(client: OpenAI):
    first = client.chat.completions.create(
        model=SMOLLM2,
        messages=PARIS,
        functions=[WEATHER_F],
        function_call={"name": "get_weather"},
        max_tokens=60,
        temperature=0,
    )
    message = first.choices[0].message  # sent back as the SDK gives it, as legacy clients do
    legacy_turns = [*PARIS, message, {"role": "function", "name": "get_weather", "content": RESULT}]
    request = {"model": SMOLLM2, "max_tokens": 30, "temperature": 0}
    legacy = client.chat.completions.create(
        messages=legacy_turns, functions=[WEATHER_F], function_call="none", **request
    )
    call = {"id": "call_1", "type": "function", "function": message.function_call.model_dump()}
    tool_turns = [
        *PARIS,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": RESULT},
    ]
    tools = client.chat.completions.create(messages=tool_turns, tools=[WEATHER], tool_choice="none", **request)
    answer = legacy.choices[0]
    assert answer.message.function_call is None and answer.message.content
    assert answer.message.content == tools.choices[0].message.content
    assert legacy.usage.prompt_tokens == tools.usage.prompt_tokens


BAD_REQUESTS = [
    ({"functions": [PICK_F], "tools": [PICK]}, "functions"),
    ({"tools": [PICK], "tool_choice": "auto", "function_call": "auto"}, "function_call"),
    ({"function_call": "auto"}, "function_call"),
    ({"tools": [PICK], "function_call": {"name": "pick"}}, "function_call"),
    ({"functions": [PICK_F], "function_call": {"name": "nope"}}, "function_call"),
    ({"functions": [PICK_F, PICK_F]}, "functions"),
    ({"messages": [{"role": "function", "content": RESULT}]}, "messages.0"),
    ({"messages": [{"role": "user", "content": "hi", "function_call": LEGACY_CALL["function_call"]}]}, "messages.0"),
]


@pytest.mark.parametrize(("fields", "param"), BAD_REQUESTS)
def test_bad_legacy_requests_are_400s_naming_the_field(chat, fields: dict, param: str):
    response = chat({"model": TINY, "messages": user("hi"), "max_tokens": 5, **fields})
    error = assert_error(response, 400, param=param, code="invalid_value")
    assert error["type"] == "invalid_request_error"
    assert param in error["message"]
