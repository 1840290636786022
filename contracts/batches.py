"""Batches (OpenAI's Batch API): their records in Redis, their states, and their lines as jobs.

A batch is validated by the API (every line, before anything runs), then driven by one compute
worker at a time, the holder of its lease (worker/handlers/batch_driver.py): it feeds the lines
to the job queue a few at a time and collects their outcomes into the batch's results files.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum

import redis
from pydantic import BaseModel

from contracts import keys
from contracts.jobs import JobKind

# The endpoints a batch may name, and the kind of job each line becomes.
BATCH_ENDPOINTS = {
    "/v1/chat/completions": JobKind.CHAT,
    "/v1/completions": JobKind.COMPLETION,
    "/v1/embeddings": JobKind.EMBEDDING,
}
COMPLETION_WINDOWS = ("24h",)
# OpenAI's limits on a batch's input file.
MAX_BATCH_LINES = 50_000
MAX_BATCH_INPUT_BYTES = 200 * 1024 * 1024
# How many validation errors a failed batch reports (the first ones, by line).
MAX_REPORTED_ERRORS = 100
# A batch still validating this long after its creation was left by an API process that died.
VALIDATION_TIMEOUT_S = 600


class BatchStatus(str, Enum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED)


# Each status's timestamp field in the Batch object.
STATUS_TIMESTAMPS = {
    BatchStatus.IN_PROGRESS: "in_progress_at",
    BatchStatus.FINALIZING: "finalizing_at",
    BatchStatus.COMPLETED: "completed_at",
    BatchStatus.FAILED: "failed_at",
    BatchStatus.EXPIRED: "expired_at",
    BatchStatus.CANCELLING: "cancelling_at",
    BatchStatus.CANCELLED: "cancelled_at",
}
_TIMESTAMPS = ("created_at", "expires_at", *STATUS_TIMESTAMPS.values())
_COUNTS = ("total", "completed", "failed", "input_tokens", "cached_tokens", "output_tokens")


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex}"


def line_job_id(batch_id: str, line: int) -> str:
    """The job ID of a batch's line (1-based): the same on every delivery and every driver."""
    return f"{batch_id}-{line}"


class PreparedLine(BaseModel):
    """A validated input line, as its driver feeds it: the job payload plus what renders its output."""

    line: int
    custom_id: str
    kind: JobKind
    payload: dict
    # Completions with echo: each prompt, to put before its choices' text.
    echo: list[str] | None = None
    encoding_format: str = "float"


@dataclass(frozen=True)
class BatchRecord:
    """A batch as stored; `to_object` is OpenAI's Batch object."""

    id: str
    status: BatchStatus
    endpoint: str
    input_file_id: str
    completion_window: str
    model: str | None = None
    metadata: dict | None = None
    owner: str | None = None
    device: str = "cpu"
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict] | None = None
    timestamps: dict[str, int | None] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    # Lines fed to the queue so far (the next line to feed is `fed + 1`).
    fed: int = 0
    # The terminal status a finalizing batch ends in.
    outcome: str | None = None
    cancel_requested: bool = False
    # Seconds after the batch's creation its output and error files expire (None: never).
    output_expires_s: int | None = None
    # The API the batch was made through and is shown by: None for OpenAI's, "anthropic" for a
    # Message Batch (api/anthropic/batches.py); its lines run alike.
    dialect: str | None = None

    @classmethod
    def from_hash(cls, fields: dict) -> BatchRecord:
        v = {
            (k.decode() if isinstance(k, bytes) else k): (x.decode() if isinstance(x, bytes) else x)
            for k, x in fields.items()
        }
        return cls(
            id=v["id"],
            status=BatchStatus(v["status"]),
            endpoint=v["endpoint"],
            input_file_id=v["input_file_id"],
            completion_window=v["completion_window"],
            model=v.get("model") or None,
            metadata=json.loads(v["metadata"]) if v.get("metadata") else None,
            owner=v.get("owner") or None,
            device=v.get("device") or "cpu",
            output_file_id=v.get("output_file_id") or None,
            error_file_id=v.get("error_file_id") or None,
            errors=json.loads(v["errors"]) if v.get("errors") else None,
            timestamps={name: int(float(v[name])) if v.get(name) else None for name in _TIMESTAMPS},
            counts={name: int(v.get(name) or 0) for name in _COUNTS},
            fed=int(v.get("fed") or 0),
            outcome=v.get("outcome") or None,
            cancel_requested=bool(v.get("cancel_requested")),
            output_expires_s=int(v["output_expires_s"]) if v.get("output_expires_s") else None,
            dialect=v.get("dialect") or None,
        )

    def visible_to(self, owner: str | None) -> bool:
        return owner is None or self.owner == owner

    def to_object(self) -> dict:
        """OpenAI's Batch object, every field present."""
        counts = self.counts
        errors = {"object": "list", "data": self.errors} if self.errors else None
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": errors,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status.value,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            **{name: self.timestamps.get(name) for name in _TIMESTAMPS},
            "request_counts": {"total": counts["total"], "completed": counts["completed"], "failed": counts["failed"]},
            "usage": {
                "input_tokens": counts["input_tokens"],
                "input_tokens_details": {"cached_tokens": counts["cached_tokens"]},
                "output_tokens": counts["output_tokens"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": counts["input_tokens"] + counts["output_tokens"],
            },
            "metadata": self.metadata,
        }


# Move a batch to ARGV[1] (stamping its time field ARGV[2] with ARGV[3]) if its status is one of
# ARGV[4] (comma-separated); then set the field/value pairs that follow. 1 if moved, else 0.
_TRANSITION = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
local allowed = false
for s in string.gmatch(ARGV[4], '[^,]+') do if s == status then allowed = true end end
if not allowed then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# Take or renew a lease: KEYS[1] the lease, ARGV[1] the holder, ARGV[2] milliseconds.
# 1 if the caller holds it now.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class BatchStore:
    """Reads and writes batch records; shared by the API and the workers."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._transition = client.register_script(_TRANSITION)
        self._lease = client.register_script(_LEASE)
        self._release = client.register_script(_RELEASE)

    def create(self, record: BatchRecord) -> None:
        fields = {
            "id": record.id,
            "status": record.status.value,
            "endpoint": record.endpoint,
            "input_file_id": record.input_file_id,
            "completion_window": record.completion_window,
            "metadata": json.dumps(record.metadata) if record.metadata else "",
            "owner": record.owner or "",
            "device": record.device,
            "created_at": record.timestamps["created_at"],
            "expires_at": record.timestamps["expires_at"],
            "total": 0,
            "output_expires_s": record.output_expires_s or "",
            "dialect": record.dialect or "",
        }
        pipe = self.client.pipeline()
        pipe.hset(keys.batch_key(record.id), mapping=fields)
        # Active from the start: a batch whose validation never ended (its API died) is failed by a driver.
        pipe.zadd(keys.ACTIVE_BATCHES, {record.id: time.time()})
        pipe.zadd(keys.BATCHES_INDEX, {record.id: time.time()})  # finer than created_at: orders same-second batches
        pipe.execute()

    def get(self, batch_id: str) -> BatchRecord | None:
        fields = self.client.hgetall(keys.batch_key(batch_id))
        return BatchRecord.from_hash(fields) if fields else None

    def delete(self, batch_id: str) -> None:
        """Forget an ended batch: its record, line list and place in the indexes (its files are the caller's)."""
        pipe = self.client.pipeline()
        pipe.delete(keys.batch_key(batch_id), keys.batch_jobs_key(batch_id), keys.batch_lease_key(batch_id))
        pipe.zrem(keys.BATCHES_INDEX, batch_id)
        pipe.zrem(keys.ACTIVE_BATCHES, batch_id)
        pipe.execute()

    def get_many(self, batch_ids: list[str]) -> list[BatchRecord | None]:
        pipe = self.client.pipeline(transaction=False)
        for batch_id in batch_ids:
            pipe.hgetall(keys.batch_key(batch_id))
        return [BatchRecord.from_hash(f) if f else None for f in pipe.execute()]

    def move(self, batch_id: str, to: BatchStatus, allowed: tuple[BatchStatus, ...], **fields: object) -> bool:
        """Move the batch to `to` (stamping its time) if its status is one of `allowed`; set `fields` too."""
        stamp = STATUS_TIMESTAMPS.get(to, "")
        args: list = [to.value, stamp, int(time.time()), ",".join(s.value for s in allowed)]
        for name, value in fields.items():
            args += [name, value if isinstance(value, str | int | float) else json.dumps(value)]
        moved = bool(self._transition(keys=[keys.batch_key(batch_id)], args=args))
        if moved and to.is_terminal:
            self.client.zrem(keys.ACTIVE_BATCHES, batch_id)
        return moved

    def start(self, batch_id: str, total: int, model: str | None) -> bool:
        """Validated: the batch's `total` lines may run (its drivers find it in the active set)."""
        return self.move(batch_id, BatchStatus.IN_PROGRESS, (BatchStatus.VALIDATING,), total=total, model=model or "")

    def request_cancel(self, batch_id: str) -> bool:
        """Cancel a running batch: it stops taking new lines and ends with the output so far."""
        allowed = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)
        return self.move(batch_id, BatchStatus.CANCELLING, allowed, cancel_requested=1)

    def set_fields(self, batch_id: str, pipe=None, **fields: object) -> None:
        (pipe or self.client).hset(keys.batch_key(batch_id), mapping=fields)

    def add_counts(self, batch_id: str, counts: dict[str, int]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for name, value in counts.items():
            if value:
                pipe.hincrby(keys.batch_key(batch_id), name, value)
        pipe.execute()

    def active(self) -> list[str]:
        return [i.decode() for i in self.client.zrange(keys.ACTIVE_BATCHES, 0, -1)]

    def hold(self, batch_id: str, holder: str, lease_s: float) -> bool:
        """Take or renew the batch's lease for `holder`; False if another holds it."""
        args = [holder, max(1, int(lease_s * 1000))]
        return bool(self._lease(keys=[keys.batch_lease_key(batch_id)], args=args))

    def release(self, batch_id: str, holder: str) -> None:
        self._release(keys=[keys.batch_lease_key(batch_id)], args=[holder])

    def new_epoch(self, batch_id: str) -> int:
        """Number a new driver of the batch (each writes its own results file)."""
        return int(self.client.hincrby(keys.batch_key(batch_id), "epoch", 1))
