"""GET /v1/jobs: recent jobs, or a batch's line jobs, filtered by kind and status, paged by `after`."""

from __future__ import annotations

from flask import Blueprint, jsonify
from pydantic import BaseModel, ConfigDict, Field

from api.access.owner import current_owner
from api.batches.stores import stores
from api.errors import bad_request
from api.openapi import documented
from api.queue.responses import job_body
from api.services import query_args, services
from contracts import keys
from contracts.job_store import LISTED_FIELDS, JobRecord
from contracts.jobs import JobKind, JobStatus
from contracts.pages import ID_PATTERN, page

bp = Blueprint("job_list", __name__)


class JobListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: JobKind | None = None
    status: JobStatus | None = None
    batch: str | None = Field(None, pattern=ID_PATTERN)
    after: str | None = Field(None, pattern=ID_PATTERN)
    limit: int = Field(20, ge=1, le=100)


@bp.get("/v1/jobs")
@documented(query=JobListQuery)
def list_jobs():
    """Jobs newest first (the most recent ones kept for the status page), or with `batch`, that
    batch's line jobs in line order; `kind` and `status` filter, `after` a job ID pages on."""
    query = query_args(JobListQuery)
    owner = current_owner()
    client = services().store.client
    if query.batch:
        batch = stores().batches.get(query.batch)
        if batch is None or not batch.visible_to(owner):
            raise bad_request(f"No such Batch object: {query.batch}", "batch", "batch_not_found")
        index, descending = keys.batch_jobs_key(batch.id), False
    else:
        index, descending = keys.RECENT_JOBS, True

    def load(ids: list[str]) -> list[dict | None]:
        pipe = client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job_key(job_id), *LISTED_FIELDS)
        shown = []
        for job_id, values in zip(ids, pipe.execute(), strict=True):
            fields = {name: v.decode() for name, v in zip(LISTED_FIELDS, values, strict=True) if v is not None}
            # As GET /v1/jobs/{id}: a key sees its own jobs and those of no key (downloads).
            visible = fields and (owner is None or fields.get("owner") in (None, owner))
            record = JobRecord.from_hash(job_id, fields) if visible else None
            if (
                record is None
                or query.kind not in (None, JobKind(record.kind))
                or query.status not in (None, record.status)
            ):
                shown.append(None)
                continue
            shown.append({**job_body(record), "batch": fields.get("batch")})
        return shown

    found = page(client, index, query.after, query.limit, load, descending=descending)
    data = found.items
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return jsonify({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": found.has_more})
