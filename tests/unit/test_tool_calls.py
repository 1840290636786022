"""Reading tool calls back from generated text, writing them into prompts, and masking logits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from contracts.events import TokenLogprob
from contracts.jobs import SamplingParams
from contracts.tool_markup import call_text, custom_call_text
from worker.engines.generation_request import GenerationRequest, Row
from worker.engines.sampling import allow_only
from worker.engines.tool_calls import ToolCallParser
from worker.models.prompts import plain_messages

WEATHER = call_text("get_weather", '{"city": "Paris \\"centre\\" {x}"}')
NOW = call_text("now", "{}")


def parse(text: str, piece: int) -> tuple[str, list, list]:
    """Feed `text` in pieces of `piece` characters; content, deltas and complete calls."""
    parser, content, deltas = ToolCallParser(), "", []
    for start in range(0, len(text), piece):
        more, new = parser.feed(text[start : start + piece])
        content, deltas = content + more, deltas + new
    return content + parser.finish(), deltas, parser.calls


@pytest.mark.parametrize("piece", [1, 3, 1000])
def test_text_then_calls_in_any_pieces(piece: int):
    content, deltas, calls = parse("Let me check. " + WEATHER + "\n" + NOW, piece)
    assert content == "Let me check. "
    assert [(c.name, c.arguments) for c in calls] == [
        ("get_weather", '{"city":"Paris \\"centre\\" {x}"}'),
        ("now", "{}"),
    ]
    for index, call in enumerate(calls):
        parts = [d for d in deltas if d.index == index]
        assert (parts[0].id, parts[0].name, parts[0].arguments) == (call.id, call.name, "")
        assert all(d.id is None and d.name is None for d in parts[1:])
        assert "".join(d.arguments for d in parts) == call.arguments
        json.loads(call.arguments)
    assert calls[0].id != calls[1].id and calls[0].id.startswith("call_") and len(calls[0].id) == 29


def test_text_that_only_looks_like_a_call_start_is_content():
    assert parse("a <tool_ca", 1) == ("a <tool_ca", [], [])
    assert parse("x < y", 1)[0] == "x < y"


def test_a_forced_answer_cut_inside_its_opening_tag_has_no_content():
    """tool_choice required or named: the answer is calls only, so a tag max_tokens cut is not text."""
    parser = ToolCallParser(forced=True)
    assert parser.feed("<tool_") == ("", [])
    assert parser.finish() == "" and parser.calls == []


def test_a_call_cut_short_is_not_a_call():
    content, deltas, calls = parse(WEATHER[:-20], 2)
    assert content == "" and calls == [] and deltas[0].name == "get_weather"


def test_history_renders_calls_as_the_model_writes_them():
    tools = [{"type": "function", "function": {"name": "now"}}]
    messages = [
        {"role": "user", "content": "time?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c", "function": {"name": "now", "arguments": "{ }"}}],
        },
        {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "noon"}]},
    ]
    plain = plain_messages(messages, tools)
    assert plain[0]["role"] == "system" and '"name":"now"' in plain[0]["content"]
    assert plain[2] == {"role": "assistant", "content": NOW}
    assert plain[3] == {"role": "tool", "content": "<tool_response>\nnoon\n</tool_response>"}


def test_tools_join_the_clients_system_message():
    plain = plain_messages(
        [{"role": "system", "content": "Be terse."}], [{"type": "function", "function": {"name": "f"}}]
    )
    assert len(plain) == 1 and plain[0]["content"].startswith("Be terse.\n\n") and "<tools>" in plain[0]["content"]


def test_only_allowed_tokens_keep_their_logits():
    logits = np.arange(40, dtype=np.float32)
    mask = np.zeros(2, dtype=np.int32)
    mask[0] = 1 << 3
    mask[1] = 1 << 2  # token 34
    masked = allow_only(logits, mask)
    assert masked.dtype == np.float32
    assert np.flatnonzero(np.isfinite(masked)).tolist() == [3, 34]
    assert masked[34] == 34


def entry(piece: str) -> TokenLogprob:
    return TokenLogprob(token=piece, logprob=-1.0, bytes=list(piece.encode()), top_logprobs=[])


class _Pieces:
    """A decode stream where token i is the i-th piece of text."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def decode(self, token: int) -> str:
        return self.pieces[token]


def run_row(
    pieces: list[str], stop: list[str], tool_calls: str | None, grammar: str | None = "g", logprobs: int | None = None
):
    events = []
    request = GenerationRequest(
        job_id="j",
        prompts=[[1]],
        n=1,
        max_tokens=100,
        stop=stop,
        sampling=SamplingParams(),
        emit=events.append,
        grammar=grammar,
        tool_calls=tool_calls,
        logprobs=logprobs,
    )
    row = Row(request, 0, _Pieces(pieces), frozenset({-1}))
    for token, piece in enumerate(pieces):
        row.accept(token, None if logprobs is None else entry(piece))
    row.finish("stop")
    return row, events


def test_stop_strings_cut_free_text_but_never_a_call():
    call = call_text("f", '{"a":"stop here"}')
    row, events = run_row(["Hi ", call[:15], call[15:]], stop=["stop"], tool_calls="auto")
    assert row.finish_reason == "tool_calls" and row.tools.calls[0].arguments == '{"a":"stop here"}'
    row, _ = run_row(["Hi, stop ", call], stop=["stop"], tool_calls="auto")
    assert (row.text, row.tools.calls) == (["Hi, "], [])


def test_a_named_call_ends_with_stop_and_a_json_answer_ignores_stop_strings():
    row, _ = run_row([NOW], stop=[], tool_calls="named")
    assert row.finish_reason == "stop" and row.tools.calls[0].name == "now"
    row, _ = run_row(['{"a":', '"stop"}'], stop=["stop"], tool_calls=None)
    assert "".join(row.text) == '{"a":"stop"}'


def test_only_content_tokens_get_logprobs_and_they_ride_on_its_text():
    row, events = run_row(["Sure", ", ", NOW[:5], NOW[5:20], NOW[20:]], stop=[], tool_calls="auto", logprobs=0)
    assert row.finish_reason == "tool_calls" and "".join(row.text) == "Sure, "
    assert [e.token for e in row.logprobs] == ["Sure", ", "]
    for event in events:
        assert not (event.logprobs and event.tool_calls and not event.text)
        assert "".join(e.token for e in event.logprobs or []) == (event.text if event.logprobs else "")
    assert [e for event in events for e in event.logprobs or []] == row.logprobs


def test_a_call_only_answer_has_no_logprob_entries():
    row, events = run_row([NOW[:9], NOW[9:]], stop=[], tool_calls="required", logprobs=2)
    assert row.tools.calls and row.logprobs == []
    assert all(not event.logprobs for event in events)


def test_a_token_that_ends_the_content_and_starts_a_call_keeps_its_entry():
    """As with a stop string, a token with any content text is a content token."""
    row, _ = run_row(["Sure", ", <", NOW[1:20], NOW[20:]], stop=[], tool_calls="auto", logprobs=0)
    assert "".join(row.text) == "Sure, " and [e.token for e in row.logprobs] == ["Sure", ", <"]


@pytest.mark.parametrize("piece", [1, 4, 1000])
def test_a_custom_tools_input_is_read_up_to_the_calls_end_in_any_pieces(piece: int):
    """A custom tool's input (text, which may hold braces, tags and newlines) then a function's call."""
    patch = "*** Begin Patch\n+{<tool_call>}\n\n*** End Patch\n"
    content, deltas, calls = parse("Editing. " + custom_call_text("apply_patch", patch) + "\n" + NOW, piece)
    assert content == "Editing. "
    assert [(c.name, c.type, c.arguments) for c in calls] == [
        ("apply_patch", "custom", patch),
        ("now", "function", "{}"),
    ]
    first = [d for d in deltas if d.index == 0]
    assert first[0].type == "custom" and first[0].name == "apply_patch"
    assert all(d.type == "custom" for d in first) and "".join(d.arguments for d in first) == patch


def test_a_custom_call_max_tokens_cut_is_its_input_so_far():
    parser = ToolCallParser(forced=True)
    parser.feed(custom_call_text("note", "half a thought")[:-5])
    cut = parser.unfinished
    assert cut is not None and cut.type == "custom" and cut.arguments == "half a thought"  # the tag held back
    assert not parser.calls


def test_past_custom_calls_are_shown_in_their_markup():
    messages = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "custom", "custom": {"name": "shout", "input": "HELLO THERE"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    tools = [{"type": "custom", "custom": {"name": "shout"}}]
    plain = plain_messages(messages, tools)
    assert plain[1]["content"] == custom_call_text("shout", "HELLO THERE")
    assert '"type":"custom"' in plain[0]["content"] and '{"name":<tool-name>}' in plain[0]["content"]
