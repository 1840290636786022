"""A stopping worker's drain: jobs it cannot finish in time go back to the queue for another worker."""

from __future__ import annotations


class HandedBack(Exception):
    """The job goes back to the queue unfinished: this worker is stopping."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} handed back: the worker is stopping")
        self.job_id = job_id
