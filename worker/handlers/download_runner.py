"""The work of a download job: open the sealed token, fetch the model, report progress, cancel."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from contracts.errors import ErrorInfo, job_cancelled
from contracts.events import DoneEvent, DownloadProgress, ErrorEvent
from contracts.job_store import JobStore
from contracts.jobs import DownloadJob, JobStatus
from contracts.token_seal import SealError, TokenSeal
from worker.hub.model_download import (
    DownloadCancelled,
    DownloadFailed,
    discard_staging,
    download_model,
)
from worker.runtime.event_publisher import EventPublisher
from worker.runtime.job_runner import Outcome

log = logging.getLogger(__name__)


class DownloadRunner:
    def __init__(self, store: JobStore, publisher: EventPublisher, seal: TokenSeal) -> None:
        self.store = store
        self.publisher = publisher
        self.seal = seal
        self.bytes_fetched = 0  # by this worker since it started (the heartbeat advertises it)

    def download(self, job: DownloadJob) -> Outcome:
        try:
            token = self.seal.open(job.sealed_token) if job.sealed_token else None
        except SealError as error:
            return _failed(500, "token_unreadable", str(error))
        log.info("download started", extra={"job_id": job.job_id, "model": job.model, "repo_id": job.repo_id})
        try:
            result = download_model(job, token, self._reporter(job.job_id), _CancelCheck(self.store, job.job_id))
        except DownloadCancelled:
            discard_staging(Path(job.target_root), job.model)
            log.info("download cancelled", extra={"job_id": job.job_id, "model": job.model})
            return ErrorEvent(error=job_cancelled()), JobStatus.CANCELLED
        except DownloadFailed as failed:
            log.warning("download failed", extra={"job_id": job.job_id, "code": failed.code, "error": str(failed)})
            return _failed(failed.status, failed.code, str(failed))
        return DoneEvent(result=result), JobStatus.SUCCEEDED

    def _reporter(self, job_id: str):
        """Stores each progress report and counts the bytes fetched since the previous one."""
        done = None

        def report(progress: DownloadProgress) -> None:
            nonlocal done
            if done is not None and progress.bytes_done > done:
                self.bytes_fetched += progress.bytes_done - done
            done = progress.bytes_done
            self.publisher.report_progress(job_id, progress)

        return report


class _CancelCheck:
    """Asks Redis whether the job was cancelled, at most every `interval_s`."""

    def __init__(self, store: JobStore, job_id: str, interval_s: float = 0.2) -> None:
        self.store = store
        self.job_id = job_id
        self.interval_s = interval_s
        self._checked_at = 0.0
        self._cancelled = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._checked_at >= self.interval_s:
            self._checked_at = now
            self._cancelled = self.store.is_cancel_requested(self.job_id)
        return self._cancelled


def _failed(status: int, code: str, message: str) -> Outcome:
    return ErrorEvent(
        error=ErrorInfo(status=status, type="download_error", code=code, message=message)
    ), JobStatus.FAILED
