"""Submitting jobs: check for a live worker, record the job, follow it (if asked), then enqueue."""

from __future__ import annotations

import logging
import time
import uuid

import redis
from celery import Celery

from api.errors import ApiError
from api.queue.events import JobEventFeed, JobEventHub
from api.queue.messages import TaskMessages
from api.queue.routing import JobRouter
from contracts import workers
from contracts.errors import service_unavailable
from contracts.events import ErrorEvent
from contracts.job_store import JobStore
from contracts.jobs import JobKind, JobStatus
from contracts.queues import COMPUTE_LANE, DOWNLOADS_LANE, queue_for_device
from contracts.settings import Settings
from contracts.workers import WorkerInfo

log = logging.getLogger(__name__)


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobClient:
    """The API's side of the job queue: checks for workers, records and enqueues jobs."""

    # A worker seen alive is trusted this long without asking Redis again (heartbeats expire
    # after three periods, so a dead worker is noticed within seconds either way).
    WORKER_SEEN_TTL_S = 1.0

    def __init__(self, settings: Settings, store: JobStore, celery: Celery) -> None:
        self.settings = settings
        self.store = store
        self.celery = celery
        self.messages = TaskMessages(celery)
        self.hub = JobEventHub(store.client)
        self.router = JobRouter(self.live_workers)
        self._worker_seen: dict[tuple[str, str], float] = {}

    def live_workers(self) -> list[WorkerInfo]:
        """Workers whose heartbeat has not expired (dead ones drop out of the index after an hour)."""
        return workers.live(self.store.client)

    def require_worker(self, device: str, lane: str = COMPUTE_LANE) -> None:
        """Wait (bounded) for a live worker consuming the queue of `device` and `lane`; else 503."""
        if time.monotonic() - self._worker_seen.get((device, lane), -1e9) < self.WORKER_SEEN_TTL_S:
            return
        deadline = time.monotonic() + self.settings.worker_wait_s
        queue = queue_for_device(device, lane)
        live = self.router.snapshot()  # the workers as routing last read them (< 0.5 s ago)
        while not any(queue in w.queues for w in live):
            if time.monotonic() >= deadline:
                if lane == DOWNLOADS_LANE:
                    wanted = "No downloads worker (`ladle worker --lane downloads`) is available"
                else:
                    wanted = f"No worker for device '{device}'" + ("" if lane == COMPUTE_LANE else f" ({lane} lane)")
                    wanted += " is available"
                raise ApiError(
                    503,
                    f"{wanted}; retry later.",
                    type="service_unavailable",
                    code="no_worker",
                    headers={"Retry-After": "10"},
                )
            time.sleep(0.2)
            live = self.router.refresh()
        self._worker_seen[(device, lane)] = time.monotonic()

    def compute_worker_alive(self) -> bool:
        """Whether any live compute worker exists; one seen within WORKER_SEEN_TTL_S is trusted."""
        now = time.monotonic()
        seen_compute = (seen for (_, lane), seen in self._worker_seen.items() if lane == COMPUTE_LANE)
        if any(now - seen < self.WORKER_SEEN_TTL_S for seen in seen_compute):
            return True
        compute = [w for w in self.live_workers() if w.lane == COMPUTE_LANE]
        for worker in compute:
            self._worker_seen[(worker.device, COMPUTE_LANE)] = now
        return bool(compute)

    def follow(self, job_id: str, fresh: bool = False) -> JobEventFeed:
        """The job's events; `fresh`: the job is not enqueued yet, so none are stored before now."""
        return JobEventFeed(self.store, self.hub, job_id, fresh)

    def submit(
        self,
        task: str,
        kind: JobKind,
        model: str,
        payload: dict,
        device: str,
        follow: bool,
        lane: str = COMPUTE_LANE,
        owner: str | None = None,
    ) -> JobEventFeed | None:
        """Record and enqueue the job `payload["job_id"]` (of API key `owner`); returns a feed when `follow` is set."""
        self.require_worker(device, lane)
        job_id = payload["job_id"]
        queue = self.router.queue_for(model, device) if lane == COMPUTE_LANE else queue_for_device(device, lane)
        return self._enqueue(task, payload, [job_id], [follow], queue, job_id, (kind, model, owner))[0]

    def submit_bundle(
        self,
        task: str,
        kind: JobKind,
        model: str,
        payloads: list[dict],
        device: str,
        follow: list[bool],
        owner: str | None = None,
    ) -> list[JobEventFeed | None]:
        """Record several jobs for one model and send them as one task (its argument: the payloads).

        Each job keeps its own record, events and result; returns a feed per job where `follow` says so.
        """
        self.require_worker(device)
        task_id, job_ids = new_job_id(), [payload["job_id"] for payload in payloads]
        queue = self.router.queue_for(model, device)
        return self._enqueue(task, payloads, job_ids, follow, queue, task_id, (kind, model, owner))

    def submit_shared(
        self, task: str, kind: JobKind, model: str, payload: dict, share_key: str, follow: bool, lane: str
    ) -> tuple[str, JobEventFeed | None]:
        """Like `submit`, but a request for the same `share_key` as an unfinished job joins that job.

        Returns the ID of the job that serves the request (this one or the earlier one).
        """
        self.require_worker("cpu", lane)
        job_id = payload["job_id"]
        self.store.create([job_id], kind, model)
        owner = self.store.claim_shared(share_key, job_id)
        if owner != job_id:
            self.store.delete(job_id)
            return owner, self.follow(owner) if follow else None
        return job_id, self._enqueue(task, payload, [job_id], [follow], queue_for_device("cpu", lane), job_id)[0]

    def _enqueue(
        self,
        task: str,
        argument: dict | list[dict],
        job_ids: list[str],
        follow: list[bool],
        queue: str,
        task_id: str,
        record: tuple[JobKind, str, str | None] | None = None,
    ) -> list[JobEventFeed | None]:
        """Send the task carrying the jobs `job_ids`, following those asked for before it is sent,
        so no event is missed; a feed (or None) per job.

        With `record` (kind, model, owner), the jobs are recorded by the same command (a script: the
        task is never visible without its records); otherwise they are recorded already.
        """
        wanted = zip(job_ids, follow, strict=True)
        feeds = [self.follow(job_id, fresh=True) if follows else None for job_id, follows in wanted]
        try:
            # A short argsrepr: Celery's own repr of long payloads costs more than sending them.
            message = self.messages.build(task, argument, queue, task_id, "jobs " + " ".join(job_ids))
            if record is not None:
                kind, model, owner = record
                message_to_send = (message.queue, message.payload)
                self.store.create(job_ids, kind, model, task_id=task_id, message=message_to_send, owner=owner)
            else:
                self.store.client.lpush(message.queue, message.payload)
        except Exception:
            for feed in feeds:
                if feed is not None:
                    feed.close()
            self._fail_unsent(job_ids)
            raise
        return feeds

    def _fail_unsent(self, job_ids: list[str]) -> None:
        """Fail recorded jobs whose task could not be sent (Redis failing over), so none reads `queued` forever."""
        info = service_unavailable(
            "queue_unavailable", "The job could not be queued: the job queue (Redis) was unavailable. Submit it again."
        )
        try:
            for job_id in job_ids:
                self.store.finish(job_id, ErrorEvent(error=info), JobStatus.FAILED, only_if=JobStatus.QUEUED)
        except redis.RedisError:
            log.warning("could not mark unsent jobs failed", extra={"job_ids": job_ids})
