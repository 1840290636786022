"""The Responses API's converters: request to chat (items, tools, tool_choice, text.format) and chat results
to output items, and how invalid requests name their parameters."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.errors import ApiError
from api.responses.convert import chat_body, chat_messages, failed_outcome, input_items, outcome_of, output_of
from api.responses.protocol import ResponseRequest, invalid_body, param_name
from contracts.errors import ErrorInfo, job_cancelled
from contracts.events import Choice, GenerationResult, PromptTokensDetails, ToolCall, Usage

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = ToolCall(id="call_1", name="get_weather", arguments='{"city":"Paris"}')


def request(**fields) -> ResponseRequest:
    return ResponseRequest.model_validate({"model": "m", "input": "hi", **fields})


def test_a_string_input_is_one_user_message():
    assert input_items("hi", "job") == [
        {
            "id": "msg_job_0",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_text", "text": "hi"}],
        }
    ]


def test_items_keep_their_ids_and_get_one_otherwise():
    given = request(
        input=[
            {"role": "assistant", "content": "earlier", "id": "msg_old"},
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": [{"type": "input_text", "text": "ok"}]},
            {"type": "reasoning", "summary": []},
        ]
    ).input
    items = input_items(given, "job")
    assert [item["id"] for item in items] == ["msg_old", "fc_job_1", "fco_job_2", "rs_job_3"]
    assert items[0]["content"] == [{"type": "output_text", "text": "earlier", "annotations": []}]
    assert items[2]["output"] == [{"type": "input_text", "text": "ok"}]


def test_chat_messages_join_an_answer_and_its_calls_and_drop_reasoning():
    given = request(
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
            {"type": "reasoning", "summary": []},
            {"role": "assistant", "content": "Let me look."},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "function_call_output", "call_id": "c2", "output": "two"},
        ]
    ).input
    messages = chat_messages("Be brief.", input_items(given, "job"))
    assert messages[:2] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ab"}]
    assert messages[2]["content"] == "Let me look." and [c["id"] for c in messages[2]["tool_calls"]] == ["c1", "c2"]
    assert messages[3:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    ]


def test_a_call_without_text_is_an_assistant_message_of_its_own():
    items = input_items(
        request(input=[{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]).input, "j"
    )
    [message] = chat_messages(None, items)
    assert message["role"] == "assistant" and message["content"] is None and message["tool_calls"][0]["id"] == "c"


def test_function_tools_become_chat_tools_and_hosted_ones_are_left_out():
    req = request(tools=[{"type": "web_search"}, WEATHER, {"type": "mcp", "server_label": "x"}], tool_choice="required")
    body = chat_body(req, "m", [])
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather"]
    assert body["tools"][0]["function"]["strict"] is True  # the Responses API's default
    assert body["tool_choice"] == "required"
    assert req.left_out_tools == ["web_search", "mcp"]


def test_only_hosted_tools_offer_the_model_nothing():
    assert "tools" not in chat_body(request(tools=[{"type": "web_search_preview"}]), "m", [])


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "web_search"}], "tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "other"}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        (
            {
                "tools": [WEATHER],
                "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "x"}]},
            },
            "tool_choice.tools",
        ),
    ],
)
def test_impossible_tool_choices_name_tool_choice(fields: dict, param: str):
    with pytest.raises(ApiError) as raised:
        chat_body(request(**fields), "m", [])
    assert raised.value.param == param and raised.value.status == 400


def test_allowed_tools_narrow_the_functions_offered():
    other = {**WEATHER, "name": "get_time"}
    choice = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]}
    body = chat_body(request(tools=[WEATHER, other], tool_choice=choice), "m", [])
    assert [t["function"]["name"] for t in body["tools"]] == ["get_time"] and body["tool_choice"] == "required"


def test_named_function_choice_and_text_formats():
    body = chat_body(request(tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"}), "m", [])
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    text = {"format": {"type": "json_schema", "name": "A", "schema": schema, "strict": True}}
    assert chat_body(request(text=text), "m", [])["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "A", "schema": schema, "strict": True},
    }
    assert chat_body(request(text={"format": {"type": "json_object"}}), "m", [])["response_format"] == {
        "type": "json_object"
    }


def test_the_reasoning_effort_is_chats_and_left_out_when_not_given():
    assert chat_body(request(reasoning={"effort": "low", "summary": "auto"}), "m", [])["reasoning_effort"] == "low"
    assert "reasoning_effort" not in chat_body(request(reasoning={"summary": "auto"}), "m", [])
    assert "reasoning_effort" not in chat_body(request(), "m", [])


def test_output_items_of_an_answer():
    whitespace_then_call = Choice(index=0, text="\n", finish_reason="tool_calls", tool_calls=[CALL])
    assert [item["type"] for item in output_of("j", whitespace_then_call)] == ["function_call"]
    text_then_call = Choice(index=0, text="Looking.", finish_reason="tool_calls", tool_calls=[CALL])
    message, call = output_of("j", text_then_call)
    assert message["content"][0]["text"] == "Looking." and message["status"] == "completed"
    assert call == {
        "id": "fc_j_0",
        "type": "function_call",
        "status": "completed",
        "arguments": '{"city":"Paris"}',
        "call_id": "call_1",
        "name": "get_weather",
    }
    [cut] = output_of("j", Choice(index=0, text="Once upon", finish_reason="length"))
    assert cut["status"] == "incomplete" and cut["id"] == "msg_j"


def test_outcome_status_usage_and_failures():
    usage = Usage(
        prompt_tokens=10,
        completion_tokens=3,
        total_tokens=13,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=8),
    )
    done = outcome_of("j", GenerationResult(choices=[Choice(index=0, text="Hi", finish_reason="stop")], usage=usage))
    assert done["status"] == "completed" and done["completed_at"] and done["incomplete_details"] is None
    assert done["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 8},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 13,
    }
    cut = outcome_of("j", GenerationResult(choices=[Choice(index=0, text="Hi", finish_reason="length")], usage=usage))
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {"reason": "max_output_tokens"}
    failed = failed_outcome(ErrorInfo(status=503, message="gone", type="server_error", code="worker_lost"))
    assert failed["status"] == "failed" and failed["error"] == {"code": "worker_lost", "message": "gone"}
    assert failed_outcome(job_cancelled())["status"] == "cancelled"


def test_parameter_names_are_spelled_as_openai_does():
    assert (
        param_name(("input", "list[...]", 0, "#message", "content", 1, "#input_text", "text"))
        == "input.0.content.1.text"
    )
    with pytest.raises(ValidationError) as raised:
        ResponseRequest.model_validate({"model": "m", "input": "hi", "alpha": 1, "beta": 2})
    error = invalid_body(raised.value)
    assert error.param == "alpha" and "'beta'" in error.message and error.code == "unknown_parameter"
