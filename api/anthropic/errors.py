"""Anthropic's error shape: `{"type": "error", "error": {"type", "message"}, "request_id"}`.

The SDK picks its exception class by status (BadRequestError, NotFoundError, RateLimitError,
OverloadedError...), so statuses stay Ladle's; the `type` is Anthropic's name for the status.
Headers pass through: `retry-after` on 429 and 503 is how long the SDK waits before it retries.
"""

from __future__ import annotations

from typing import Literal

import pydantic
from flask import g

from api.errors import ApiError

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    # Ladle's 503s (no worker for the queue, Redis failing over, a model unloaded mid-request) are
    # temporary: Anthropic's name for that is overloaded (its own status for it is 529).
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

ErrorType = Literal[
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
    "timeout_error",
]


class AnthropicErrorDetail(pydantic.BaseModel):
    """Anthropic's error object."""

    type: ErrorType
    message: str


class AnthropicErrorBody(pydantic.BaseModel):
    """Anthropic's error envelope: `{"type": "error", "error": {"type", "message"}, "request_id"}`."""

    type: Literal["error"]
    error: AnthropicErrorDetail
    request_id: str | None


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    return ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def error_body(error: ApiError) -> dict:
    """The error in Anthropic's envelope (also the data of a stream's `error` event)."""
    detail = {"type": error_type(error.status), "message": error.message}
    return {"type": "error", "error": detail, "request_id": g.get("request_id")}


def anthropic_error(error: ApiError) -> tuple[dict, dict]:
    """The dialect's error shape (api/errors.py, register_dialect): body and headers."""
    return error_body(error), error.headers
