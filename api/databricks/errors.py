"""Databricks' error shape: `{"error_code", "message"}` (never a `detail` key: databricks-sdk
would read the body as a SCIM error)."""

from __future__ import annotations

import pydantic

from api.errors import ApiError

# databricks-sdk picks its exception class by error_code (InvalidParameterValue, ResourceDoesNotExist...).
ERROR_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_CONFLICT",
    413: "BAD_REQUEST",
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    501: "NOT_IMPLEMENTED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class DatabricksErrorBody(pydantic.BaseModel):
    """Databricks' error body."""

    model_config = pydantic.ConfigDict(extra="forbid")

    error_code: str
    message: str


def databricks_error(error: ApiError) -> tuple[dict, dict]:
    code = ERROR_CODES.get(error.status, "BAD_REQUEST" if error.status < 500 else "INTERNAL_ERROR")
    return {"error_code": code, "message": error.message}, error.headers
