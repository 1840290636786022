"""The Responses API's streamed events, built from a job's events: names, order, sequence numbers, and
the same items as the final response."""

from __future__ import annotations

import json

import pytest

from api.errors import ApiError
from api.responses.render import items_page, response_frames, response_object
from api.responses.store import StoredResponse
from contracts.errors import ErrorInfo
from contracts.events import (
    Choice,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    GenerationResult,
    StartedEvent,
    ToolCall,
    ToolCallDelta,
    Usage,
)

USAGE = Usage(prompt_tokens=5, completion_tokens=4, total_tokens=9)
STORED = StoredResponse(id="resp_j", job_id="j", created_at=1, fields={"model": "m"})


def run(*events, starting_after: int = -1) -> list[dict]:
    """The events' frames parsed back: each frame's `event:` name checked against its data's type."""
    finished: list[dict] = []

    def finish(outcome: dict) -> dict:
        finished.append(outcome)
        return response_object(STORED, outcome)

    numbered = ((f"1-{i}", e) for i, e in enumerate(events))
    frames = list(response_frames(numbered, "j", response_object(STORED), finish, starting_after))
    parsed = []
    for frame in frames:
        lines = dict(line.split(": ", 1) for line in frame.strip().split("\n"))
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"]
        parsed.append(data)
    numbers = [p["sequence_number"] for p in parsed]
    assert numbers == list(range(starting_after + 1, starting_after + 1 + len(parsed)))
    assert len(finished) == 1
    return parsed


def done(text: str, reason: str = "stop", calls: list[ToolCall] | None = None) -> DoneEvent:
    choice = Choice(index=0, text=text, finish_reason=reason, tool_calls=calls)
    return DoneEvent(result=GenerationResult(choices=[choice], usage=USAGE))


def test_a_text_answer():
    events = run(DeltaEvent(index=0, text="Hel"), DeltaEvent(index=0, text="lo", finish_reason="stop"), done("Hello"))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Hello"
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["usage"]["total_tokens"] == 9
    assert events[-2]["item"] == final["output"][0] and final["output"][0]["content"][0]["text"] == "Hello"


def test_a_replay_resumes_after_a_sequence_number():
    events = (DeltaEvent(index=0, text="Hel"), DeltaEvent(index=0, text="lo"), done("Hello"))
    assert run(*events, starting_after=4) == run(*events)[5:]


def test_a_replay_of_only_the_end_shows_every_item_whole():
    """Once the job's events expired, only its terminal event is left: the items come from it."""
    call = ToolCall(id="call_1", name="f", arguments='{"a":1}')
    events = run(done("Sure.", "tool_calls", [call]))
    assert [e["type"] for e in events][2:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1]["response"]["output"]
    assert [e["item"] for e in events if e["type"] == "response.output_item.done"] == final
    assert final[1]["arguments"] == '{"a":1}' and final[1]["status"] == "completed"


def test_an_empty_answer_still_has_its_message():
    events = run(done(""))
    assert [e["type"] for e in events][2:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]


def test_text_then_a_call():
    call = ToolCall(id="call_1", name="f", arguments='{"a":1}')
    events = run(
        DeltaEvent(index=0, text="Sure."),
        DeltaEvent(index=0, text="", tool_calls=[ToolCallDelta(index=0, id="call_1", name="f")]),
        DeltaEvent(index=0, text="", tool_calls=[ToolCallDelta(index=0, arguments='{"a"')]),
        DeltaEvent(index=0, text="", tool_calls=[ToolCallDelta(index=0, arguments=":1}")], finish_reason="tool_calls"),
        done("Sure.", "tool_calls", [call]),
    )
    types = [e["type"] for e in events]
    assert types.index("response.output_item.done") < types.index("response.function_call_arguments.delta")
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [(0, "message"), (1, "function_call")]
    assert added[1]["item"]["status"] == "in_progress" and added[1]["item"]["call_id"] == "call_1"
    arguments = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert arguments["arguments"] == '{"a":1}' and arguments["name"] == "f"
    final = events[-1]["response"]
    closed = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert closed == final["output"] and types[-1] == "response.completed"


def test_whitespace_before_a_call_shows_no_message():
    call = ToolCall(id="call_1", name="f", arguments="{}")
    events = run(
        DeltaEvent(index=0, text="\n"),
        DeltaEvent(index=0, text="", tool_calls=[ToolCallDelta(index=0, id="call_1", name="f", arguments="{}")]),
        done("\n", "tool_calls", [call]),
    )
    assert [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"] == ["function_call"]
    assert [item["type"] for item in events[-1]["response"]["output"]] == ["function_call"]


def test_a_call_cut_short_closes_incomplete():
    events = run(
        DeltaEvent(index=0, text="", tool_calls=[ToolCallDelta(index=0, id="call_1", name="f", arguments='{"a"')]),
        done("", "length"),
    )
    closed = next(e for e in events if e["type"] == "response.output_item.done")
    assert closed["item"]["status"] == "incomplete" and closed["item"]["arguments"] == '{"a"'
    assert [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"] == ["function_call"]
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-1]["response"]["output"] == [closed["item"]]


@pytest.mark.parametrize(
    "ending",
    [
        ErrorEvent(error=ErrorInfo(status=500, message="boom", type="server_error", code="worker_lost")),
        StartedEvent(worker="w2"),
    ],
)
def test_a_failure_mid_stream_ends_in_response_failed(ending):
    events = run(DeltaEvent(index=0, text="Hi"), ending)
    assert events[-1]["type"] == "response.failed"
    response = events[-1]["response"]
    assert response["status"] == "failed" and response["error"]["code"] in ("worker_lost", "worker_restarted")


def test_items_pages():
    items = [{"id": f"i{n}"} for n in range(5)]
    page = items_page(items, None, 2, "desc")
    assert [i["id"] for i in page["data"]] == ["i4", "i3"] and page["has_more"]
    assert (page["first_id"], page["last_id"]) == ("i4", "i3")
    last = items_page(items, "i1", 10, "asc")
    assert [i["id"] for i in last["data"]] == ["i2", "i3", "i4"] and not last["has_more"]
    assert items_page([], None, 5, "asc") == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    with pytest.raises(ApiError) as raised:
        items_page(items, "nope", 2, "asc")
    assert raised.value.param == "after"
