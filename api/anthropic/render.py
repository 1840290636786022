"""Chat jobs rendered as Anthropic Messages: one `message` object, or its stream of named SSE events
(message_start, content blocks, message_delta, message_stop; `ping` on quiet intervals; `error`).

`usage.input_tokens` counts the prompt tokens read anew; those the prefix cache held are
`cache_read_input_tokens` (Anthropic's total input is their sum). Nothing is ever written to a
cache the client pays for, so `cache_creation_input_tokens` is 0.

An answer cut by one of `stop_sequences` ends with `stop_reason: "stop_sequence"` and names it in
`stop_sequence` (the job's choice says which stop string ended it).

A model that thinks (worker/engines/reasoning.py; gpt-oss's harmony: worker/engines/harmony_reasoning.py)
shows its reasoning as a `thinking` block before the answer when the request enabled `thinking`
(streamed as `thinking_delta`s); its `signature` is empty (Ladle signs nothing). Without it the
reasoning is left out.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from datetime import datetime, timezone

from api.anthropic.errors import error_body
from api.errors import ApiError
from api.queue.events import JobTimeout
from api.queue.responses import error_from_info, timeout_error
from api.sse import sse_frame
from api.streaming import restarted_error
from contracts.events import Choice, DeltaEvent, DoneEvent, ErrorEvent, JobEvent, StartedEvent, ToolCallDelta, Usage
from contracts.model_directory import ModelDirectory

# What a stream's frames are made from: a job event, or None when an interval passed without one.
StreamItem = tuple[str, JobEvent] | None


def message_id(job_id: str) -> str:
    """A message's ID: its job's, prefixed as Anthropic's are."""
    return f"msg_{job_id}"


def tool_use_id(call_id: str) -> str:
    """Anthropic's shape of a call's ID (the worker's are `call_` and 24 letters and digits)."""
    return "toolu_" + call_id.removeprefix("call_")


def stop_reason(choice: Choice) -> str:
    """Anthropic's stop reason for a finished choice (see the module's docstring on stop sequences)."""
    if choice.finish_reason == "length":
        return "max_tokens"
    if choice.tool_calls:
        return "tool_use"
    return "stop_sequence" if choice.stop_sequence else "end_turn"


def delta_usage(usage: Usage) -> dict:
    """The usage a message_delta carries (and, with service_tier, a message)."""
    cached = usage.prompt_tokens_details.cached_tokens
    return {
        "input_tokens": usage.prompt_tokens - cached,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def content_blocks(choice: Choice, thinking: bool = False) -> list[dict]:
    """The reasoning (`thinking`: when the request enabled it), text (when there is any; with tools
    offered, when it is more than whitespace), then tool_use blocks."""
    tools_offered = choice.tool_calls is not None
    blocks = [thinking_block(choice.reasoning)] if thinking and choice.reasoning else []
    if choice.text.strip() if tools_offered else choice.text:
        blocks.append({"type": "text", "text": choice.text})
    for call in choice.tool_calls or ():
        # The grammar the call was decoded under makes its arguments one JSON object.
        arguments = json.loads(call.arguments)
        blocks.append({"type": "tool_use", "id": tool_use_id(call.id), "name": call.name, "input": arguments})
    return blocks


def thinking_block(text: str) -> dict:
    """A thinking model's reasoning as a content block (unsigned)."""
    return {"type": "thinking", "thinking": text, "signature": ""}


def message_body(job_id: str, model: str, choice: Choice, usage: Usage, thinking: bool = False) -> dict:
    """A `message` object (`thinking`: the request enabled thinking)."""
    return {
        "id": message_id(job_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_blocks(choice, thinking),
        "stop_reason": stop_reason(choice),
        "stop_sequence": choice.stop_sequence,
        "usage": {**delta_usage(usage), "service_tier": "standard"},
    }


def event_frame(data: dict) -> str:
    """An SSE frame named by the event's type, as Anthropic's streams name every event."""
    return sse_frame(json.dumps(data, ensure_ascii=False), event=data["type"])


def error_frame(error: ApiError) -> str:
    """The `error` event that ends a stream whose job failed."""
    return event_frame(error_body(error))


PING_FRAME = event_frame({"type": "ping"})


class _Blocks:
    """A streamed message's content blocks: one open at a time, each started, fed and stopped in order.

    As in `content_blocks`, with tools offered whitespace is held until text that is more than
    whitespace comes (it then opens the text block), and dropped if a call or the end comes first.
    """

    def __init__(self, tools_offered: bool) -> None:
        self.tools_offered = tools_offered
        self.started = 0
        self.open: str | None = None
        self.held = ""
        self.call_blocks: dict[int, int] = {}  # call index -> its block's index

    def thinking(self, text: str) -> Iterator[str]:
        """Reasoning, which comes before anything else."""
        if self.open != "thinking":
            yield from self._start(thinking_block(""), "thinking")
        delta = {"type": "thinking_delta", "thinking": text}
        yield event_frame({"type": "content_block_delta", "index": self.started - 1, "delta": delta})

    def text(self, text: str) -> Iterator[str]:
        if not text:
            return
        if self.open != "text":
            if self.tools_offered and self.open in (None, "thinking") and not (self.held + text).strip():
                self.held += text
                return
            text, self.held = self.held + text, ""
            yield from self._start({"type": "text", "text": ""}, "text")
        delta = {"type": "text_delta", "text": text}
        yield event_frame({"type": "content_block_delta", "index": self.started - 1, "delta": delta})

    def call(self, delta: ToolCallDelta) -> Iterator[str]:
        if delta.id is not None:  # a new call: its id and name come first, then its arguments in parts
            self.held = ""
            self.call_blocks[delta.index] = self.started
            block = {"type": "tool_use", "id": tool_use_id(delta.id), "name": delta.name, "input": {}}
            yield from self._start(block, "tool_use")
        index = self.call_blocks.get(delta.index)
        if delta.arguments and index is not None:
            part = {"type": "input_json_delta", "partial_json": delta.arguments}
            yield event_frame({"type": "content_block_delta", "index": index, "delta": part})

    def close(self) -> Iterator[str]:
        if self.open is not None:
            self.open = None
            yield event_frame({"type": "content_block_stop", "index": self.started - 1})

    def _start(self, block: dict, kind: str) -> Iterator[str]:
        yield from self.close()
        yield event_frame({"type": "content_block_start", "index": self.started, "content_block": block})
        self.started += 1
        self.open = kind


def message_frames(
    items: Iterator[StreamItem], job_id: str, model: str, tools_offered: bool, timeout_s: float, thinking: bool = False
) -> Generator[str, None, bool]:
    """The frames of a streamed message (`thinking`: the request enabled thinking); returns False when
    the job did not end (the stream timed out: nobody will read the rest, so the caller cancels it)."""
    start = {**message_body(job_id, model, Choice(index=0, text="", finish_reason="stop"), _NO_USAGE), "content": []}
    start |= {"stop_reason": None, "stop_sequence": None}
    yield event_frame({"type": "message_start", "message": start})
    blocks = _Blocks(tools_offered)
    started = False
    try:
        for item in items:
            if item is None:
                yield PING_FRAME
                continue
            event = item[1]
            if isinstance(event, DeltaEvent) and event.index == 0:
                if thinking and event.reasoning:
                    yield from blocks.thinking(event.reasoning)
                yield from blocks.text(event.text)
                for call in event.tool_calls or ():
                    yield from blocks.call(call)
            elif isinstance(event, DoneEvent):
                yield from blocks.close()
                choice = event.result.choices[0]
                delta = {"stop_reason": stop_reason(choice), "stop_sequence": choice.stop_sequence}
                yield event_frame({"type": "message_delta", "delta": delta, "usage": delta_usage(event.result.usage)})
                yield event_frame({"type": "message_stop"})
                return True
            elif isinstance(event, ErrorEvent):
                yield error_frame(error_from_info(event.error, job_id))
                return True
            elif isinstance(event, StartedEvent):
                if started:  # it restarted on another worker: text already sent cannot be taken back
                    yield error_frame(error_from_info(restarted_error(job_id), job_id))
                    return True
                started = True
    except JobTimeout:
        yield error_frame(timeout_error(job_id, timeout_s))
        return False
    return True


_NO_USAGE = Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)


def model_object(models: ModelDirectory, name: str) -> dict:
    """A model as Anthropic's Models API describes it (its context is both its input and output limit)."""
    created = datetime.fromtimestamp(models.created_at(name), tz=timezone.utc)
    context = models.context_length(name)
    return {
        "type": "model",
        "id": name,
        "display_name": name,
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "lifecycle": "active",
        "max_input_tokens": context,
        "max_tokens": context,
    }
