"""Chat jobs rendered as OpenAI responses: one `chat.completion`, or chunks then [DONE].

A request that offered its functions the deprecated way (`functions`) is answered the deprecated
way, as OpenAI answers it: the call as `message.function_call` (streamed as `delta.function_call`),
never `tool_calls`, and finish_reason "function_call".
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from api.queue.responses import EventStream
from api.sse import DONE_FRAME, sse_frame
from api.streaming import non_delta_frames
from contracts.events import DeltaEvent, GenerationResult, StartedEvent, ToolCallDelta
from contracts.job_store import JobRecord
from contracts.openai_bodies import chat_completion_body
from contracts.openai_bodies import chat_completion_id as completion_id
from contracts.openai_bodies import chat_logprobs as logprobs_body


def tool_call_delta(delta: ToolCallDelta) -> dict:
    """OpenAI's stream shape: the first part has id, type and name (arguments ""), then fragments;
    a custom tool's call has `custom` (name, then fragments of its `input`) where a function's has `function`."""
    if delta.type == "custom":
        custom = {"input": delta.arguments} if delta.id is None else {"name": delta.name, "input": delta.arguments}
        head = {} if delta.id is None else {"id": delta.id, "type": "custom"}
        return {"index": delta.index, **head, "custom": custom}
    if delta.id is None:
        return {"index": delta.index, "function": {"arguments": delta.arguments}}
    function = {"name": delta.name, "arguments": delta.arguments}
    return {"index": delta.index, "id": delta.id, "type": "function", "function": function}


def function_call_delta(delta: ToolCallDelta) -> dict:
    """OpenAI's legacy stream shape: the first part has the name (arguments ""), then fragments."""
    if delta.id is None:
        return {"arguments": delta.arguments}
    return {"name": delta.name, "arguments": delta.arguments}


def legacy_finish_reason(reason: str | None) -> str | None:
    """The legacy finish reason of an answer that called a function: "function_call" where tools'
    shape has "tool_calls", or "stop" (a call of the function the request named); others, like "length", stay."""
    return "function_call" if reason in ("tool_calls", "stop") else reason


def completion_body(job_id: str, model: str, created: int, result: GenerationResult, legacy: bool = False) -> dict:
    """A `chat.completion` object; `legacy`: in the shape of OpenAI's deprecated function calling."""
    body = chat_completion_body(job_id, model, created, result)
    if legacy:
        for choice in body["choices"]:
            calls = choice["message"].pop("tool_calls", None)
            if calls:  # one at most: legacy requests have no parallel calls
                choice["message"]["function_call"] = calls[0]["function"]
                choice["finish_reason"] = legacy_finish_reason(choice["finish_reason"])
    return body


def job_result_body(record: JobRecord, result: GenerationResult) -> dict:
    """A finished chat job's result, as GET /v1/jobs/{id} shows it."""
    return completion_body(record.job_id, record.model, int(record.created_at), result)


def chunk_frames(
    events: EventStream, job_id: str, model: str, n: int, include_usage: bool, legacy: bool = False
) -> Iterator[str]:
    """`chat.completion.chunk` frames for the events of a started job, ending in [DONE]; `legacy`:
    calls in the shape of OpenAI's deprecated function calling."""
    created = int(time.time())
    called: set[int] = set()  # choices that have started a call (legacy: their finish reason changes)

    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        body = {
            "id": completion_id(job_id),
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": None,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = usage
        return sse_frame(json.dumps(body))

    yield chunk([_choice(i, {"role": "assistant", "content": ""}) for i in range(n)])
    for _, event in events:
        if isinstance(event, DeltaEvent):
            if event.reasoning:  # a thinking model's reasoning, in vLLM's and DeepSeek's field
                yield chunk([_choice(event.index, {"reasoning_content": event.reasoning})])
            if event.text or event.logprobs:
                yield chunk([_choice(event.index, {"content": event.text}, logprobs=logprobs_body(event.logprobs))])
            for call in event.tool_calls or ():
                called.add(event.index)
                delta = (
                    {"function_call": function_call_delta(call)} if legacy else {"tool_calls": [tool_call_delta(call)]}
                )
                yield chunk([_choice(event.index, delta)])
            if event.finish_reason and event.finish_reason != "cancelled":
                reason = event.finish_reason
                if legacy and event.index in called:
                    reason = legacy_finish_reason(reason)
                yield chunk([_choice(event.index, {}, reason)])
            continue
        yield from non_delta_frames(event, job_id, (lambda usage: chunk([], usage)) if include_usage else None)
        if isinstance(event, StartedEvent):
            break
    yield DONE_FRAME


def _choice(index: int, delta: dict, finish_reason: str | None = None, logprobs: dict | None = None) -> dict:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
