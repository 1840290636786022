"""The file store: batch input, output and error files, shared by the API and the workers.

A file's bytes live on disk under the store's root (LADLE_FILES_DIR, by default <data dir>/files),
its metadata in Redis; every API host and worker of a deployment mounts the same root:

    <root>/files/<file id>              the bytes of each file, written once, never changed
    <root>/tmp/<random>.part            uploads in progress (renamed into files/ when complete)
    <root>/batches/<batch id>/input.jsonl      a validated batch's lines, as jobs to run
    <root>/batches/<batch id>/results-<n>.jsonl  lines' outcomes, appended by its n-th driver

Files are renamed into place, so a reader sees a file whole or not at all.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

from contracts import keys

FILE_PURPOSES = ("batch", "batch_output")


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class FileRecord:
    """A stored file's metadata: OpenAI's FileObject, plus the key that owns it."""

    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    expires_at: int | None = None
    owner: str | None = None

    @classmethod
    def from_hash(cls, fields: dict[bytes, bytes]) -> FileRecord:
        values = {k.decode(): v.decode() for k, v in fields.items()}
        return cls(
            id=values["id"],
            bytes=int(values["bytes"]),
            created_at=int(values["created_at"]),
            filename=values["filename"],
            purpose=values["purpose"],
            expires_at=int(values["expires_at"]) if values.get("expires_at") else None,
            owner=values.get("owner") or None,
        )

    def to_hash(self) -> dict[str, str | int]:
        return {k: ("" if v is None else v) for k, v in asdict(self).items()}

    def to_object(self) -> dict:
        """The FileObject the openai SDK parses."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": self.expires_at,
            "status_details": None,
        }

    def visible_to(self, owner: str | None) -> bool:
        return owner is None or self.owner == owner


class FileStore:
    """Reads and writes stored files (bytes on disk, metadata in Redis)."""

    def __init__(self, client: redis.Redis, root: Path) -> None:
        self.client = client
        self.root = root

    def path(self, file_id: str) -> Path:
        return self.root / "files" / file_id

    def batch_dir(self, batch_id: str) -> Path:
        return self.root / "batches" / batch_id

    def temp_path(self) -> Path:
        """A fresh path for bytes being written (renamed into place by `add`)."""
        folder = self.root / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{uuid.uuid4().hex}.part"

    def add(
        self,
        source: Path,
        filename: str,
        purpose: str,
        owner: str | None,
        expires_at: int | None = None,
        file_id: str | None = None,
        pipe=None,
    ) -> FileRecord:
        """Move the complete file `source` into the store and record it (under `file_id` if given:
        adding the same generated file again replaces it with the same bytes)."""
        file_id = file_id or new_file_id()
        target = self.path(file_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        size = source.stat().st_size
        os.replace(source, target)
        record = FileRecord(file_id, size, int(time.time()), filename, purpose, expires_at, owner)
        own = pipe is None
        pipe = self.client.pipeline(transaction=False) if own else pipe
        pipe.hset(keys.file_key(file_id), mapping=record.to_hash())
        pipe.zadd(keys.FILES_INDEX, {file_id: time.time()})  # finer than created_at: orders same-second files
        if own:
            pipe.execute()
        return record

    def get(self, file_id: str) -> FileRecord | None:
        """The file's record; None if unknown or past its expiry (then it is deleted)."""
        fields = self.client.hgetall(keys.file_key(file_id))
        if not fields:
            return None
        record = FileRecord.from_hash(fields)
        if record.expires_at is not None and record.expires_at <= time.time():
            self.delete(file_id)
            return None
        return record

    def get_many(self, file_ids: list[str]) -> list[FileRecord | None]:
        pipe = self.client.pipeline(transaction=False)
        for file_id in file_ids:
            pipe.hgetall(keys.file_key(file_id))
        now = time.time()
        records = []
        for fields in pipe.execute():
            record = FileRecord.from_hash(fields) if fields else None
            expired = record is not None and record.expires_at is not None and record.expires_at <= now
            records.append(None if expired else record)
        return records

    def delete(self, file_id: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(keys.file_key(file_id))
        pipe.zrem(keys.FILES_INDEX, file_id)
        pipe.execute()
        self.path(file_id).unlink(missing_ok=True)

    def remove_batch_dir(self, batch_id: str) -> None:
        shutil.rmtree(self.batch_dir(batch_id), ignore_errors=True)
