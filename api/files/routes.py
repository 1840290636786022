"""/v1/files: upload (multipart, streamed to disk), list, retrieve, download and delete files."""

from __future__ import annotations

import time
from typing import Literal

from flask import Blueprint, g, jsonify, request, send_file
from pydantic import BaseModel, ConfigDict, Field

from api.access.owner import current_owner
from api.batches.stores import install, stores
from api.errors import ApiError, bad_request
from api.openapi import documented
from api.services import query_args, services
from contracts import keys
from contracts.file_store import FileRecord, FileStore
from contracts.pages import ID_PATTERN, page

bp = Blueprint("files", __name__)
bp.record_once(lambda state: install(state.app))

# Room for the multipart framing and the small form fields around the file's bytes.
MULTIPART_OVERHEAD = 64 * 1024
# OpenAI's bounds on `expires_after[seconds]`: one hour to thirty days.
MIN_EXPIRY_S, MAX_EXPIRY_S = 3600, 30 * 86400


class FileListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    after: str | None = Field(None, pattern=ID_PATTERN)
    limit: int = Field(10000, ge=1, le=10000)
    order: Literal["asc", "desc"] = "desc"
    purpose: Literal["batch", "batch_output"] | None = None


def file_store() -> FileStore:
    return stores().files


def visible_file(file_id: str) -> FileRecord:
    """The file, if it exists and the requesting key may see it; else 404 (another key's files do not exist)."""
    record = file_store().get(file_id) if len(file_id) <= 128 else None
    if record is None or not record.visible_to(current_owner()):
        raise ApiError(404, f"No such File object: {file_id[:128]}", param="id", code="file_not_found")
    return record


def _expiry(created: float) -> int | None:
    anchor = request.form.get("expires_after[anchor]")
    seconds = request.form.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise bad_request("expires_after[anchor] must be 'created_at'.", "expires_after[anchor]", "invalid_value")
    if (
        seconds is None
        or not seconds.isascii()
        or not seconds.isdigit()
        or not MIN_EXPIRY_S <= int(seconds) <= MAX_EXPIRY_S
    ):
        raise bad_request(
            f"expires_after[seconds] must be an integer from {MIN_EXPIRY_S} to {MAX_EXPIRY_S}.",
            "expires_after[seconds]",
            "invalid_value",
        )
    return int(created) + int(seconds)


@bp.post("/v1/files")
def upload_file():
    """Upload a file (multipart: `file`, `purpose` = batch); its bytes stream to the file store."""
    settings = services().settings
    request.max_content_length = settings.max_file_bytes + MULTIPART_OVERHEAD
    if not request.mimetype.startswith("multipart/form-data"):
        raise bad_request("Upload a file as multipart/form-data with the parts `file` and `purpose`.", "file")
    purpose = request.form.get("purpose")
    if purpose != "batch":
        raise bad_request(
            f"Invalid purpose {str(purpose)[:64]!r}: files are uploaded for 'batch'.", "purpose", "invalid_value"
        )
    upload = request.files.get("file")
    if upload is None:
        raise bad_request("The multipart part `file` is missing.", "file", "missing_required_parameter")
    expires_at = _expiry(time.time())
    store = file_store()
    temp = store.temp_path()
    try:
        upload.save(temp)
        size = temp.stat().st_size
        if size > settings.max_file_bytes:
            raise ApiError(
                413,
                f"The file is too large: {size} bytes; at most {settings.max_file_bytes}.",
                param="file",
                code="file_too_large",
            )
        record = store.add(temp, (upload.filename or "upload.jsonl")[:256], purpose, current_owner(), expires_at)
    finally:
        temp.unlink(missing_ok=True)
    g.request_id = record.id
    return jsonify(record.to_object())


@bp.get("/v1/files")
@documented(query=FileListQuery)
def list_files():
    """The requesting key's files, newest first (or oldest with order=asc), `after` an ID."""
    query = query_args(FileListQuery)
    owner, store = current_owner(), file_store()

    def load(ids: list[str]) -> list[FileRecord | None]:
        return [
            r if r is not None and r.visible_to(owner) and query.purpose in (None, r.purpose) else None
            for r in store.get_many(ids)
        ]

    found = page(store.client, keys.FILES_INDEX, query.after, query.limit, load, descending=query.order == "desc")
    data = [r.to_object() for r in found.items]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return jsonify({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": found.has_more})


@bp.get("/v1/files/<file_id>")
def retrieve_file(file_id: str):
    return jsonify(visible_file(file_id).to_object())


@bp.get("/v1/files/<file_id>/content")
def file_content(file_id: str):
    """The file's bytes."""
    record = visible_file(file_id)
    return send_file(file_store().path(record.id), mimetype="application/octet-stream", conditional=False)


@bp.delete("/v1/files/<file_id>")
def delete_file(file_id: str):
    record = visible_file(file_id)
    file_store().delete(record.id)
    return jsonify({"id": record.id, "object": "file", "deleted": True})
