"""/v1/batches: create (validating every line first), retrieve, list and cancel batches."""

from __future__ import annotations

import json
import logging
import time
from typing import Literal

from flask import Blueprint, g, jsonify
from pydantic import BaseModel, ConfigDict, Field

from api.access.owner import current_owner
from api.batches.opening import open_batch
from api.batches.stores import install, stores
from api.errors import ApiError, bad_request
from api.files.routes import visible_file
from api.openapi import documented
from api.sampling_protocol import StrictModel
from api.services import json_body, query_args
from api.sse import KEEPALIVE_FRAME, sse_frame, sse_response
from contracts import keys
from contracts.batches import MAX_BATCH_INPUT_BYTES, BatchRecord, BatchStatus
from contracts.pages import ID_PATTERN, page

log = logging.getLogger(__name__)

bp = Blueprint("batches", __name__)
bp.record_once(lambda state: install(state.app))


class OutputExpiry(StrictModel):
    anchor: Literal["created_at"]
    seconds: int = Field(ge=3600, le=30 * 86400)


class BatchCreateRequest(StrictModel):
    input_file_id: str = Field(min_length=1, max_length=128)
    endpoint: Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = Field(None, max_length=16)
    output_expires_after: OutputExpiry | None = None


class BatchListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    after: str | None = Field(None, pattern=ID_PATTERN)
    limit: int = Field(20, ge=1, le=100)


def visible_batch(batch_id: str) -> BatchRecord:
    record = stores().batches.get(batch_id) if len(batch_id) <= 128 else None
    if record is None or not record.visible_to(current_owner()):
        raise ApiError(404, f"No such Batch object: {batch_id[:128]}", param="batch_id", code="batch_not_found")
    g.request_id = record.id
    return record


@bp.post("/v1/batches")
@documented(body=BatchCreateRequest)
def create_batch():
    """Create a batch from an uploaded file: every line is validated, then the lines run as jobs."""
    body = BatchCreateRequest.model_validate(json_body())
    for value in (body.metadata or {}).values():
        if len(value) > 512:
            raise bad_request("metadata values are at most 512 characters.", "metadata", "invalid_value")
    source = visible_file(body.input_file_id)
    if source.purpose != "batch":
        raise bad_request(f"The file {source.id} has purpose '{source.purpose}', not 'batch'.", "input_file_id")
    if source.bytes > MAX_BATCH_INPUT_BYTES:
        raise bad_request(
            f"A batch's input file is at most {MAX_BATCH_INPUT_BYTES} bytes.", "input_file_id", "file_too_large"
        )
    output_expires_s = body.output_expires_after.seconds if body.output_expires_after else None
    batch_id, found = open_batch(
        source, body.endpoint, body.completion_window, metadata=body.metadata, output_expires_s=output_expires_s
    )
    batch_stores = stores()
    if found.error_count:
        log.info("batch failed validation", extra={"batch_id": batch_id, "errors": found.error_count})
        batch_stores.batches.move(batch_id, BatchStatus.FAILED, (BatchStatus.VALIDATING,), errors=found.errors)
    return jsonify(batch_stores.batches.get(batch_id).to_object())


@bp.get("/v1/batches/<batch_id>")
def retrieve_batch(batch_id: str):
    return jsonify(visible_batch(batch_id).to_object())


@bp.get("/v1/batches")
@documented(query=BatchListQuery)
def list_batches():
    """The requesting key's batches, newest first, after the batch `after`."""
    query = query_args(BatchListQuery)
    owner, store = current_owner(), stores().batches

    def load(ids: list[str]) -> list[BatchRecord | None]:
        return [r if r is not None and r.visible_to(owner) else None for r in store.get_many(ids)]

    found = page(store.client, keys.BATCHES_INDEX, query.after, query.limit, load)
    data = [r.to_object() for r in found.items]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return jsonify({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": found.has_more})


@bp.post("/v1/batches/<batch_id>/cancel")
def cancel_batch(batch_id: str):
    """Cancel: no more lines start, running ones stop, and the batch ends with the output so far."""
    record = visible_batch(batch_id)
    store = stores().batches
    if not store.request_cancel(record.id):
        record = store.get(record.id)
        if record.status not in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
            raise ApiError(
                409,
                f"Cannot cancel a batch with status '{record.status.value}'.",
                param="batch_id",
                code="batch_not_cancellable",
            )
    return jsonify(store.get(record.id).to_object())


# How often a batch's event stream reads the batch record, and sends a keepalive when nothing changed.
EVENTS_POLL_S = 0.25
KEEPALIVE_S = 15.0


@bp.get("/v1/batches/<batch_id>/events")
def batch_events(batch_id: str):
    """The batch as SSE: a `batch` event with the Batch object now and whenever its status or counts
    change, ending after a terminal status. Each line's own events are on /v1/jobs/{line job}/events."""
    record = visible_batch(batch_id)
    store = stores().batches

    def frames():
        current, last_sent = record, time.monotonic()
        shown = None
        while True:
            body = current.to_object()
            state = (body["status"], body["request_counts"], body["output_file_id"], body["error_file_id"])
            if state != shown:
                shown, last_sent = state, time.monotonic()
                yield sse_frame(json.dumps(body), event="batch")
                if current.status.is_terminal:
                    return
            elif time.monotonic() - last_sent > KEEPALIVE_S:
                last_sent = time.monotonic()
                yield KEEPALIVE_FRAME
            time.sleep(EVENTS_POLL_S)
            current = store.get(record.id) or current

    return sse_response(frames())
