"""Jobs whose queue message was lost: found and failed visibly, so none stays queued forever.

kombu's Redis transport takes a message with BRPOP and records it as unacknowledged with a
second command. A primary that dies between the two (or before replicating a message) leaves a
job recorded as `queued` with no message anywhere: no worker will ever run it. So does a consumer
whose connection is dropped (cut off past the keepalive bound) after Redis answered its BRPOP: the
message goes with the connection. Whenever the Redis server behind Ladle changes (its run ID
differs: a Sentinel failover, or a restart), one worker looks for such jobs at once; and every
LADLE_LOST_JOB_SWEEP_S one worker looks for jobs queued longer than that. Either fails them with a
retryable error. The search scans every key once, which is why it is not made more often.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from contracts import keys
from contracts.errors import service_unavailable
from contracts.events import ErrorEvent
from contracts.job_store import JobStore
from contracts.jobs import JobStatus
from worker.runtime.fleet_clock import CLOCK

log = logging.getLogger(__name__)

# kombu's Redis transport: hash of unacknowledged deliveries (tag -> [message, exchange, key]).
UNACKED_KEY = "unacked"
# A message in flight between a consumer's BRPOP and its unacked record, or between the API's
# record and its send, shows up within this long; only jobs missing from two looks are lost.
SECOND_LOOK_AFTER_S = 2.0
# The periodic look waits longer (at most its period): a BRPOP answered just as its consumer was
# cut off is in flight until the partition heals, or until keepalive drops the connection (25 s).
PERIODIC_SECOND_LOOK_S = 30.0
_SCAN_BATCH = 1000


class LostJobSweeper:
    """Remembers the Redis server's run ID; when it changes, and every `every_s` seconds (0: never),
    fails queued jobs whose message is gone."""

    def __init__(self, store: JobStore, every_s: float = 0.0) -> None:
        self.store = store
        self.every_s = every_s
        self.run_id = self._server_run_id()
        self._next_periodic = time.monotonic() + every_s

    def _server_run_id(self) -> str:
        return self.store.client.info("server")["run_id"]

    def check(self) -> None:
        """On a new server, or when the period is up, start a sweep in the background (one worker
        per server change, and one per period in the fleet, does it)."""
        run_id = self._server_run_id()
        if run_id != self.run_id:
            self.run_id = run_id
            if self.store.client.set(keys.lost_job_sweep_key(run_id), 1, nx=True, ex=3600):
                log.warning("redis server changed; looking for jobs whose message was lost", extra={"run_id": run_id})
                self._start(CLOCK.now(), SECOND_LOOK_AFTER_S)
            return
        if self.every_s <= 0 or time.monotonic() < self._next_periodic:
            return
        self._next_periodic = time.monotonic() + self.every_s
        if self.store.client.set(keys.LOST_JOB_SWEEP_PERIODIC_KEY, 1, nx=True, px=max(1, int(self.every_s * 1000))):
            # Jobs queued a whole period, looked at twice.
            self._start(CLOCK.now() - self.every_s, min(self.every_s, PERIODIC_SECOND_LOOK_S))

    def _start(self, created_before: float, second_look_s: float) -> None:
        # Not on the heartbeat's thread: the sweep waits for a second look, the beat must not.
        sweep = threading.Thread(
            target=self._sweep_logged, args=(created_before, second_look_s), name="lost-job-sweep", daemon=True
        )
        sweep.start()

    def _sweep_logged(self, created_before: float, second_look_s: float) -> None:
        try:
            self.sweep(created_before, second_look_s)
        except Exception:
            log.exception("lost-job sweep failed")

    def sweep(self, created_before: float, second_look_s: float = SECOND_LOOK_AFTER_S) -> int:
        """Fail jobs queued before `created_before` whose task is in no queue and held by no worker,
        at a first look and at a second one `second_look_s` later (a job no longer queued by then
        is left as it is: only a queued one is failed)."""
        suspects = self._unsent(self._queued_jobs(created_before))
        if suspects:
            time.sleep(second_look_s)
            suspects = self._unsent(suspects)  # a job started meanwhile has its message held: not a suspect
        info = service_unavailable(
            "job_lost",
            "The job's queue message was lost (a Redis failover, or a worker cut off from Redis as it took"
            " the job) before a worker ran it; submit it again.",
        )
        failed = 0
        for job_id in suspects:
            if self.store.finish(job_id, ErrorEvent(error=info), JobStatus.FAILED, only_if=JobStatus.QUEUED):
                failed += 1
        if failed:
            log.error("failed jobs whose queue message was lost", extra={"jobs": failed})
        return failed

    def _queued_jobs(self, created_before: float) -> dict[str, str]:
        """Job ID -> task ID of every job still queued that was created before `created_before`."""
        client, prefix = self.store.client, keys.job_key("")
        names = [
            name.decode()
            for name in client.scan_iter(match=f"{prefix}*", count=_SCAN_BATCH, _type="hash")
            if b":" not in name[len(prefix) :]
        ]
        queued = {}
        for start in range(0, len(names), _SCAN_BATCH):
            chunk = names[start : start + _SCAN_BATCH]
            pipe = client.pipeline(transaction=False)
            for name in chunk:
                pipe.hmget(name, "status", "created_at", "task")
            for name, (status, created_at, task) in zip(chunk, pipe.execute(), strict=True):
                if status == JobStatus.QUEUED.value.encode() and float(created_at or 0) < created_before:
                    queued[name.removeprefix(prefix)] = (task or name.removeprefix(prefix).encode()).decode()
        return queued

    def _unsent(self, jobs: dict[str, str]) -> dict[str, str]:
        """The jobs among `jobs` whose task message is in no queue list and not unacknowledged."""
        if not jobs:
            return {}
        present = self._task_ids_in_broker()
        return {job_id: task for job_id, task in jobs.items() if task not in present}

    def _task_ids_in_broker(self) -> set[str]:
        client = self.store.client
        messages = list(client.hvals(UNACKED_KEY))
        for queue in client.scan_iter(count=_SCAN_BATCH, _type="list"):
            messages += client.lrange(queue, 0, -1)
        ids = set()
        for raw in messages:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if isinstance(message, list):  # an unacked entry: [message, exchange, routing key]
                message = message[0]
            task_id = message.get("headers", {}).get("id") if isinstance(message, dict) else None
            if task_id:
                ids.add(task_id)
        return ids
