"""Chat jobs rendered as OpenAI responses: one `chat.completion`, or chunks then [DONE]."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from api.queue.responses import EventStream
from api.sse import DONE_FRAME, sse_frame
from api.streaming import non_delta_frames, public_finish_reason
from contracts.events import DeltaEvent, GenerationResult, StartedEvent, TokenLogprob
from contracts.job_store import JobRecord


def completion_id(job_id: str) -> str:
    return f"chatcmpl-{job_id}"


def logprobs_body(entries: list[TokenLogprob] | None) -> dict | None:
    """A choice's `logprobs`: its tokens with their alternatives (None when not asked for)."""
    return None if entries is None else {"content": [e.model_dump() for e in entries], "refusal": None}


def completion_body(job_id: str, model: str, created: int, result: GenerationResult) -> dict:
    """A `chat.completion` object."""
    return {
        "id": completion_id(job_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": c.index,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": logprobs_body(c.logprobs),
                "finish_reason": public_finish_reason(c.finish_reason),
            }
            for c in result.choices
        ],
        "usage": result.usage.model_dump(),
        "system_fingerprint": None,
    }


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
            if event.finish_reason and event.finish_reason != "cancelled":
                yield chunk([_choice(event.index, {}, event.finish_reason)])
            continue
        yield from non_delta_frames(event, job_id, (lambda usage: chunk([], usage)) if include_usage else None)
        if isinstance(event, StartedEvent):
            break
    yield DONE_FRAME


def _choice(index: int, delta: dict, finish_reason: str | None = None, logprobs: dict | None = None) -> dict:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
