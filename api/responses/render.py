"""Responses as clients see them: the Response object, a page of input items, and the streamed events.

The streamed events follow OpenAI's order (response.created, response.in_progress, then per output
item: output_item.added, its content, reasoning text, arguments or custom tool input deltas, their
done events, output_item.done; a thinking model's reasoning item comes first and closes when its
answer or first call starts; last
response.completed, response.incomplete or response.failed), each with the next `sequence_number`.
The final event's response comes from `response_object`, as a non-streamed answer does, and its
items from `convert.outcome_of`: what was streamed and what is stored are the same items.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from api.errors import bad_request
from api.queue.responses import EventStream
from api.responses.convert import call_item, failed_outcome, message_item, outcome_of, reasoning_item
from api.responses.store import StoredResponse
from api.sse import sse_frame
from api.streaming import restarted_error
from contracts.errors import ErrorInfo
from contracts.events import DeltaEvent, DoneEvent, ErrorEvent, StartedEvent, ToolCall, ToolCallDelta

# Per kind of call item: the field its fragments add to, and its events' type before .delta and .done.
_CALL_FIELDS = {
    "function_call": ("arguments", "response.function_call_arguments"),
    "custom_tool_call": ("input", "response.custom_tool_call_input"),
}
# The terminal event of each final status.
TERMINAL_EVENTS = {"completed": "response.completed", "incomplete": "response.incomplete"}


def pending_outcome(status: str = "in_progress") -> dict:
    """The outcome fields of a response that has not ended (status queued or in_progress)."""
    return {
        "status": status,
        "output": [],
        "usage": None,
        "error": None,
        "incomplete_details": None,
        "completed_at": None,
    }


def response_object(stored: StoredResponse, outcome: dict | None = None) -> dict:
    """The Response object: the stored request's echoed fields with its outcome (pending when None)."""
    outcome = outcome or pending_outcome()
    return {
        "id": stored.id,
        "object": "response",
        "created_at": stored.created_at,
        "status": outcome["status"],
        "completed_at": outcome["completed_at"],
        "error": outcome["error"],
        "incomplete_details": outcome["incomplete_details"],
        **stored.fields,
        "output": outcome["output"],
        "usage": outcome["usage"],
    }


def items_page(items: list[dict], after: str | None, limit: int, order: str) -> dict:
    """OpenAI's list of items: up to `limit` after the item `after`, oldest first (`asc`) or newest first."""
    ordered = items if order == "asc" else items[::-1]
    start = 0
    if after is not None:
        position = next((i for i, item in enumerate(ordered) if item["id"] == after), None)
        if position is None:
            raise bad_request(f"No input item with ID '{after}' in this response.", "after", "invalid_value")
        start = position + 1
    data = ordered[start : start + limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": start + limit < len(ordered),
    }


class _Events:
    """Numbers the events of one stream and writes each as an SSE frame named by its type; those
    numbered up to `starting_after` (a resumed replay) are written as "" (nothing)."""

    def __init__(self, starting_after: int = -1) -> None:
        self.sequence = 0
        self.starting_after = starting_after

    def frame(self, kind: str, **fields) -> str:
        body = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return sse_frame(json.dumps(body), event=kind) if body["sequence_number"] > self.starting_after else ""


class _Output:
    """The output items of a streamed response as they open and close."""

    def __init__(self, job_id: str, events: _Events) -> None:
        self.job_id = job_id
        self.events = events
        self.done: list[dict] = []  # closed items, in output order
        self.index = 0  # the next item's output_index
        self.message: int | None = None  # the open message's output_index
        self.text = ""
        self.held = ""  # leading whitespace: an answer that turns out to be calls shows no message
        self.call: tuple[int, dict] | None = None  # the open call's output_index and item
        self.reasoning: int | None = None  # the open reasoning item's output_index
        self.reasoning_text = ""

    def reasoning_delta(self, text: str) -> Iterator[str]:
        """Frames for new reasoning text (its item opens with the first)."""
        if self.reasoning is None:
            self.reasoning, self.index = self.index, self.index + 1
            item = reasoning_item(self.job_id, "", "in_progress")
            yield from self._open_item(self.reasoning, item, {"type": "reasoning_text", "text": ""})
        self.reasoning_text += text
        yield self.events.frame(
            "response.reasoning_text.delta",
            item_id=f"rs_{self.job_id}",
            output_index=self.reasoning,
            content_index=0,
            delta=text,
        )

    def close_reasoning(self, item: dict | None = None) -> Iterator[str]:
        """Frames closing the open reasoning item (as `item`, else as far as it came), if one is open."""
        if self.reasoning is None:
            return
        item = item or reasoning_item(self.job_id, self.reasoning_text)
        part = item["content"][0]
        common = {"item_id": item["id"], "output_index": self.reasoning, "content_index": 0}
        yield self.events.frame("response.reasoning_text.done", **common, text=part["text"])
        yield self.events.frame("response.content_part.done", **common, part=part)
        yield self.events.frame("response.output_item.done", output_index=self.reasoning, item=item)
        self.done.append(item)
        self.reasoning = None

    def text_delta(self, text: str) -> Iterator[str]:
        """Frames for new answer text (none while only whitespace has come)."""
        if self.message is None:
            self.held += text
            if self.held.strip():
                yield from self._open_message()
            return
        yield from self._delta(text)

    def _open_message(self) -> Iterator[str]:
        yield from self.close_reasoning()  # the answer starts: the thinking is over
        self.message, self.index = self.index, self.index + 1
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        yield from self._open_item(self.message, message_item(self.job_id, "", "in_progress"), part)
        held, self.held = self.held, ""
        if held:
            yield from self._delta(held)

    def _open_item(self, output_index: int, item: dict, part: dict) -> Iterator[str]:
        """An item added with no content yet, then its first content part."""
        yield self.events.frame("response.output_item.added", output_index=output_index, item={**item, "content": []})
        yield self.events.frame(
            "response.content_part.added", item_id=item["id"], output_index=output_index, content_index=0, part=part
        )

    def _delta(self, text: str) -> Iterator[str]:
        self.text += text
        yield self.events.frame(
            "response.output_text.delta",
            item_id=f"msg_{self.job_id}",
            output_index=self.message,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def close_message(self, item: dict) -> Iterator[str]:
        """Frames closing the open message as `item`."""
        part = item["content"][0]
        common = {"item_id": item["id"], "output_index": self.message, "content_index": 0}
        yield self.events.frame("response.output_text.done", **common, text=part["text"], logprobs=[])
        yield self.events.frame("response.content_part.done", **common, part=part)
        yield self.events.frame("response.output_item.done", output_index=self.message, item=item)
        self.done.append(item)
        self.message = None

    def call_delta(self, delta: ToolCallDelta) -> Iterator[str]:
        """Frames for part of a call: its start (closing what came before) or a fragment of its
        arguments (a custom tool's: of its input)."""
        if delta.id is not None:  # a call starts: the text before it, and any call before it, are complete
            yield from self.close_reasoning()
            if self.message is not None:
                yield from self.close_message(message_item(self.job_id, self.text))
            if self.call is not None:
                yield from self.close_call(self._finished_call())
            call = ToolCall(id=delta.id, name=delta.name or "", arguments="", type=delta.type or "function")
            self.call = (self.index, call_item(self.job_id, delta.index, call, "in_progress"))
            self.index += 1
            yield self.events.frame("response.output_item.added", output_index=self.call[0], item=self.call[1])
        if delta.arguments and self.call is not None:
            index, item = self.call
            field, kind = _CALL_FIELDS[item["type"]]
            item[field] += delta.arguments
            yield self.events.frame(f"{kind}.delta", item_id=item["id"], output_index=index, delta=delta.arguments)

    def _finished_call(self, status: str = "completed") -> dict:
        return {**self.call[1], "status": status}

    def close_call(self, item: dict) -> Iterator[str]:
        """Frames closing the open call as `item`."""
        index = self.call[0]
        field, kind = _CALL_FIELDS[item["type"]]
        named = {"name": item["name"]} if item["type"] == "function_call" else {}
        yield self.events.frame(f"{kind}.done", item_id=item["id"], output_index=index, **{field: item[field]}, **named)
        yield self.events.frame("response.output_item.done", output_index=index, item=item)
        self.done.append(item)
        self.call = None

    def close(self, final: list[dict]) -> Iterator[str]:
        """Close what is open with the final items. A message in them never opened (an empty or
        whitespace answer) opens now, unless a call came (one cut short: the answer had no text);
        items never streamed at all (a replay after the job's events expired) are shown whole."""
        by_id = {item["id"]: item for item in final}
        reasoning = by_id.get(f"rs_{self.job_id}")
        if self.reasoning is not None:
            yield from self.close_reasoning(reasoning)
        elif reasoning is not None and not self.done:  # never streamed: shown whole
            self.reasoning_text = ""
            yield from self.reasoning_delta(reasoning["content"][0]["text"])
            yield from self.close_reasoning(reasoning)
        message = by_id.get(f"msg_{self.job_id}")
        called = self.call is not None or any(item["type"] in _CALL_FIELDS for item in self.done)
        shown = {item["id"] for item in self.done}
        if self.message is None and message is not None and not called and message["id"] not in shown:
            self.held = message["content"][0]["text"]  # the text held back, or all of it in a replay
            yield from self._open_message()
        if self.message is not None:
            yield from self.close_message(message or message_item(self.job_id, self.text))
        if self.call is not None:
            # A call cut short by max_output_tokens is not among the final items: it closes incomplete.
            yield from self.close_call(by_id.get(self.call[1]["id"]) or self._finished_call("incomplete"))
        shown = {item["id"] for item in self.done}
        for item in final:
            if item["type"] in _CALL_FIELDS and item["id"] not in shown:
                field, kind = _CALL_FIELDS[item["type"]]
                self.call, self.index = (self.index, {**item, "status": "in_progress", field: ""}), self.index + 1
                yield self.events.frame("response.output_item.added", output_index=self.call[0], item=self.call[1])
                yield self.events.frame(
                    f"{kind}.delta", item_id=item["id"], output_index=self.call[0], delta=item[field]
                )
                yield from self.close_call(item)


def response_frames(
    events: EventStream, job_id: str, pending: dict, finish: Callable[[dict], dict], starting_after: int = -1
) -> Iterator[str]:
    """The SSE frames of a started job's response; `pending` is the Response object before it ends,
    `finish(outcome)` records how it ended and returns the final Response object. The same job
    events always give the same frames: a replay resumes after `starting_after` (a sequence number)."""
    frames = _response_frames(events, job_id, pending, finish, _Events(starting_after))
    return (frame for frame in frames if frame)


def _response_frames(
    events: EventStream, job_id: str, pending: dict, finish: Callable[[dict], dict], stream: _Events
) -> Iterator[str]:
    output = _Output(job_id, stream)
    yield stream.frame("response.created", response=pending)
    yield stream.frame("response.in_progress", response={**pending, "status": "in_progress"})
    for _, event in events:
        if isinstance(event, DeltaEvent):
            if event.reasoning:
                yield from output.reasoning_delta(event.reasoning)
            if event.text:
                yield from output.text_delta(event.text)
            for delta in event.tool_calls or ():
                yield from output.call_delta(delta)
        elif isinstance(event, DoneEvent):
            outcome = outcome_of(job_id, event.result)
            yield from output.close(outcome["output"])
            # The items streamed are the final ones (a call max_output_tokens cut is in both, incomplete).
            outcome["output"] = output.done
            yield stream.frame(TERMINAL_EVENTS.get(outcome["status"], "response.failed"), response=finish(outcome))
            return
        elif isinstance(event, (ErrorEvent, StartedEvent)):
            # A restart (StartedEvent) cannot take back text already sent: the response fails.
            error: ErrorInfo = event.error if isinstance(event, ErrorEvent) else restarted_error(job_id)
            yield stream.frame("response.failed", response=finish(failed_outcome(error, output.done)))
            return
