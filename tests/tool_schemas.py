"""JSON schemas and tools the structured-output tests share, and the checks of the tool calls
answered with them (test modules never import each other)."""

from __future__ import annotations

import json

import jsonschema

from tests.helpers import user

# Every value bounded, so even the tiny random model's constrained answer closes within a few tokens.
BOUNDED = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "digit": {"type": "integer", "minimum": 0, "maximum": 9},
        "color": {"enum": ["red", "green", "blue"]},
    },
    "required": ["ok", "digit", "color"],
    "additionalProperties": False,
}
PICK = {"type": "function", "function": {"name": "pick", "parameters": BOUNDED}}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CAPITAL = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}},
    "required": ["city"],
    "additionalProperties": False,
}
NOW = {"type": "function", "function": {"name": "current_time", "description": "The time now."}}


def parameters_of(tools: list[dict], name: str) -> dict:
    function = next(t["function"] for t in tools if t["function"]["name"] == name)
    return function.get("parameters") or {"type": "object", "properties": {}, "additionalProperties": False}


def assert_valid_calls(message, tools: list[dict]) -> None:
    """Each call of the SDK's `message` is a function call of `tools` whose arguments validate; IDs differ."""
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), parameters_of(tools, call.function.name))
    assert len({call.id for call in message.tool_calls}) == len(message.tool_calls)


def assert_tool_choice_answer(client, model: str, choice, parallel: bool) -> None:
    """The openai `client` asks `model` with PICK and NOW under `choice` and `parallel`: the calls
    it gets are complete and valid, as many as `parallel` allows, with the right finish reason."""
    tools = [PICK, NOW]
    completion = client.chat.completions.create(
        model=model,
        messages=user("hi"),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        max_tokens=80,
        seed=7,
    )
    result = completion.choices[0]
    message = result.message
    if choice == "auto" and not message.tool_calls:  # the model answered in text
        assert result.finish_reason in ("stop", "length") and message.content is not None
        return
    # Even when max_tokens ends the answer (a random model may call again and again), the calls
    # returned are complete and valid: never half a call.
    assert message.tool_calls
    assert_valid_calls(message, tools)
    assert message.content is None
    if isinstance(choice, dict):
        assert [c.function.name for c in message.tool_calls] == ["pick"]
    if not parallel or isinstance(choice, dict):
        assert len(message.tool_calls) == 1
        assert result.finish_reason == ("stop" if isinstance(choice, dict) else "tool_calls")
    else:
        assert result.finish_reason in ("tool_calls", "length")
