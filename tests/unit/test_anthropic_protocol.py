"""Anthropic's Messages API as chat requests, and chat results as Messages (no server)."""

from __future__ import annotations

import json

import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from anthropic.types.message import Message as SdkMessage

from api.anthropic.protocol import MessagesInput, MessagesRequest
from api.anthropic.render import content_blocks, message_body, message_frames, stop_reason
from api.errors import ApiError
from contracts.events import (
    Choice,
    DeltaEvent,
    DoneEvent,
    GenerationResult,
    PromptTokensDetails,
    StartedEvent,
    ToolCall,
    ToolCallDelta,
    Usage,
)

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def request(**fields) -> MessagesRequest:
    return MessagesRequest.model_validate({"model": "m", "max_tokens": 8, **fields})


def test_conversation_becomes_chat_messages():
    chat = request(
        system=[
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be kind."},
        ],
        messages=[
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "rain"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "timeout", "is_error": True},
                    {"type": "text", "text": "So?"},
                ],
            },
        ],
        tools=[WEATHER],
    ).to_chat()
    assert [m.model_dump(exclude_none=True) for m in chat.messages] == [
        {"role": "system", "content": "Be brief.\n\nBe kind."},
        {"role": "user", "content": "first\n\nsecond"},  # consecutive turns of one role are one turn
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "rain", "tool_call_id": "toolu_1"},
        {"role": "tool", "content": "Error: timeout", "tool_call_id": "toolu_2"},
        {"role": "user", "content": "So?"},
    ]
    assert chat.tools[0].function.parameters == WEATHER["input_schema"]


@pytest.mark.parametrize(
    ("choice", "mode", "named", "parallel"),
    [
        ({"type": "auto"}, "auto", None, None),
        ({"type": "any"}, "required", None, None),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", None, False),
        ({"type": "tool", "name": "get_weather"}, "named", "get_weather", None),
        ({"type": "none"}, None, None, None),
    ],
)
def test_tool_choice_maps_to_openais(choice, mode, named, parallel):
    chat = request(messages=[{"role": "user", "content": "hi"}], tools=[WEATHER], tool_choice=choice).to_chat()
    assert chat.tool_mode == mode
    assert chat.parallel_tool_calls is parallel
    if named:
        assert chat.tool_choice.function.name == named


def test_sampling_fields_and_stop_sequences():
    chat = request(
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.5,
        top_p=0.9,
        top_k=0,
        stop_sequences=["END", "\n\n"],
        metadata={"user_id": "u-1"},
        thinking={"type": "enabled", "budget_tokens": 2048},
        service_tier="standard_only",
        output_config={"effort": "low"},
        context_management={"edits": []},
        container=None,
    ).to_chat()
    assert (chat.temperature, chat.top_p, chat.top_k, chat.stop, chat.user) == (0.5, 0.9, None, ["END", "\n\n"], "u-1")
    greedy = request(messages=[{"role": "user", "content": "hi"}], top_p=0).to_chat()
    assert (greedy.temperature, greedy.top_p) == (0.0, None)


def test_output_format_is_a_strict_json_schema():
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    chat = request(
        messages=[{"role": "user", "content": "hi"}],
        output_config={"format": {"type": "json_schema", "schema": schema}},
    ).to_chat()
    assert chat.response_format.json_schema.schema_ == schema and chat.response_format.json_schema.strict


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (
            [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}],
            "messages.0.content.0",
        ),
        ([{"type": "text", "text": "a"}, {"type": "document", "source": {}}], "messages.0.content.1"),
        (
            [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}],
            "messages.0.content.0.content.0",
        ),
    ],
)
def test_media_is_a_400_naming_the_block(content, param):
    with pytest.raises(ApiError) as raised:
        request(messages=[{"role": "user", "content": content}]).to_chat()
    assert raised.value.status == 400 and raised.value.param == param
    assert "text only" in raised.value.message


def test_prefill_is_a_400():
    with pytest.raises(ApiError) as raised:
        request(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "{"}]).to_chat()
    assert raised.value.param == "messages.1" and raised.value.code == "prefill_not_supported"


def test_blocks_in_the_wrong_role_are_400s():
    with pytest.raises(ApiError, match="tool_use"):
        request(
            messages=[{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]
        ).to_chat()
    with pytest.raises(ApiError, match="tool_result"):
        request(
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
                {"role": "user", "content": "and?"},
            ]
        ).to_chat()


def test_unknown_block_types_and_server_tools_are_refused_by_name():
    with pytest.raises(pydantic.ValidationError, match="search_result"):
        request(messages=[{"role": "user", "content": [{"type": "search_result", "source": "s"}]}])
    with pytest.raises(pydantic.ValidationError, match="web_search_20250305"):
        request(
            messages=[{"role": "user", "content": "hi"}], tools=[{"type": "web_search_20250305", "name": "web_search"}]
        )


def test_unhonoured_fields_are_400s_naming_them():
    with pytest.raises(ApiError) as raised:
        MessagesInput.model_validate(
            {
                "model": "m",
                "messages": [{"role": "user", "content": "hi"}],
                "mcp_servers": [{"type": "url", "url": "u"}],
            }
        )
    assert raised.value.param == "mcp_servers"
    request(messages=[{"role": "user", "content": "hi"}], mcp_servers=[])  # none: nothing to honour


def test_count_job_shows_the_tools_unless_tool_choice_is_none():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER]}
    shown = MessagesInput.model_validate(body).count_job("j", "m")
    assert shown.messages == [{"role": "user", "content": "hi"}]
    assert [tool["function"]["name"] for tool in shown.tools] == ["get_weather"]
    hidden = MessagesInput.model_validate({**body, "tool_choice": {"type": "none"}}).count_job("j", "m")
    assert hidden.tools is None


USAGE = Usage(
    prompt_tokens=30, completion_tokens=7, total_tokens=37, prompt_tokens_details=PromptTokensDetails(cached_tokens=12)
)
CALL = ToolCall(id="call_abc", name="get_weather", arguments='{"city":"Paris"}')


@pytest.mark.parametrize(
    ("choice", "reason", "kinds"),
    [
        (Choice(index=0, text="Hello", finish_reason="stop"), "end_turn", ["text"]),
        (Choice(index=0, text="Hel", finish_reason="length"), "max_tokens", ["text"]),
        (Choice(index=0, text="\n", finish_reason="tool_calls", tool_calls=[CALL]), "tool_use", ["tool_use"]),
        (Choice(index=0, text="Looking.\n", finish_reason="stop", tool_calls=[CALL]), "tool_use", ["text", "tool_use"]),
        (Choice(index=0, text=" ", finish_reason="stop", tool_calls=[]), "end_turn", []),
        (Choice(index=0, text="", finish_reason="stop"), "end_turn", []),
    ],
)
def test_message_content_and_stop_reason(choice, reason, kinds):
    assert stop_reason(choice) == reason
    blocks = content_blocks(choice)
    assert [b["type"] for b in blocks] == kinds
    for block in blocks:
        if block["type"] == "tool_use":
            assert block == {"type": "tool_use", "id": "toolu_abc", "name": "get_weather", "input": {"city": "Paris"}}


def test_usage_separates_cached_input():
    usage = message_body("j", "m", Choice(index=0, text="x", finish_reason="stop"), USAGE)["usage"]
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] == 30
    assert (usage["cache_read_input_tokens"], usage["output_tokens"], usage["cache_creation_input_tokens"]) == (
        12,
        7,
        0,
    )


def parsed(frames) -> list[tuple[str, dict]]:
    """(event name, data) of each frame."""
    events = []
    for frame in frames:
        lines = dict(line.split(": ", 1) for line in frame.strip().split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_stream_accumulates_to_the_whole_message():
    """The SDK's own accumulator, fed the frames, rebuilds the message the whole answer would be."""
    deltas = [
        DeltaEvent(index=0, text="\n"),  # whitespace before a call: no text block
        DeltaEvent(index=0, text="", tool_calls=[ToolCallDelta(index=0, id="call_abc", name="get_weather")]),
        DeltaEvent(index=0, text="", tool_calls=[ToolCallDelta(index=0, arguments='{"city":')]),
        DeltaEvent(index=0, text="", tool_calls=[ToolCallDelta(index=0, arguments='"Paris"}')]),
        DeltaEvent(index=0, text="", finish_reason="tool_calls"),
    ]
    choice = Choice(index=0, text="\n", finish_reason="tool_calls", tool_calls=[CALL])
    done = DoneEvent(result=GenerationResult(choices=[choice], usage=USAGE))
    items = [None, ("1-0", StartedEvent(worker="w")), *[(f"1-{i}", d) for i, d in enumerate(deltas, 1)], ("1-9", done)]
    frames = list(message_frames(iter(items), "job", "m", tools_offered=True, timeout_s=5))
    events = parsed(frames)
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    snapshot, json_bufs = None, {}
    for name, data in events:
        if name != "ping":
            event = pydantic.TypeAdapter(RawMessageStreamEvent).validate_python(data)
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    whole = SdkMessage.model_validate(message_body("job", "m", choice, USAGE))
    assert snapshot.model_dump(exclude_none=True) == whole.model_dump(exclude_none=True)


def test_stream_of_text_opens_one_text_block():
    items = [
        ("1-0", StartedEvent(worker="w")),
        ("1-1", DeltaEvent(index=0, text="Hel")),
        ("1-2", DeltaEvent(index=0, text="lo", finish_reason="stop")),
        (
            "1-3",
            DoneEvent(
                result=GenerationResult(choices=[Choice(index=0, text="Hello", finish_reason="stop")], usage=USAGE)
            ),
        ),
    ]
    events = parsed(message_frames(iter(items), "job", "m", tools_offered=False, timeout_s=5))
    texts = [data["delta"]["text"] for name, data in events if name == "content_block_delta"]
    assert texts == ["Hel", "lo"]
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[-2][1]["usage"]["output_tokens"] == 7


def test_system_turns_within_the_conversation_join_the_system_prompt():
    chat = request(
        system="Be brief.",
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "Reminder: be kind."}]},
            {"role": "user", "content": "again"},
        ],
    ).to_chat()
    assert [(m.role, m.content) for m in chat.messages] == [
        ("system", "Be brief.\n\nReminder: be kind."),
        ("user", "hi\n\nagain"),
    ]


def test_an_effort_the_chat_template_knows_reaches_it_and_others_are_ignored():
    def chat(output_config: dict) -> object:
        body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        return MessagesRequest.model_validate({**body, "output_config": output_config})

    assert chat({"effort": "high"}).to_chat().reasoning_effort == "high"
    assert chat({"effort": "high"}).count_job("j", "m").reasoning_effort == "high"  # counted as run
    assert chat({"effort": "max"}).to_chat().reasoning_effort is None  # no such level in templates
    assert chat({}).to_chat().reasoning_effort is None
