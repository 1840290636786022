"""Gathering embedding requests that arrive together into one job bundle: one queue message.

The first request for a model opens a bundle and waits up to the gathering window for others to
join (or until the bundle holds `max_inputs` texts); then it records all the bundle's jobs and
sends them as one task. Each request keeps its own job: ID, record, events and result. The
worker then runs the bundle's texts (with those of other bundles) in one onnxruntime call.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from api.queue.client import JobClient
from api.queue.events import JobEventFeed
from contracts.jobs import EmbeddingJob, JobKind
from contracts.queues import EMBED_TASK


@dataclass
class _Bundle:
    payloads: list[dict] = field(default_factory=list)
    follow: list[bool] = field(default_factory=list)
    inputs: int = 0
    sent: threading.Event = field(default_factory=threading.Event)
    feeds: list[JobEventFeed | None] = field(default_factory=list)
    error: BaseException | None = None


class EmbeddingBundler:
    def __init__(self, jobs: JobClient, window_s: float, max_inputs: int) -> None:
        self.jobs = jobs
        self.window_s = window_s
        self.max_inputs = max_inputs
        self._open: dict[tuple[str, str, str | None], _Bundle] = {}
        self._changed = threading.Condition()

    def submit(self, job: EmbeddingJob, device: str, follow: bool, owner: str | None = None) -> JobEventFeed | None:
        """Record and enqueue `job` (of API key `owner`: a bundle holds one key's jobs) in a bundle;
        its feed when `follow` is set."""
        key = (job.model, device, owner)
        with self._changed:
            bundle = self._open.get(key)
            if bundle is not None and bundle.inputs + job.size > self.max_inputs:
                self._close(key)  # no room: that bundle goes now, this job opens the next
                bundle = None
            leading = bundle is None
            if leading:
                bundle = self._open[key] = _Bundle()
            position = len(bundle.payloads)
            bundle.payloads.append(job.model_dump())
            bundle.follow.append(follow)
            bundle.inputs += job.size
            if bundle.inputs >= self.max_inputs:
                self._close(key)
            if leading:
                deadline = time.monotonic() + self.window_s
                while self._open.get(key) is bundle and (remaining := deadline - time.monotonic()) > 0:
                    self._changed.wait(remaining)
                if self._open.get(key) is bundle:
                    self._close(key)
        if leading:
            try:
                bundle.feeds = self.jobs.submit_bundle(
                    EMBED_TASK, JobKind.EMBEDDING, job.model, bundle.payloads, device, bundle.follow, owner
                )
            except BaseException as error:  # every job of the bundle fails the same way
                bundle.error = error
            bundle.sent.set()
        else:
            bundle.sent.wait()
        if bundle.error is not None:
            raise bundle.error
        return bundle.feeds[position]

    def _close(self, key: tuple[str, str, str | None]) -> None:
        """Take the open bundle for `key` out of reach (lock held) and wake its leader."""
        self._open.pop(key, None)
        self._changed.notify_all()
