"""/v1/messages/batches: Anthropic's Message Batches API on Ladle's batch runner.

A Message Batch is an ordinary batch (api/batches/) whose input file holds the chat bodies its
Messages requests convert to (api/anthropic/batch_protocol.py): its lines run as background jobs
behind interactive requests, exactly once, surviving a driver's death. It is shown, and its
results read, as Anthropic's (api/anthropic/batch_render.py). A batch belongs to the key that made
it; another key's are not found. Errors are in Anthropic's envelope.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, g, jsonify, stream_with_context, url_for
from pydantic import BaseModel, ConfigDict, Field

from api.access.owner import current_owner
from api.anthropic.batch_protocol import CHAT_ENDPOINT, MessageBatchCreateRequest, batch_lines, write_input_file
from api.anthropic.batch_render import (
    ANTHROPIC,
    DeletedMessageBatch,
    MessageBatch,
    MessageBatchList,
    batch_object,
    message_batch_id,
    record_id,
    result_lines,
)
from api.anthropic.errors import AnthropicErrorBody, anthropic_error
from api.anthropic.routes import AnthropicHeaders, request_id_header
from api.batches.opening import open_batch
from api.batches.stores import install, stores
from api.errors import ApiError, bad_request, register_dialect
from api.openapi import documented
from api.services import json_body, query_args, services
from contracts import keys
from contracts.batches import BatchRecord, new_batch_id
from contracts.pages import ID_PATTERN, Page, page

log = logging.getLogger(__name__)

bp = Blueprint("anthropic_batches", __name__)
bp.record_once(lambda state: install(state.app))
bp.after_request(request_id_header)
register_dialect(bp.name, anthropic_error)


class MessageBatchListQuery(BaseModel):
    """Anthropic's paging: `limit` (1 to 1000), and a cursor, `after_id` (older) or `before_id` (newer)."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(20, ge=1, le=1000)
    after_id: str | None = Field(None, pattern=ID_PATTERN)
    before_id: str | None = Field(None, pattern=ID_PATTERN)


def visible_message_batch(batch_id: str) -> BatchRecord:
    """The Message Batch, if the requesting key may see it; else 404 (another key's do not exist)."""
    found = record_id(batch_id)
    record = stores().batches.get(found) if found else None
    if record is None or record.dialect != ANTHROPIC or not record.visible_to(current_owner()):
        raise ApiError(404, f"No such Message Batch: {batch_id[:128]}", param="message_batch_id", code="not_found")
    g.request_id = record.id
    return record


def shown(record: BatchRecord) -> dict:
    url = url_for(f"{bp.name}.message_batch_results", message_batch_id=message_batch_id(record.id), _external=True)
    return batch_object(record, url)


@bp.post("/v1/messages/batches")
@documented(body=MessageBatchCreateRequest, headers=AnthropicHeaders, response=MessageBatch, error=AnthropicErrorBody)
def create_message_batch():
    """Create a Message Batch: every request is validated (a 400 names the first invalid one), then they run."""
    lines = batch_lines(json_body(), services().require_model)
    batch_id = new_batch_id()
    batch_stores = stores()
    source = write_input_file(
        batch_stores.files, lines, f"{message_batch_id(batch_id)}_requests.jsonl", current_owner()
    )
    batch_id, found = open_batch(source, CHAT_ENDPOINT, batch_id=batch_id, dialect=ANTHROPIC)
    if found.error_count:  # what the chat route checks beyond the Messages request (rare): nothing runs
        forget(batch_stores.batches.get(batch_id))
        first = found.errors[0]
        where = f"requests.{first['line'] - 1}.params" if first["line"] else "requests"
        param = where + (f".{first['param'].removeprefix('body.')}" if first["param"] else "")
        raise bad_request(f"{param}: {first['message']}", param, first["code"])
    log.info("message batch created", extra={"batch_id": batch_id, "requests": found.lines})
    return jsonify(shown(batch_stores.batches.get(batch_id)))


@bp.get("/v1/messages/batches/<message_batch_id>")
@documented(response=MessageBatch, error=AnthropicErrorBody)
def retrieve_message_batch(message_batch_id: str):
    """A Message Batch: its processing status and request counts (poll it until it has ended)."""
    return jsonify(shown(visible_message_batch(message_batch_id)))


@bp.get("/v1/messages/batches")
@documented(query=MessageBatchListQuery, response=MessageBatchList, error=AnthropicErrorBody)
def list_message_batches():
    """The requesting key's Message Batches, newest first."""
    query = query_args(MessageBatchListQuery)
    if query.after_id and query.before_id:
        raise bad_request("Page with after_id or with before_id, not both.", "before_id", "invalid_value")
    owner, store = current_owner(), stores().batches

    def load(ids: list[str]) -> list[BatchRecord | None]:
        return [r if r and r.dialect == ANTHROPIC and r.visible_to(owner) else None for r in store.get_many(ids)]

    cursor = query.before_id or query.after_id
    after = record_id(cursor) if cursor else None
    if cursor and (after is None or store.client.zscore(keys.BATCHES_INDEX, after) is None):
        found = Page([], has_more=False)  # no such batch: nothing is after or before it
    else:  # before_id: the newer batches nearest it, walked oldest first
        found = page(store.client, keys.BATCHES_INDEX, after, query.limit, load, descending=not query.before_id)
    records = found.items[::-1] if query.before_id else found.items
    data = [shown(r) for r in records]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return jsonify({"data": data, "has_more": found.has_more, "first_id": first, "last_id": last})


@bp.post("/v1/messages/batches/<message_batch_id>/cancel")
@documented(response=MessageBatch, error=AnthropicErrorBody)
def cancel_message_batch(message_batch_id: str):
    """Cancel: requests not yet run end `canceled`, running ones stop; the batch is `canceling`, then ended."""
    record = visible_message_batch(message_batch_id)
    store = stores().batches
    if not store.request_cancel(record.id):
        record = store.get(record.id)
        if record.status.is_terminal:
            raise bad_request(f"Message Batch {message_batch_id} has ended; it cannot be canceled.", "message_batch_id")
    return jsonify(shown(store.get(record.id)))


@bp.delete("/v1/messages/batches/<message_batch_id>")
@documented(response=DeletedMessageBatch, error=AnthropicErrorBody)
def delete_message_batch(message_batch_id: str):
    """Delete an ended Message Batch and its results (one still processing must be canceled first)."""
    record = visible_message_batch(message_batch_id)
    if not record.status.is_terminal:
        raise bad_request(
            f"Message Batch {message_batch_id} is still processing: cancel it, and delete it once it has ended.",
            "message_batch_id",
        )
    forget(record)
    return jsonify(DeletedMessageBatch(id=message_batch_id).model_dump())


@bp.get("/v1/messages/batches/<message_batch_id>/results")
@documented(error=AnthropicErrorBody)
def message_batch_results(message_batch_id: str):
    """The results of an ended Message Batch, as JSONL: one `{custom_id, result}` per request, in order."""
    record = visible_message_batch(message_batch_id)
    if not record.status.is_terminal:
        raise bad_request(
            f"Message Batch {message_batch_id} is still processing: its results are ready once it has ended.",
            "message_batch_id",
        )
    lines = result_lines(stores().files, record)
    return Response(stream_with_context(lines), mimetype="application/binary")


def forget(record: BatchRecord | None) -> None:
    """Remove a batch that has ended (or never started): its record, its files and its folder."""
    if record is None:
        return
    batch_stores = stores()
    for file_id in (record.input_file_id, record.output_file_id, record.error_file_id):
        if file_id:
            batch_stores.files.delete(file_id)
    batch_stores.files.remove_batch_dir(record.id)
    batch_stores.batches.delete(record.id)
