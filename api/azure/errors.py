"""Azure's error shape: `{"error": {code, message, ...}}` with an `x-ms-error-code` header. The
fields are OpenAI's (azure-core reads `code` and `message`), with `code` always set.

azure-core retries any failed request that carries `Retry-After`, so only 429 and 503 keep it.
"""

from __future__ import annotations

from api.errors import ApiError

RETRIED_STATUSES = (429, 503)


def azure_error(error: ApiError) -> tuple[dict, dict]:
    code = error.code or error.type
    detail = {**error.body()["error"], "code": code}
    headers = {"x-ms-error-code": code, **error.headers}
    if error.status not in RETRIED_STATUSES:
        headers = {k: v for k, v in headers.items() if k.lower() not in ("retry-after", "retry-after-ms")}
    return {"error": detail}, headers
