"""Which queue a compute job goes to: model affinity without piling work onto one worker.

A job for a model goes to the own queue of a live worker of its device that has the model
loaded, the least busy one; if that worker's batch is full while another worker of the device
is idle, the idle worker gets it (it loads the model too). With no worker holding the model, the
job goes to the device's queue, where any of its workers takes it. Worker load comes from
heartbeats (refreshed twice a second) plus the jobs this API routed since then. The same snapshot
tells the job client which queues have a live worker, so a request costs at most one read of the
workers, and a busy API reads them twice a second whatever its request rate.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from contracts.queues import COMPUTE_LANE, queue_for_device, queue_for_worker
from contracts.workers import WorkerInfo


class JobRouter:
    SNAPSHOT_TTL_S = 0.5

    def __init__(self, live_workers: Callable[[], list[WorkerInfo]]) -> None:
        self._live_workers = live_workers
        self._workers: list[WorkerInfo] = []
        self._taken_at = float("-inf")
        self._routed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def snapshot(self) -> list[WorkerInfo]:
        """The live workers (every lane) as read at most SNAPSHOT_TTL_S ago; read again when older."""
        with self._lock:
            if time.monotonic() - self._taken_at > self.SNAPSHOT_TTL_S:
                self._take()
            return self._workers

    def refresh(self) -> list[WorkerInfo]:
        """The live workers, read now."""
        with self._lock:
            self._take()
            return self._workers

    def queue_for(self, model: str, device: str) -> str:
        with self._lock:
            if time.monotonic() - self._taken_at > self.SNAPSHOT_TTL_S:
                self._take()
            peers = [w for w in self._workers if w.device == device and w.lane == COMPUTE_LANE]
            holders = [w for w in peers if model in w.loaded_model_names]
            if not holders:
                return queue_for_device(device)
            chosen = min(holders, key=self._load)
            if self._load(chosen) >= chosen.batch_rows:
                idle = [w for w in peers if self._load(w) == 0]
                chosen = idle[0] if idle else chosen
            self._routed[chosen.name] += 1
            return queue_for_worker(chosen.name)

    def _take(self) -> None:
        """Read the live workers (lock held); jobs routed before count no more (their load is in it)."""
        self._workers = self._live_workers()
        self._routed.clear()
        self._taken_at = time.monotonic()

    def _load(self, worker: WorkerInfo) -> int:
        return worker.active_jobs + self._routed[worker.name]
