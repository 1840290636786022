"""Completion jobs rendered as OpenAI `text_completion` objects and stream chunks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from api.queue.responses import EventStream
from api.sse import DONE_FRAME, sse_frame
from api.streaming import non_delta_frames
from contracts.events import DeltaEvent, GenerationResult, StartedEvent
from contracts.job_store import JobRecord
from contracts.legacy_logprobs import LegacyLogprobs
from contracts.openai_bodies import public_finish_reason
from contracts.openai_bodies import text_completion_body as completion_body
from contracts.openai_bodies import text_completion_id as completion_id


def job_result_body(record: JobRecord, result: GenerationResult) -> dict:
    """A finished completion job's result, as GET /v1/jobs/{id} shows it."""
    return completion_body(record.job_id, record.model, int(record.created_at), result)


def chunk_frames(
    events: EventStream,
    job_id: str,
    model: str,
    prompts: list[str],
    n: int,
    echo: bool,
    include_usage: bool,
    logprobs: int | None = None,
) -> Iterator[str]:
    """`text_completion` chunks, each naming its choice index, ending in [DONE].

    With `logprobs`, each chunk carries those of its text; an echoed prompt then comes once the
    worker read it, with the prompt's logprobs.
    """
    created = int(time.time())
    offsets = [LegacyLogprobs() for _ in range(len(prompts) * n)] if logprobs is not None else None

    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        body = {"id": completion_id(job_id), "object": "text_completion", "created": created, "model": model}
        body |= {"system_fingerprint": None, "choices": choices}
        if include_usage:
            body["usage"] = usage
        return sse_frame(json.dumps(body))

    if echo and offsets is None:
        yield from (chunk([_choice(i, prompts[i // n])]) for i in range(len(prompts) * n))
    for _, event in events:
        if isinstance(event, DeltaEvent):
            if offsets is not None and event.prompt_logprobs is not None:
                prompt = prompts[event.index // n]
                yield chunk([_choice(event.index, prompt, logprobs=offsets[event.index].piece(event.prompt_logprobs))])
                offsets[event.index].restart(len(prompt))
            elif event.text or event.finish_reason or event.logprobs:
                pieces = offsets[event.index].piece(event.logprobs or []) if offsets is not None else None
                yield chunk([_choice(event.index, event.text, event.finish_reason, pieces)])
            continue
        yield from non_delta_frames(event, job_id, (lambda usage: chunk([], usage)) if include_usage else None)
        if isinstance(event, StartedEvent):
            break
    yield DONE_FRAME


def _choice(index: int, text: str, finish_reason: str | None = None, logprobs: dict | None = None) -> dict:
    reason = public_finish_reason(finish_reason) if finish_reason else None
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}
