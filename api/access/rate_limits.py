"""Requests per API key (LADLE_RATE_LIMIT), counted in Redis so every API process shares the count.

Flask-Limiter keeps one fixed-window counter per key, for all routes together, in Ladle's own Redis
(the same connection pool, so Sentinel URLs work too). A request over the limit is a 429 in its
dialect's error shape with an integer `Retry-After`, `retry-after-ms` and OpenAI's `x-ratelimit-*`
headers, which every response of a limited key carries. A stream is one request. Without API keys there is no limit.
"""

from __future__ import annotations

import math
import time

from flask import Flask, g
from flask_limiter import Limiter, RequestLimit
from flask_limiter.errors import RateLimitExceeded
from limits import parse_many

from api.errors import ApiError, render_error
from api.services import Services

OFF = ("", "0", "off", "none")


def _key() -> str:
    return g.get("api_key_id") or ""


def _unkeyed() -> bool:
    return not g.get("api_key_id")


def _seconds_left(limit: RequestLimit) -> float:
    return max(0.0, limit.reset_at - time.time())


def _duration(seconds: float) -> str:
    """OpenAI's reset notation: `1s`, `6m0s`."""
    whole = math.ceil(seconds)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


def limit_headers(limit: RequestLimit) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(limit.limit.amount),
        "x-ratelimit-remaining-requests": str(max(0, limit.remaining)),
        "x-ratelimit-reset-requests": _duration(_seconds_left(limit)),
    }


def install(app: Flask, ladle: Services, keyed: bool = True) -> Limiter | None:
    """Limit keyed requests to `LADLE_RATE_LIMIT`; None when there is no limit.

    Without API keys no request is ever limited, so the limiter is not installed at all: its
    before- and after-request hooks cost about a tenth of the API's CPU on small requests.
    """
    rate = ladle.settings.rate_limit.strip()
    if rate.lower() in OFF:
        return None
    try:
        parse_many(rate)
    except ValueError:
        raise ValueError(f"LADLE_RATE_LIMIT {rate!r} is not a rate like '100/minute' or '10 per 2 seconds'") from None
    if not keyed:
        return None
    limiter = Limiter(
        _key,
        app=app,
        application_limits=[rate],
        application_limits_exempt_when=_unkeyed,
        storage_uri="redis://",
        storage_options={"connection_pool": ladle.store.client.connection_pool},
        strategy="fixed-window",
        key_prefix="ladle",
        headers_enabled=False,
    )

    @app.errorhandler(RateLimitExceeded)
    def over_limit(error: RateLimitExceeded):
        limit = limiter.current_limit
        wait_s = _seconds_left(limit) if limit else 1.0
        headers = limit_headers(limit) if limit else {}
        headers |= {"Retry-After": str(max(1, math.ceil(wait_s))), "retry-after-ms": str(max(1, int(wait_s * 1000)))}
        return render_error(
            ApiError(
                429,
                f"Rate limit reached for this API key: {error.limit.limit}. Retry after {headers['Retry-After']} s.",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers=headers,
            )
        )

    @app.after_request
    def tag_limits(response):
        limit = limiter.current_limit if g.get("api_key_id") else None
        if limit is not None and response.status_code != 429:
            response.headers.update(limit_headers(limit))
        return response

    return limiter
