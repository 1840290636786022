"""Log records written while the API serves a request carry that request's ID (`request_id`)."""

from __future__ import annotations

import logging

from flask import g, has_request_context, request

access_log = logging.getLogger("ladle.access")


def tag_request(request_id: str) -> str:
    """Make `request_id` the current request's ID (its X-Request-Id header and log records); returns it.

    A request that submits or names a job takes the job's ID, so one ID follows it everywhere.
    """
    g.request_id = request_id
    return request_id


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (the job ID for job requests) to records logged inside a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context() and not hasattr(record, "request_id"):
            request_id = g.get("request_id")
            if request_id:
                record.request_id = request_id
        return True


def log_request(response):
    """One access-log record per request, with its route, status and ID (after_request hook)."""
    access_log.info(
        "request served",
        extra={
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "request_id": g.get("request_id", ""),
        },
    )
    return response
