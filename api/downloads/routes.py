"""`POST /openai/download`: a download job on the downloads queue, streamed or polled by ID."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, stream_with_context

from api.catalog.catalog import read_catalog
from api.downloads.progress_lines import download_lines, final_line
from api.downloads.protocol import DownloadRequest
from api.downloads.sources import download_root, plan_download
from api.openapi import documented
from api.queue.events import JobEventFeed
from api.queue.responses import accepted
from api.request_logging import tag_request
from api.services import AsyncPreference, json_body, new_request_job_id, prefers_async, services
from contracts import keys
from contracts.jobs import JobKind
from contracts.queues import DOWNLOAD_TASK, DOWNLOADS_LANE

bp = Blueprint("downloads", __name__)


@bp.post("/openai/download")
@documented(body=DownloadRequest, headers=AsyncPreference)
def download():
    """Download a model into the model directory, streaming Foundry's progress lines."""
    ctx = services()
    request = DownloadRequest.parse(json_body())
    entries, broken = read_catalog(ctx.settings.user_catalog_dir)
    plan = plan_download(request, entries, ctx.live_providers(), broken)
    root = download_root(request.customDirPath, ctx.settings)
    job_id = new_request_job_id()
    sealed_token = ctx.seal.seal(request.token) if request.token else None
    job = plan.to_job(job_id, root, sealed_token, request.force)
    share_key = keys.download_key(str(root / plan.model))
    job_id, feed = ctx.jobs.submit_shared(
        DOWNLOAD_TASK, JobKind.DOWNLOAD, plan.model, job.model_dump(), share_key, not prefers_async(), DOWNLOADS_LANE
    )
    tag_request(job_id)
    if feed is None:
        return accepted(ctx.store, job_id)
    response = Response(stream_with_context(_lines(feed)), mimetype="text/plain")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _lines(feed: JobEventFeed) -> Iterator[str]:
    """The job's progress lines; a client that leaves does not cancel (others may share the job)."""
    try:
        yield from download_lines(feed.events())
    except Exception:
        yield final_line(False, f"Lost track of download job {feed.job_id}; poll GET /v1/jobs/{feed.job_id}.")
        raise
    finally:
        feed.close()
