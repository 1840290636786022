"""Batches as Anthropic's Message Batches: the MessageBatch object, and each line's result.

A Message Batch is a batch record (contracts/batches.py) marked with the `anthropic` dialect; its ID
is the record's with `msg` before it (`batch_<hex>` is `msgbatch_<hex>`). Its results are read from
the batch's output and error files: a chat completion becomes a `message` (as POST /v1/messages
renders one; the chat body does not say which stop sequence ended it, so that is `end_turn`), an
error response an `errored` result in Anthropic's error shape, a line the batch's cancel or expiry
left unrun `canceled` or `expired`.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from api.anthropic.errors import error_type
from api.anthropic.render import message_body
from contracts.batches import BatchRecord, BatchStatus
from contracts.events import Choice, ToolCall, Usage
from contracts.file_store import FileStore

ANTHROPIC = "anthropic"
ID_PREFIX = "msg"


def message_batch_id(batch_id: str) -> str:
    return ID_PREFIX + batch_id


def record_id(message_batch_id: str) -> str | None:
    """The batch record's ID for a Message Batch ID (None if it cannot be one)."""
    if not message_batch_id.startswith(ID_PREFIX + "batch_") or len(message_batch_id) > 128:
        return None
    return message_batch_id.removeprefix(ID_PREFIX)


class RequestCounts(BaseModel):
    processing: int
    succeeded: int
    errored: int
    canceled: int
    expired: int


class MessageBatch(BaseModel):
    """Anthropic's MessageBatch object (times are RFC 3339)."""

    id: str
    type: Literal["message_batch"] = "message_batch"
    processing_status: Literal["in_progress", "canceling", "ended"]
    request_counts: RequestCounts
    ended_at: str | None
    created_at: str
    expires_at: str
    archived_at: str | None = None
    cancel_initiated_at: str | None
    results_url: str | None


class MessageBatchList(BaseModel):
    """A page of Message Batches, newest first."""

    data: list[MessageBatch]
    has_more: bool
    first_id: str | None
    last_id: str | None


class DeletedMessageBatch(BaseModel):
    id: str
    type: Literal["message_batch_deleted"] = "message_batch_deleted"


def processing_status(record: BatchRecord) -> str:
    if record.status.is_terminal:
        return "ended"
    return "canceling" if record.status == BatchStatus.CANCELLING else "in_progress"


def request_counts(record: BatchRecord) -> RequestCounts:
    """Lines finished so far count as they end; at the end, the lines never run count as canceled or
    expired (or errored, had they no outcome), so the counts always add up to the batch's requests."""
    total, succeeded, errored = record.counts["total"], record.counts["completed"], record.counts["failed"]
    rest = max(0, total - succeeded - errored)
    if not record.status.is_terminal:
        return RequestCounts(processing=rest, succeeded=succeeded, errored=errored, canceled=0, expired=0)
    canceled = rest if record.status == BatchStatus.CANCELLED else 0
    expired = rest if record.status == BatchStatus.EXPIRED else 0
    errored += rest - canceled - expired
    return RequestCounts(processing=0, succeeded=succeeded, errored=errored, canceled=canceled, expired=expired)


def _time(stamp: int | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def batch_object(record: BatchRecord, results_url: str | None) -> dict:
    """The MessageBatch object; `results_url` is shown once the batch has ended."""
    stamps = record.timestamps
    ended = record.status.is_terminal
    ended_at = next(
        (stamps.get(f) for f in ("completed_at", "cancelled_at", "expired_at", "failed_at") if stamps.get(f)), None
    )
    return MessageBatch(
        id=message_batch_id(record.id),
        processing_status=processing_status(record),
        request_counts=request_counts(record),
        ended_at=_time(ended_at) if ended else None,
        created_at=_time(stamps["created_at"]),
        expires_at=_time(stamps["expires_at"]),
        cancel_initiated_at=_time(stamps.get("cancelling_at")),
        results_url=results_url if ended else None,
    ).model_dump()


def result_lines(files: FileStore, record: BatchRecord) -> Iterator[str]:
    """The ended batch's results as JSONL lines, in the order of its requests."""
    if record.status == BatchStatus.FAILED:  # never ran: its validation was interrupted
        message = (record.errors or [{}])[0].get("message") or "The batch failed before it ran."
        for line in _file_lines(files, record.input_file_id):
            yield _jsonl({"custom_id": line["custom_id"], "result": _errored(500, message, None)})
        return
    outcomes = [_file_lines(files, file_id) for file_id in (record.output_file_id, record.error_file_id)]
    for line in heapq.merge(*outcomes, key=_line_number):
        yield _jsonl({"custom_id": line["custom_id"], "result": result_of(line)})


def _file_lines(files: FileStore, file_id: str | None) -> Iterator[dict]:
    stored = files.get(file_id) if file_id else None
    if stored is None:  # none, or deleted through /v1/files
        return
    path: Path = files.path(stored.id)
    with open(path, encoding="utf-8") as lines:
        for raw in lines:
            if raw.strip():
                yield json.loads(raw)


def _line_number(line: dict) -> int:
    """The request's place in the batch, from the output line's ID (`batch_req_<batch id>-<line>`)."""
    return int(line["id"].rpartition("-")[2])


def _jsonl(value: dict) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"


def result_of(line: dict) -> dict:
    """A batch output (or error) line's result, as Anthropic's result object."""
    response = line.get("response")
    if response is None:  # never run
        code, message = line["error"]["code"], line["error"]["message"]
        if code == "batch_cancelled":
            return {"type": "canceled"}
        if code == "batch_expired":
            return {"type": "expired"}
        return _errored(500, message, None)
    body = response["body"]
    if response["status_code"] != 200:
        return _errored(response["status_code"], body["error"]["message"], response["request_id"])
    return {"type": "succeeded", "message": anthropic_message(body, response["request_id"])}


def _errored(status: int, message: str, request_id: str | None) -> dict:
    error = {"type": error_type(status), "message": message}
    return {"type": "errored", "error": {"type": "error", "error": error, "request_id": request_id}}


def anthropic_message(completion: dict, job_id: str) -> dict:
    """A `chat.completion` body as the `message` POST /v1/messages would have answered."""
    choice = completion["choices"][0]
    calls = [
        ToolCall(id=call["id"], name=call["function"]["name"], arguments=call["function"]["arguments"])
        for call in choice["message"].get("tool_calls") or ()
    ]
    rebuilt = Choice(
        index=0,
        text=choice["message"]["content"] or "",
        finish_reason=choice["finish_reason"],
        tool_calls=calls or None,
    )
    return message_body(job_id, completion["model"], rebuilt, Usage.model_validate(completion["usage"]))
