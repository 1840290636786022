"""Custom tools (OpenAI's freeform tools: the input is text, free or in a lark or regex grammar) through
the Responses API and chat completions, with the official openai SDK against the real stack: the
grammar holds every call's input, calls stream as OpenAI's events, outputs go back in later turns,
and what cannot be run is a 400 naming it."""

from __future__ import annotations

import re

import pytest
import requests
from openai import OpenAI

from tests.helpers import SMOLLM2, TINY, assert_error

WORD_REGEX = r"[a-z]{1,8}( [a-z]{1,8}){0,2}"
SHOUT = {
    "type": "custom",
    "name": "shout",
    "description": "Shouts up to three words.",
    "format": {"type": "grammar", "syntax": "regex", "definition": WORD_REGEX},
}
# SHOUT in chat's shape.
CHAT_SHOUT = {
    "type": "custom",
    "custom": {
        "name": "shout",
        "format": {"type": "grammar", "grammar": {"syntax": "regex", "definition": WORD_REGEX}},
    },
}
SUM_GRAMMAR = 'start: NUMBER " + " NUMBER\nNUMBER: /[0-9]{1,3}/\n'
ADD = {
    "type": "custom",
    "name": "add",
    "description": "Adds two numbers written as 'a + b'.",
    "format": {"type": "grammar", "syntax": "lark", "definition": SUM_GRAMMAR},
}
NOTE = {"type": "custom", "name": "note", "description": "Takes a note."}
# Codex CLI's apply_patch tool: a lark grammar with imports, aliases and optional parts.
PATCH_GRAMMAR = """start: begin_patch hunk+ end_patch
begin_patch: "*** Begin Patch" LF
end_patch: "*** End Patch" LF?

hunk: add_hunk | delete_hunk | update_hunk
add_hunk: "*** Add File: " filename LF add_line+
delete_hunk: "*** Delete File: " filename LF
update_hunk: "*** Update File: " filename LF change_move? change?

filename: /(.+)/
add_line: "+" /(.*)/ LF -> line

change_move: "*** Move to: " filename LF
change: (change_context | change_line)+ eof_line?
change_context: ("@@" | "@@ " /(.+)/) LF
change_line: ("+" | "-" | " ") /(.*)/ LF
eof_line: "*** End of File" LF

%import common.LF
"""
APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files. This is a FREEFORM tool: do not wrap the patch in JSON.",
    "format": {"type": "grammar", "syntax": "lark", "definition": PATCH_GRAMMAR},
}
# Each line of a patch: a header or a hunk line (PATCH_GRAMMAR's line forms).
PATCH_LINE = re.compile(
    r"\*\*\* (Begin Patch|End Patch|End of File)"
    r"|\*\*\* (Add File|Delete File|Update File|Move to): .+"
    r"|@@( .+)?|[+\- ].*"
)


@pytest.fixture(scope="module")
def client(api_url: str) -> OpenAI:
    return OpenAI(base_url=f"{api_url}/v1", api_key="x", max_retries=0)


def _forced(client: OpenAI, tool: dict, **overrides):
    body = {
        "model": TINY,
        "input": "Use the tool.",
        "tools": [tool],
        "tool_choice": {"type": "custom", "name": tool["name"]},
        "max_output_tokens": 60,
        "temperature": 0,
        **overrides,
    }
    return client.responses.create(**body)


def _only_call(response):
    [call] = response.output
    assert call.type == "custom_tool_call", response.output
    assert call.id.startswith("ctc_") and call.call_id.startswith("call_") and call.status == "completed"
    return call


def test_a_regex_tool_call_matches_its_regex(client: OpenAI):
    response = _forced(client, SHOUT)
    assert response.status == "completed"
    call = _only_call(response)
    assert call.name == "shout" and re.fullmatch(WORD_REGEX, call.input), call.input
    assert response.tools[0].type == "custom" and response.tools[0].format.syntax == "regex"


def test_a_lark_tool_call_matches_its_grammar(client: OpenAI):
    call = _only_call(_forced(client, ADD, model=SMOLLM2, input="Add 12 and 30 with the add tool."))
    assert re.fullmatch(r"[0-9]{1,3} \+ [0-9]{1,3}", call.input), call.input


def test_codex_apply_patch_grammar_shapes_the_patch(client: OpenAI):
    """Codex CLI's own tool: every line the model writes is one of the patch's line forms."""
    response = _forced(
        client,
        APPLY_PATCH,
        model=SMOLLM2,
        input="Create the file hello.txt containing the line Hello.",
        max_output_tokens=80,
    )
    [item] = response.output
    assert item.type == "custom_tool_call" and item.name == "apply_patch"
    assert item.input.startswith("*** Begin Patch\n")
    lines = item.input.split("\n")
    complete = lines if response.status == "completed" else lines[:-1]  # a cut call's last line may be partial
    assert all(PATCH_LINE.fullmatch(line) for line in complete if line), item.input
    if response.status == "completed":
        assert item.input.rstrip("\n").endswith("*** End Patch")
    else:
        assert response.incomplete_details.reason == "max_output_tokens" and item.status == "incomplete"


def test_a_free_text_tool_takes_any_text_up_to_the_call_end(client: OpenAI):
    response = _forced(client, NOTE, model=SMOLLM2, input="Take a note: the meeting is at 3pm.", max_output_tokens=60)
    call = _only_call(response)
    assert call.name == "note" and call.input.strip(), call.input
    assert "\n</tool_call>" not in call.input  # the call's end, never part of its input


def test_custom_calls_stream_as_openai_events(client: OpenAI):
    with client.responses.stream(
        model=TINY,
        input="Use the tool.",
        tools=[SHOUT],
        tool_choice={"type": "custom", "name": "shout"},
        max_output_tokens=60,
        temperature=0,
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    deltas = [event.delta for event in events if event.type == "response.custom_tool_call_input.delta"]
    [done] = [event for event in events if event.type == "response.custom_tool_call_input.done"]
    call = _only_call(final)
    assert deltas and "".join(deltas) == done.input == call.input
    assert done.item_id == call.id
    added = kinds.index("response.output_item.added")
    assert kinds.index("response.custom_tool_call_input.delta") > added
    assert kinds.index("response.output_item.done") > kinds.index("response.custom_tool_call_input.done")
    assert kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    # What was streamed is what is stored.
    assert client.responses.retrieve(final.id).output[0].input == call.input


def test_a_custom_call_and_its_output_go_back_through_previous_response_id(client: OpenAI):
    first = _forced(client, SHOUT)
    call = _only_call(first)
    second = client.responses.create(
        model=TINY,
        previous_response_id=first.id,
        input=[{"type": "custom_tool_call_output", "call_id": call.call_id, "output": "HELLO"}],
        tools=[SHOUT],
        max_output_tokens=4,
    )
    assert second.status in ("completed", "incomplete")
    *earlier, item = client.responses.input_items.list(second.id, order="asc").data
    assert item.type == "custom_tool_call_output" and item.call_id == call.call_id and item.output == "HELLO"
    assert [(i.type, i.input) for i in earlier if i.type == "custom_tool_call"] == [("custom_tool_call", call.input)]
    # The call, sent back as an input item, is shown to the model as it was written.
    sent_back = client.responses.input_tokens.count(
        model=TINY,
        input=[
            {"type": "message", "role": "user", "content": "Use the tool."},
            {"type": "custom_tool_call", "call_id": call.call_id, "name": "shout", "input": call.input},
            {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "HELLO"},
        ],
        tools=[SHOUT],
    )
    without = client.responses.input_tokens.count(model=TINY, input="Use the tool.", tools=[SHOUT])
    assert sent_back.input_tokens > without.input_tokens


def test_functions_and_custom_tools_together_in_auto_mode(client: OpenAI):
    weather = {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    }
    response = client.responses.create(
        model=SMOLLM2,
        input="What is the weather in Paris?",
        tools=[weather, SHOUT],
        tool_choice="required",
        max_output_tokens=40,
        temperature=0,
    )
    assert response.output and all(item.type in ("function_call", "custom_tool_call") for item in response.output)


def test_chat_completions_take_custom_tools_in_chat_shape(client: OpenAI):
    completion = client.chat.completions.create(
        model=TINY,
        messages=[{"role": "user", "content": "Use the tool."}],
        tools=[CHAT_SHOUT],
        tool_choice={"type": "custom", "custom": {"name": "shout"}},
        max_tokens=60,
        temperature=0,
    )
    [call] = completion.choices[0].message.tool_calls
    assert call.type == "custom" and call.custom.name == "shout" and re.fullmatch(WORD_REGEX, call.custom.input)
    # Streamed, the fragments of `custom.input` join to the same input.
    chunks = client.chat.completions.create(
        model=TINY,
        messages=[{"role": "user", "content": "Use the tool."}],
        tools=[CHAT_SHOUT],
        tool_choice={"type": "custom", "custom": {"name": "shout"}},
        max_tokens=60,
        temperature=0,
        stream=True,
    )
    parts = [
        call.model_extra["custom"]
        for chunk in chunks
        for choice in chunk.choices
        for call in choice.delta.tool_calls or ()
    ]
    assert parts[0]["name"] == "shout" and "".join(p["input"] for p in parts) == call.custom.input


@pytest.mark.parametrize(
    ("tool", "param"),
    [
        ({**ADD, "format": {"type": "grammar", "syntax": "lark", "definition": "start: missing_rule"}}, "tools.0"),
        ({**SHOUT, "format": {"type": "grammar", "syntax": "regex", "definition": "[a-z"}}, "tools.0"),
        ({**SHOUT, "format": {"type": "grammar", "syntax": "ebnf", "definition": "x"}}, "tools.0.format.syntax"),
        ({**SHOUT, "format": {"type": "grammar", "syntax": "lark", "definition": ""}}, "tools.0.format.definition"),
        ({**SHOUT, "name": "bad name"}, "tools.0.name"),
        ({**SHOUT, "colour": "red"}, "tools.0.colour"),
    ],
    ids=["lark-unknown-rule", "regex-unclosed", "unknown-syntax", "empty-grammar", "bad-name", "unknown-field"],
)
def test_a_custom_tool_that_cannot_be_run_is_a_400_naming_it(api_url: str, tool: dict, param: str):
    body = {"model": TINY, "input": "hi", "tools": [tool]}
    error = assert_error(requests.post(f"{api_url}/v1/responses", json=body, timeout=30), 400)
    assert error["param"].startswith(param), error


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"tool_choice": {"type": "custom", "name": "nope"}}, "tool_choice"),
        ({"tool_choice": {"type": "function", "name": "shout"}}, "tool_choice"),
        ({"tools": [SHOUT, {**NOTE, "name": "shout"}]}, "tools"),
        ({"input": [{"type": "custom_tool_call_output", "output": "x"}]}, "input.0.call_id"),
        ({"input": [{"type": "custom_tool_call", "call_id": "c1", "name": "shout"}]}, "input.0.input"),
    ],
    ids=[
        "unknown-custom-choice",
        "function-choice-of-a-custom-tool",
        "duplicate-names",
        "output-no-call-id",
        "call-no-input",
    ],
)
def test_bad_custom_tool_requests_are_400s(api_url: str, overrides: dict, param: str):
    body = {"model": TINY, "input": "hi", "tools": [SHOUT], **overrides}
    assert_error(requests.post(f"{api_url}/v1/responses", json=body, timeout=30), 400, param)


@pytest.mark.parametrize(
    ("custom", "param"),
    [
        (
            {"name": "x", "format": {"type": "grammar", "grammar": {"syntax": "regex", "definition": "[a"}}},
            "tools.0.custom",
        ),
        (
            {"name": "x", "format": {"type": "grammar", "grammar": {"syntax": "ebnf", "definition": "a"}}},
            "tools.0.custom.format.grammar.syntax",
        ),
        ({"name": "x", "format": {"type": "bogus"}}, "tools.0.custom.format.type"),
        ({"format": {"type": "text"}}, "tools.0.custom.name"),
    ],
    ids=["regex-unclosed", "unknown-syntax", "unknown-format", "no-name"],
)
def test_bad_custom_tools_in_chat_are_400s(api_url: str, custom: dict, param: str):
    body = {
        "model": TINY,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "custom", "custom": custom}],
    }
    assert_error(requests.post(f"{api_url}/v1/chat/completions", json=body, timeout=30), 400, param)
