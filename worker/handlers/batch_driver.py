"""Drives batches: feeds their lines to the job queue a few at a time and collects the outcomes.

Every compute worker runs a driver thread; each active batch is driven by one of them at a time,
the holder of the batch's lease (renewed every tick, LADLE_BATCH_LEASE). A driver that dies (even
SIGKILL) loses the lease, and another worker's driver takes the batch over where the records say
it stood: the lines fed so far (`fed`, written in the same transaction as their job records), the
outcomes already in the results files, the jobs still running. Lines are ordinary jobs (IDs
`<batch>-<line>`, visible and cancellable on /v1/jobs) marked `background`, so interactive requests
go first in the engine; and at most LADLE_BATCH_SHARE of the compute workers' decode rows hold
batch lines at once, so interactive requests find a free row at the engine's next step.

Outcomes are exactly once: a job ends once (its record's guarded finish), each line's outcome is
appended to a results file before it is counted, and the output and error files are built from
the results files keeping the first outcome of each line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

import redis

from contracts import keys, workers
from contracts.batches import (
    BATCH_ENDPOINTS,
    VALIDATION_TIMEOUT_S,
    BatchRecord,
    BatchStatus,
    BatchStore,
    PreparedLine,
    line_job_id,
)
from contracts.errors import job_cancelled
from contracts.events import ErrorEvent
from contracts.file_store import FileStore
from contracts.job_store import JobRecord, JobStore
from contracts.jobs import JobKind, JobStatus
from contracts.queues import COMPUTE_LANE, EMBED_TASK, GENERATE_TASK, queue_for_device
from contracts.settings import Settings
from worker.handlers.batch_results import (
    ResultsWriter,
    counts_of,
    outcome_entry,
    prepared_lines,
    read_results,
    unfinished_entry,
)

log = logging.getLogger(__name__)

TICK_S = 0.2
# Live workers are read again after this long (their capacity sets how many lines run at once).
WORKERS_TTL_S = 1.0
EXPIRED = ("batch_expired", "This request could not be executed before the completion window expired.")
CANCELLED = ("batch_cancelled", "This request was not executed: the batch was cancelled.")

Send = Callable[[str, object, str, str], None]


@dataclass
class _Driving:
    """A batch this driver holds: where its feeding stands and which lines are out."""

    record: BatchRecord
    writer: ResultsWriter
    lines: object  # iterator over the prepared lines not fed yet
    fed: int
    in_flight: dict[str, PreparedLine] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)


class BatchDriver:
    def __init__(self, settings: Settings, store: JobStore, send: Send, worker_name: str, device: str) -> None:
        self.settings = settings
        self.store = store
        self.client: redis.Redis = store.client
        self.batches = BatchStore(self.client)
        self.files = FileStore(self.client, settings.file_store_dir)
        self.send = send
        self.name = worker_name
        self.device = device
        self._held: dict[str, _Driving] = {}
        self._rows = (0, float("-inf"))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batch-driver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop driving; the leases are released, so another worker takes the batches at once."""
        self._stop.set()
        self._thread.join(timeout=10)
        for batch_id, driving in list(self._held.items()):
            driving.writer.close()
            self.batches.release(batch_id, self.name)
        self._held.clear()

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.tick()
            except redis.RedisError as error:
                log.warning("batch driver: redis unavailable: %s", error)
            except Exception:
                log.exception("batch driver tick failed")

    def tick(self) -> None:
        active = self.batches.active()
        for batch_id in list(self._held):
            if batch_id not in active:
                self._drop(batch_id)
        share = max(1, self._batch_rows() // max(1, len(active)))
        for batch_id in active:
            if not self.batches.hold(batch_id, self.name, self.settings.batch_lease_s):
                if batch_id in self._held:
                    log.warning("lost the lease of a batch", extra={"batch_id": batch_id})
                    self._drop(batch_id, release=False)
                continue
            try:
                self._drive(batch_id, share)
            except Exception:
                log.exception("driving batch failed", extra={"batch_id": batch_id})
                self._drop(batch_id)

    def _batch_rows(self) -> int:
        """Decode rows batch lines may hold at once on this device: LADLE_BATCH_SHARE of the live workers'."""
        rows, read_at = self._rows
        if time.monotonic() - read_at > WORKERS_TTL_S:
            live = [w for w in workers.live(self.client) if w.lane == COMPUTE_LANE and w.device == self.device]
            rows = int(sum(min(w.capacity, w.batch_rows) for w in live) * self.settings.batch_share)
            self._rows = (rows, time.monotonic())
        return max(1, rows)

    def _drop(self, batch_id: str, release: bool = True) -> None:
        driving = self._held.pop(batch_id, None)
        if driving is not None:
            driving.writer.close()
        if release:
            self.batches.release(batch_id, self.name)

    def _drive(self, batch_id: str, share: int) -> None:
        record = self.batches.get(batch_id)
        if record is None or record.status.is_terminal:
            self.client.zrem(keys.ACTIVE_BATCHES, batch_id)
            self._drop(batch_id)
            return
        validated = record.timestamps["in_progress_at"] is not None  # else its API is still validating it
        if record.device != self.device or not validated:
            if not validated and time.time() - record.timestamps["created_at"] > VALIDATION_TIMEOUT_S:
                message = "The batch's validation did not finish (the API process validating it stopped)."
                error = {"code": "validation_interrupted", "line": None, "message": message, "param": None}
                unstarted = (BatchStatus.VALIDATING, BatchStatus.CANCELLING)
                self.batches.move(batch_id, BatchStatus.FAILED, unstarted, errors=[error])
            self.batches.release(batch_id, self.name)
            return
        if batch_id not in self._held and not (self.files.batch_dir(batch_id) / "input.jsonl").is_file():
            self._fail_without_files(batch_id)
            return
        driving = self._held.get(batch_id) or self._take_over(record)
        driving.record = record
        self._collect(driving)
        expires_at = record.timestamps["expires_at"]
        if record.status == BatchStatus.CANCELLING:
            self._end(driving, BatchStatus.CANCELLED, CANCELLED)
        elif record.status == BatchStatus.FINALIZING or (
            record.status == BatchStatus.IN_PROGRESS and len(driving.done) >= record.counts["total"]
        ):
            self._end(driving, BatchStatus.COMPLETED, None)
        elif record.status == BatchStatus.IN_PROGRESS and expires_at is not None and time.time() >= expires_at:
            self._end(driving, BatchStatus.EXPIRED, EXPIRED)
        elif record.status == BatchStatus.IN_PROGRESS:
            self._feed(driving, share)

    def _fail_without_files(self, batch_id: str) -> None:
        """End a batch whose folder is gone, instead of failing to take it over on every tick.

        Its folder is removed only once it ended; a record that still says it runs has lost that
        end (a Redis failover discarded the last writes of the old primary), and no driver can
        go on without its lines.
        """
        message = "The batch's files are gone from the file store, so its lines cannot run or be collected."
        error = {"code": "batch_files_missing", "line": None, "message": message, "param": None}
        running = (BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.CANCELLING)
        if self.batches.move(batch_id, BatchStatus.FAILED, running, errors=[error]):
            log.error("batch failed: its files are gone", extra={"batch_id": batch_id})
        self.batches.release(batch_id, self.name)

    def _take_over(self, record: BatchRecord) -> _Driving:
        """Start driving a batch: from scratch, or where a dead driver left it."""
        folder = self.files.batch_dir(record.id)
        outcomes = read_results(folder)
        self.batches.set_fields(record.id, **counts_of(outcomes))
        epoch = self.batches.new_epoch(record.id)
        lines = prepared_lines(folder)
        driving = _Driving(record, ResultsWriter(folder, epoch), lines, record.fed, done=set(outcomes))
        fed = list(islice(lines, record.fed))
        out = [p for p in fed if p.line not in driving.done]
        driving.in_flight = {line_job_id(record.id, p.line): p for p in out}
        self._resend_unsent(driving)
        self._held[record.id] = driving
        log.info(
            "driving batch",
            extra={
                "batch_id": record.id,
                "epoch": epoch,
                "fed": record.fed,
                "done": len(outcomes),
                "running": len(out),
            },
        )
        return driving

    def _resend_unsent(self, driving: _Driving) -> None:
        """Lines fed by a driver that died before their task was surely sent: send them again (a
        job's second message is harmless: a job ends once, and one that ended never starts again)."""
        pipe = self.client.pipeline(transaction=False)
        ids = list(driving.in_flight)
        for job_id in ids:
            pipe.hmget(keys.job_key(job_id), "status", "sent")
        unsent = [
            job_id
            for job_id, (status, sent) in zip(ids, pipe.execute(), strict=True)
            if status is None or (status == b"queued" and not sent)
        ]
        if unsent:
            self._send_lines(driving, [driving.in_flight[j] for j in unsent])

    def _feed(self, driving: _Driving, share: int) -> None:
        # Embedding lines hold no decode rows: as many as one embedding call runs go out at once.
        embeds = BATCH_ENDPOINTS.get(driving.record.endpoint) == JobKind.EMBEDDING
        room = (max(share, self.settings.embedding_batch) if embeds else share) - len(driving.in_flight)
        if room <= 0 or driving.fed >= driving.record.counts["total"]:
            return
        batch = list(islice(driving.lines, room))
        if batch:
            self._send_lines(driving, batch)

    def _send_lines(self, driving: _Driving, lines: list[PreparedLine]) -> None:
        """Record the lines' jobs and count them fed (one transaction), then send their tasks."""
        record = driving.record
        now = time.time()
        # Embedding lines sent together travel as one bundle (one task, each line its own job).
        bundle = uuid.uuid4().hex
        tasks = {p.line: bundle if p.kind == JobKind.EMBEDDING else line_job_id(record.id, p.line) for p in lines}
        pipe = self.client.pipeline(transaction=True)
        new = 0
        for prepared in lines:
            job_id = line_job_id(record.id, prepared.line)
            if job_id not in driving.in_flight:
                new += 1
            fields = {
                "kind": prepared.kind.value,
                "model": prepared.payload["model"],
                "status": "queued",
                "created_at": now,
                "task": tasks[prepared.line],
                "batch": record.id,
            }
            if record.owner:
                fields["owner"] = record.owner
            for name, value in fields.items():  # never over a record a job already has (sent before)
                pipe.hsetnx(keys.job_key(job_id), name, value)
            pipe.expire(keys.job_key(job_id), self.store.ttl_s)
            pipe.zadd(keys.batch_jobs_key(record.id), {job_id: prepared.line})
        pipe.expire(keys.batch_jobs_key(record.id), self.store.ttl_s)
        if new:
            driving.fed += new
            pipe.hset(keys.batch_key(record.id), "fed", driving.fed)
        pipe.execute()
        queue = queue_for_device(record.device)
        embeddings = []
        for prepared in lines:
            job_id = line_job_id(record.id, prepared.line)
            driving.in_flight[job_id] = prepared
            payload = {**prepared.payload, "job_id": job_id}
            if prepared.kind == JobKind.EMBEDDING:
                embeddings.append(payload)
            else:
                self.send(GENERATE_TASK, payload, queue, job_id)
        if embeddings:
            self.send(EMBED_TASK, embeddings, queue, bundle)
        pipe = self.client.pipeline(transaction=False)
        for prepared in lines:
            pipe.hset(keys.job_key(line_job_id(record.id, prepared.line)), "sent", 1)
        pipe.execute()

    def _collect(self, driving: _Driving) -> None:
        """Record the outcomes of lines whose jobs ended since the last tick."""
        if not driving.in_flight:
            return
        ids = list(driving.in_flight)
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(keys.job_key(job_id))
        ended, lost = [], []
        for job_id, fields in zip(ids, pipe.execute(), strict=True):
            if not fields:
                lost.append(job_id)
            elif b"finished_at" in fields:
                ended.append((job_id, JobRecord.from_hash(job_id, {k.decode(): v.decode() for k, v in fields.items()})))
        counts = {"completed": 0, "failed": 0, "input_tokens": 0, "cached_tokens": 0, "output_tokens": 0}
        for job_id, job in ended:
            prepared = driving.in_flight.pop(job_id)
            if prepared.line in driving.done:
                continue
            entry = outcome_entry(prepared, job_id, job)
            driving.writer.write(entry)
            driving.done.add(prepared.line)
            counts["completed" if entry["ok"] else "failed"] += 1
            for name, value in entry["usage"].items():
                counts[name] += value
        if ended:
            driving.writer.flush()  # durable before counted
            self.batches.add_counts(driving.record.id, counts)
        if lost and driving.record.status == BatchStatus.IN_PROGRESS:  # records expired: run them again
            log.warning("batch line records gone; sending again", extra={"job_ids": lost})
            self._send_lines(driving, [driving.in_flight[j] for j in lost])

    def _stop_lines(self, driving: _Driving) -> None:
        """Cancel the lines still out: queued ones never start, running ones stop at their next step."""
        for job_id in driving.in_flight:
            self.store.request_cancel(job_id)
            self.store.finish(job_id, ErrorEvent(error=job_cancelled()), JobStatus.CANCELLED, only_if=JobStatus.QUEUED)

    def _end(self, driving: _Driving, outcome: BatchStatus, unfinished: tuple[str, str] | None) -> None:
        """Finalize: write the output and error files from every recorded outcome, then end the batch.

        Runs again from the start if its driver dies midway: the files get the same IDs and bytes.
        """
        record = driving.record
        if unfinished is not None:
            self._stop_lines(driving)
        elif record.status == BatchStatus.IN_PROGRESS:
            if not self.batches.move(record.id, BatchStatus.FINALIZING, (BatchStatus.IN_PROGRESS,)):
                return  # cancelled meanwhile: the next tick ends it so
        folder = self.files.batch_dir(record.id)
        outcomes = read_results(folder)
        output, errors = [], []
        for prepared in prepared_lines(folder):
            entry = outcomes.get(prepared.line)
            if entry is None:
                code, message = unfinished or ("line_lost", "This request has no recorded outcome.")
                entry = unfinished_entry(prepared, line_job_id(record.id, prepared.line), code, message)
            (output if entry["ok"] else errors).append(entry["output"])
        hex_id = record.id.removeprefix("batch_")
        output_id = self._write_file(record, f"file-{hex_id}-output", f"{record.id}_output.jsonl", output)
        error_id = self._write_file(record, f"file-{hex_id}-errors", f"{record.id}_error.jsonl", errors)
        allowed = {
            BatchStatus.COMPLETED: (BatchStatus.FINALIZING,),
            BatchStatus.CANCELLED: (BatchStatus.CANCELLING,),
            BatchStatus.EXPIRED: (BatchStatus.IN_PROGRESS,),
        }[outcome]
        fields = {"output_file_id": output_id or "", "error_file_id": error_id or "", **counts_of(outcomes)}
        if self.batches.move(record.id, outcome, allowed, **fields):
            log.info("batch ended", extra={"batch_id": record.id, "status": outcome.value, "lines": len(outcomes)})
            self._drop(record.id)
            self.files.remove_batch_dir(record.id)

    def _write_file(self, record: BatchRecord, file_id: str, filename: str, lines: list[dict]) -> str | None:
        if not lines:
            return None
        temp = self.files.temp_path()
        with open(temp, "w", encoding="utf-8") as out:
            for line in lines:
                out.write(json.dumps(line, separators=(",", ":")) + "\n")
            out.flush()
            os.fsync(out.fileno())
        expires = record.output_expires_s
        expires_at = record.timestamps["created_at"] + expires if expires else None
        self.files.add(temp, filename, "batch_output", record.owner, expires_at, file_id=file_id)
        return file_id
