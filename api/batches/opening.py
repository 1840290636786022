"""Opening a batch over a stored input file: its record, then every line validated before any runs.

Shared by OpenAI's POST /v1/batches and Anthropic's POST /v1/messages/batches (whose requests are
written as such a file first); each decides what a batch whose lines fail becomes.
"""

from __future__ import annotations

import time

from flask import g

from api.access.owner import current_owner
from api.batches.stores import stores
from api.batches.validation import Validation, validate_input
from api.services import services
from contracts.batches import BATCH_ENDPOINTS, BatchRecord, BatchStatus, new_batch_id
from contracts.file_store import FileRecord
from contracts.queues import DEFAULT_DEVICE


def open_batch(
    source: FileRecord,
    endpoint: str,
    completion_window: str = "24h",
    *,
    batch_id: str | None = None,
    metadata: dict | None = None,
    output_expires_s: int | None = None,
    dialect: str | None = None,
) -> tuple[str, Validation]:
    """Record a batch (validating) over `source` and check its every line; when all pass, the batch
    starts (or ends cancelled, if cancelled meanwhile). Returns its ID and what validation found."""
    ctx, batch_stores = services(), stores()
    now = int(time.time())
    batch_id = batch_id or new_batch_id()
    g.request_id = batch_id
    record = BatchRecord(
        id=batch_id,
        status=BatchStatus.VALIDATING,
        endpoint=endpoint,
        input_file_id=source.id,
        completion_window=completion_window,
        metadata=metadata,
        owner=current_owner(),
        device=DEFAULT_DEVICE,
        timestamps={"created_at": now, "expires_at": now + int(ctx.settings.batch_completion_window_s)},
        output_expires_s=output_expires_s,
        dialect=dialect,
    )
    batch_stores.batches.create(record)
    files = batch_stores.files
    target = files.batch_dir(batch_id) / "input.jsonl"
    found = validate_input(ctx, batch_id, endpoint, BATCH_ENDPOINTS[endpoint], files.path(source.id), target)
    if not found.error_count and not batch_stores.batches.start(batch_id, found.lines, found.model):
        batch_stores.batches.move(batch_id, BatchStatus.CANCELLED, (BatchStatus.CANCELLING,))  # cancelled meanwhile
    return batch_id, found
