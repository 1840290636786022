"""Structured output and tool calls through the openai SDK: constrained decoding in the CPU engine.

Every answer that ends with "stop" must parse and validate against its schema, whatever the model
(the tiny random model included); bounded schemas (enums, bounded integers) make that ending
certain, so these tests do not depend on what a model happens to write.
"""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
import requests
from openai import OpenAI
from pydantic import BaseModel, ConfigDict, Field

from tests.helpers import ASYNC, SMOLLM2, TINY, user, wait_for_first_token
from tests.tool_schemas import BOUNDED, NOW, PICK, WEATHER, assert_tool_choice_answer, assert_valid_calls


@pytest.fixture(scope="module")
def client(api_url: str) -> OpenAI:
    return OpenAI(base_url=f"{api_url}/v1", api_key="x", max_retries=0)


def schema_format(schema: dict, strict: bool = True) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": strict}}


def test_json_schema_answer_validates(client: OpenAI):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}, "country": {"type": "string", "maxLength": 30}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    completion = client.chat.completions.create(
        model=SMOLLM2,
        messages=user("What is the capital of France? Answer in JSON."),
        response_format=schema_format(schema),
        max_tokens=60,
        temperature=0,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content), schema)


def test_parse_with_a_pydantic_model(client: OpenAI):
    class Pick(BaseModel):
        model_config = ConfigDict(extra="forbid")
        ok: bool
        digit: int

    completion = client.chat.completions.parse(
        model=SMOLLM2, messages=user("Pick a digit."), response_format=Pick, max_tokens=40, temperature=0
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Pick)


def test_json_object_answer_parses(client: OpenAI):
    completion = client.chat.completions.create(
        model=SMOLLM2,
        messages=user('Reply with a JSON object with the key "answer" saying hello.'),
        response_format={"type": "json_object"},
        max_tokens=60,
        temperature=0,
    )
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(completion.choices[0].message.content), dict)


# A row that runs for thousands of tokens, free or held by a schema, for others to join.
LONG_FREE = {"model": TINY, "messages": user("go on"), "max_tokens": 8000, "temperature": 0}
LONG_STRING = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "string", "minLength": 2000}}}
LONG_CONSTRAINED = {**LONG_FREE, "response_format": LONG_STRING}


def beside(chat, api_url: str, long: dict, body: dict) -> tuple[dict, int]:
    """`body`'s answer while `long` runs, and how many rows its job shared a batch with (itself included)."""
    long_id = chat(long, headers=ASYNC).json()["id"]
    wait_for_first_token(api_url, long_id)  # decoding: its row is in the batch
    response = chat(body)
    requests.delete(f"{api_url}/v1/jobs/{long_id}", timeout=10)
    job = requests.get(f"{api_url}/v1/jobs/{response.headers['X-Request-Id']}", timeout=10).json()
    return response.json(), job["batch_size"]


def test_a_constrained_row_shares_a_batch_with_a_free_one(chat, api_url: str):
    body = {"model": TINY, "messages": user("hi"), "response_format": schema_format(BOUNDED), "max_tokens": 60}
    answer, batch_size = beside(chat, api_url, LONG_FREE, body)
    assert batch_size == 2
    assert answer["choices"][0]["finish_reason"] == "stop"
    jsonschema.validate(json.loads(answer["choices"][0]["message"]["content"]), BOUNDED)


def test_a_free_row_beside_a_constrained_one_answers_as_alone(chat, api_url: str):
    body = {"model": TINY, "messages": user("hi"), "max_tokens": 8, "temperature": 0}
    alone = chat(body).json()["choices"][0]
    answer, batch_size = beside(chat, api_url, LONG_CONSTRAINED, body)
    assert batch_size == 2
    assert answer["choices"][0]["message"] == alone["message"]
    assert answer["choices"][0]["finish_reason"] == alone["finish_reason"]


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("choice", ["required", "auto", {"type": "function", "function": {"name": "pick"}}])
def test_tool_choices_give_valid_calls(client: OpenAI, choice, parallel: bool):
    assert_tool_choice_answer(client, TINY, choice, parallel)


def test_required_calls_on_a_real_model(client: OpenAI):
    completion = client.chat.completions.create(
        model=SMOLLM2,
        messages=user("What is the weather in Paris?"),
        tools=[WEATHER, NOW],
        tool_choice="required",
        parallel_tool_calls=False,  # a 135M model repeats calls until max_tokens
        max_tokens=80,
        temperature=0,
    )
    result = completion.choices[0]
    assert result.finish_reason == "tool_calls"
    assert_valid_calls(result.message, [WEATHER, NOW])


def streamed_calls(client: OpenAI, **request) -> tuple[list, str]:
    chunks = list(client.chat.completions.create(stream=True, **request))
    deltas = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return [call for d in deltas for call in d.tool_calls], finish[-1]


@pytest.mark.parametrize("tool", [WEATHER, NOW])
def test_streamed_calls_join_to_the_answer(client: OpenAI, tool: dict):
    request = {
        "model": SMOLLM2,
        "messages": user("What is the weather in Paris?"),
        "tools": [tool],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 60,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**request).choices[0]
    parts, finish = streamed_calls(client, **request)
    assert finish == whole.finish_reason == "tool_calls"
    first = parts[0]
    assert (first.index, first.type, first.function.name, first.function.arguments) == (
        0,
        "function",
        tool["function"]["name"],
        "",
    )
    assert first.id.startswith("call_")
    assert all(p.id is None and p.function.name is None for p in parts[1:])
    calls = {}
    for part in parts:
        calls[part.index] = calls.get(part.index, "") + part.function.arguments
    assert list(calls.values()) == [c.function.arguments for c in whole.message.tool_calls]
    if tool is NOW:
        assert whole.message.tool_calls[0].function.arguments == "{}"


def test_follow_up_turn_with_the_tool_result(client: OpenAI):
    messages = user("What is the weather in Paris?")
    first = client.chat.completions.create(
        model=SMOLLM2,
        messages=messages,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
        temperature=0,
    )
    message = first.choices[0].message
    messages = [
        *messages,
        message,
        {
            "role": "tool",
            "tool_call_id": message.tool_calls[0].id,
            "content": [{"type": "text", "text": '{"temperature_c": 21}'}],
        },
    ]
    answer = client.chat.completions.create(
        model=SMOLLM2, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=30, temperature=0
    )
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].message.content


def test_max_tokens_inside_a_constrained_string_is_length(client: OpenAI):
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    request = {"model": SMOLLM2, "messages": user("Write a long poem in JSON."), "max_tokens": 6, "temperature": 0}
    completion = client.chat.completions.create(response_format=schema_format(schema, strict=False), **request)
    assert completion.choices[0].finish_reason == "length"
    weather = {
        **WEATHER,
        "function": {
            **WEATHER["function"],
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    called = client.chat.completions.create(tools=[weather], tool_choice="required", **request).choices[0]
    assert called.finish_reason == "length" and called.message.tool_calls is None

    class Text(BaseModel):
        text: str

    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(response_format=Text, **request)


def test_completions_follow_a_schema(client: OpenAI):
    completion = client.completions.create(
        model=TINY, prompt=["a", "b"], max_tokens=60, extra_body={"response_format": schema_format(BOUNDED)}
    )
    for choice in completion.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.text), BOUNDED)


BAD_REQUESTS = [
    ({"response_format": schema_format({"type": "object", "if": {}})}, "if"),
    ({"response_format": {"type": "json_schema"}}, "json_schema"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [NOW], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "nope"),
    ({"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "name"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
]


@pytest.mark.parametrize(("fields", "named"), BAD_REQUESTS)
def test_bad_structured_requests_are_400s(chat, fields: dict, named: str):
    response = chat({"model": TINY, "messages": user("hi"), "max_tokens": 5, **fields})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert named in error["message"] or named in (error["param"] or "")


def test_unenforceable_keywords_are_ignored_without_strict(chat):
    fields = {"response_format": schema_format({**BOUNDED, "if": {}}, strict=False)}
    response = chat({"model": TINY, "messages": user("hi"), "max_tokens": 60, **fields})
    assert response.status_code == 200
    jsonschema.validate(json.loads(response.json()["choices"][0]["message"]["content"]), BOUNDED)


class GetWeather(BaseModel):
    """The current weather in a city."""

    city: str = Field(max_length=20)


def test_parse_with_a_pydantic_function_tool(client: OpenAI):
    completion = client.chat.completions.parse(
        model=SMOLLM2,
        messages=user("What is the weather in Paris?"),
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
        temperature=0,
    )
    (call,) = completion.choices[0].message.tool_calls
    assert call.function.name == "GetWeather"
    assert isinstance(call.function.parsed_arguments, GetWeather)
    assert call.function.parsed_arguments == GetWeather.model_validate_json(call.function.arguments)


def test_strict_tool_with_an_unenforceable_keyword_is_a_400_naming_it(client: OpenAI):
    parameters = {**BOUNDED, "if": {"properties": {"ok": {"const": True}}}}
    tool = {"type": "function", "function": {"name": "pick", "strict": True, "parameters": parameters}}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=TINY, messages=user("hi"), tools=[tool], max_tokens=5)
    assert raised.value.body["type"] == "invalid_request_error"
    assert raised.value.body["param"].startswith("tools") and "if" in raised.value.body["message"]
    lenient = {**tool, "function": {**tool["function"], "strict": False}}
    called = client.chat.completions.create(
        model=TINY, messages=user("hi"), tools=[lenient], tool_choice="required", max_tokens=60, seed=7
    )
    assert_valid_calls(called.choices[0].message, [PICK])


def call_of(client: OpenAI, **request):
    return client.chat.completions.create(
        model=SMOLLM2,
        messages=user("What is the weather in Paris?"),
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
        temperature=0,
        **request,
    ).choices[0]


def test_a_stop_string_inside_tool_call_arguments_does_not_cut_them(client: OpenAI):
    whole = call_of(client)
    (call,) = whole.message.tool_calls
    city = json.loads(call.function.arguments)["city"]
    stopped = call_of(client, stop=[city, '"city"', "}"])
    assert stopped.finish_reason == "tool_calls"
    assert [c.function.arguments for c in stopped.message.tool_calls] == [call.function.arguments]


def test_a_stop_string_inside_a_json_schema_answer_does_not_cut_it(client: OpenAI):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
        "additionalProperties": False,
    }
    request = {
        "model": SMOLLM2,
        "messages": user("What is the capital of France? Answer in JSON."),
        "response_format": schema_format(schema),
        "max_tokens": 40,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**request).choices[0]
    city = json.loads(whole.message.content)["city"]
    stopped = client.chat.completions.create(stop=[city, '"city"', "}"], **request).choices[0]
    assert (stopped.message.content, stopped.finish_reason) == (whole.message.content, "stop")
    jsonschema.validate(json.loads(stopped.message.content), schema)


def test_a_stop_string_cuts_the_text_of_an_auto_answer(client: OpenAI):
    request = {
        "model": SMOLLM2,
        "messages": user("What is the capital of France?"),
        "tools": [WEATHER],
        "tool_choice": "auto",
        "max_tokens": 20,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**request).choices[0]
    assert whole.message.tool_calls is None and "Paris" in whole.message.content
    stopped = client.chat.completions.create(stop=["Paris"], **request).choices[0]
    assert stopped.finish_reason == "stop" and stopped.message.tool_calls is None
    assert stopped.message.content == whole.message.content[: whole.message.content.index("Paris")]


def test_streamed_parallel_calls_join_to_the_answer(client: OpenAI):
    # The tiny model calls again and again; 42 tokens end it just after its second call.
    request = {
        "model": TINY,
        "messages": user("hi"),
        "tools": [PICK, NOW],
        "tool_choice": "required",
        "max_tokens": 42,
        "seed": 1,
    }
    whole = client.chat.completions.create(**request).choices[0]
    assert len(whole.message.tool_calls) == 2
    parts, finish = streamed_calls(client, **request)
    assert finish == whole.finish_reason
    heads = [p for p in parts if p.id is not None]
    assert [(h.index, h.type, h.function.name) for h in heads] == [
        (0, "function", whole.message.tool_calls[0].function.name),
        (1, "function", whole.message.tool_calls[1].function.name),
    ]
    assert heads[0].id != heads[1].id and all(h.id.startswith("call_") for h in heads)
    calls: dict[int, str] = {}
    for part in parts:
        calls[part.index] = calls.get(part.index, "") + part.function.arguments
    assert list(calls.values()) == [c.function.arguments for c in whole.message.tool_calls]


def test_a_stream_cut_inside_a_call_has_sent_its_start_which_the_answer_leaves_out(client: OpenAI):
    # 60 tokens end the tiny model's second call of pick inside its arguments.
    request = {"model": TINY, "messages": user("hi"), "tools": [PICK], "tool_choice": "required", "max_tokens": 60}
    whole = client.chat.completions.create(**request).choices[0]
    assert whole.finish_reason == "length" and len(whole.message.tool_calls) == 1
    parts, finish = streamed_calls(client, **request)
    calls: dict[int, str] = {}
    for part in parts:
        calls[part.index] = calls.get(part.index, "") + part.function.arguments
    assert finish == "length" and list(calls) == [0, 1]
    assert calls[0] == whole.message.tool_calls[0].function.arguments
    with pytest.raises(json.JSONDecodeError):
        json.loads(calls[1])


def test_streamed_json_schema_answer_equals_the_whole_answer(client: OpenAI):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}, "country": {"type": "string", "maxLength": 30}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    request = {
        "model": SMOLLM2,
        "messages": user("What is the capital of France? Answer in JSON."),
        "response_format": schema_format(schema),
        "max_tokens": 60,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**request).choices[0]
    chunks = [c.choices[0] for c in client.chat.completions.create(stream=True, **request) if c.choices]
    assert "".join(c.delta.content or "" for c in chunks) == whole.message.content
    assert chunks[-1].finish_reason == whole.finish_reason == "stop"
    jsonschema.validate(json.loads(whole.message.content), schema)


def test_text_response_format_is_the_same_as_none(client: OpenAI):
    request = {"model": SMOLLM2, "messages": user("What is the capital of France?"), "max_tokens": 12, "temperature": 0}
    plain = client.chat.completions.create(**request).choices[0]
    text = client.chat.completions.create(response_format={"type": "text"}, **request).choices[0]
    assert (text.message.content, text.finish_reason) == (plain.message.content, plain.finish_reason)


def test_tool_choice_none_without_parallel_calls_answers_in_text(client: OpenAI):
    request = {"model": SMOLLM2, "messages": user("What is the weather in Paris?"), "max_tokens": 12, "temperature": 0}
    answer = client.chat.completions.create(
        tools=[WEATHER], tool_choice="none", parallel_tool_calls=False, **request
    ).choices[0]
    assert answer.message.tool_calls is None and answer.message.content


def test_a_stop_string_inside_a_json_schema_answer_offered_tools_does_not_cut_it(client: OpenAI):
    request = {
        "model": TINY,
        "messages": user("hi"),
        "tools": [PICK],
        "tool_choice": "auto",
        "response_format": schema_format(BOUNDED),
        "max_tokens": 60,
        "seed": 1,
    }
    whole = client.chat.completions.create(**request).choices[0]
    assert whole.message.tool_calls is None and '"color"' in whole.message.content  # the JSON alternative
    stopped = client.chat.completions.create(stop=['"color"', "}"], **request).choices[0]
    assert (stopped.message.content, stopped.finish_reason) == (whole.message.content, "stop")
    jsonschema.validate(json.loads(stopped.message.content), BOUNDED)
