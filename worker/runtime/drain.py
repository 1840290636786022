"""A stopping worker's drain: jobs it cannot finish in time go back to the queue for another worker."""

from __future__ import annotations

import logging
import threading

from celery import current_task
from celery.worker import state as celery_state

log = logging.getLogger(__name__)


class HandedBack(Exception):
    """The job goes back to the queue unfinished: this worker is stopping."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} handed back: the worker is stopping")
        self.job_id = job_id


_settling = threading.Lock()


def requeue_current_task() -> None:
    """Put the message of the task this thread runs back on its queue now.

    Celery performs acks and rejects on its event loop, which a warm shutdown has stopped: a
    Reject raised now would only reach the broker once every running task has returned. The
    request is then marked acknowledged, so Celery does not settle the message a second time.
    """
    task_id = current_task.request.id if current_task else None
    with _settling:  # deliveries of one job (one task ID) handed back at once settle it once
        for request in list(celery_state.active_requests):
            if request.id == task_id and not request.acknowledged:
                request.message.reject(requeue=True)
                request.acknowledged = True
                log.info("message requeued", extra={"task_id": task_id})
