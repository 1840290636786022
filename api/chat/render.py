"""Chat jobs rendered as OpenAI responses: one `chat.completion`, or chunks then [DONE]."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from api.queue.responses import EventStream
from api.sse import DONE_FRAME, sse_frame
from api.streaming import non_delta_frames
from contracts.events import DeltaEvent, GenerationResult, StartedEvent, ToolCallDelta
from contracts.job_store import JobRecord
from contracts.openai_bodies import chat_completion_body as completion_body
from contracts.openai_bodies import chat_completion_id as completion_id
from contracts.openai_bodies import chat_logprobs as logprobs_body


def tool_call_delta(delta: ToolCallDelta) -> dict:
    """OpenAI's stream shape: the first part has id, type and name (arguments ""), then fragments."""
    if delta.id is None:
        return {"index": delta.index, "function": {"arguments": delta.arguments}}
    function = {"name": delta.name, "arguments": delta.arguments}
    return {"index": delta.index, "id": delta.id, "type": "function", "function": function}


def job_result_body(record: JobRecord, result: GenerationResult) -> dict:
    """A finished chat job's result, as GET /v1/jobs/{id} shows it."""
    return completion_body(record.job_id, record.model, int(record.created_at), result)


def chunk_frames(events: EventStream, job_id: str, model: str, n: int, include_usage: bool) -> Iterator[str]:
    """`chat.completion.chunk` frames for the events of a started job, ending in [DONE]."""
    created = int(time.time())

    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        body = {
            "id": completion_id(job_id),
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = usage
        return sse_frame(json.dumps(body))

    yield chunk([_choice(i, {"role": "assistant", "content": ""}) for i in range(n)])
    for _, event in events:
        if isinstance(event, DeltaEvent):
            if event.text or event.logprobs:
                yield chunk([_choice(event.index, {"content": event.text}, logprobs=logprobs_body(event.logprobs))])
            for call in event.tool_calls or ():
                yield chunk([_choice(event.index, {"tool_calls": [tool_call_delta(call)]})])
            if event.finish_reason and event.finish_reason != "cancelled":
                yield chunk([_choice(event.index, {}, event.finish_reason)])
            continue
        yield from non_delta_frames(event, job_id, (lambda usage: chunk([], usage)) if include_usage else None)
        if isinstance(event, StartedEvent):
            break
    yield DONE_FRAME


def _choice(index: int, delta: dict, finish_reason: str | None = None, logprobs: dict | None = None) -> dict:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
