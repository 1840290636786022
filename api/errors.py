"""The one error hierarchy of the API and the handlers that render OpenAI's error envelope."""

from __future__ import annotations

import logging
from collections.abc import Callable

import kombu.exceptions
import pydantic
import redis
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from contracts import errors
from contracts.errors import ErrorInfo

log = logging.getLogger(__name__)

_HTTP_TYPES = {
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout",
}


class ErrorDetail(pydantic.BaseModel):
    """OpenAI's error fields."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(pydantic.BaseModel):
    """The body of every 4xx and 5xx response."""

    error: ErrorDetail


class ApiError(Exception):
    """A failure the client should see: an `ErrorInfo` (status and OpenAI's error fields) and headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.info = ErrorInfo(status=status, message=message, type=type, param=param, code=code)
        self.headers = headers or {}

    @classmethod
    def of(cls, info: ErrorInfo, headers: dict | None = None) -> ApiError:
        return cls(info.status, info.message, type=info.type, param=info.param, code=info.code, headers=headers)

    @property
    def status(self) -> int:
        return self.info.status

    @property
    def message(self) -> str:
        return self.info.message

    @property
    def type(self) -> str:
        return self.info.type

    @property
    def param(self) -> str | None:
        return self.info.param

    @property
    def code(self) -> str | None:
        return self.info.code

    def body(self) -> dict:
        detail = ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorEnvelope(error=detail).model_dump()


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError.of(errors.invalid_request(message, param, code))


def model_not_found(name: str) -> ApiError:
    return ApiError.of(errors.model_not_found(name))


def validation_error(error: pydantic.ValidationError) -> ApiError:
    """The first pydantic error, naming the offending parameter (dotted path)."""
    first = error.errors(include_url=False)[0]
    param = ".".join(str(part) for part in first["loc"] if not _is_union_tag(part)) or None
    if first["type"] == "invalid_type":  # a tagged union's `type` names none of its members
        param = f"{param}.type" if param else "type"
    if first["type"] == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: {param}", param, "unsupported_parameter")
    message = first["msg"].removeprefix("Value error, ")
    return bad_request(f"Invalid value for '{param}': {message}" if param else message, param, "invalid_value")


def _is_union_tag(part: object) -> bool:
    """A union member in an error's location (`#<type>`: api/chat/structured.py's tagged unions)."""
    return isinstance(part, str) and (part.startswith(("list[", "dict[", "#")) or part in {"str", "int", "float"})


# The error shapes of the other dialects the API speaks (Azure AI Model Inference, Databricks): a
# function giving an error's body and headers, by the name of the dialect's blueprint, and the path
# prefixes that are the dialect's even when no route matched (404, 405).
ErrorShape = Callable[[ApiError], tuple[dict, dict]]
_DIALECTS: dict[str, ErrorShape] = {}
_DIALECT_PREFIXES: dict[str, str] = {}


def register_dialect(blueprint: str, shape: ErrorShape, path_prefix: str | None = None) -> None:
    _DIALECTS[blueprint] = shape
    if path_prefix:
        _DIALECT_PREFIXES[path_prefix] = blueprint


def render_error(error: ApiError):
    """The error response in the shape of the dialect the request was made in (OpenAI's by default)."""
    dialect = request.blueprint or next((b for p, b in _DIALECT_PREFIXES.items() if request.path.startswith(p)), "")
    shape = _DIALECTS.get(dialect)
    body, headers = shape(error) if shape else (error.body(), error.headers)
    return jsonify(body), error.status, headers


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        return render_error(error)

    @app.errorhandler(pydantic.ValidationError)
    def invalid(error: pydantic.ValidationError):
        return api_error(validation_error(error))

    # Redis unreachable or mid-failover (the Sentinel client raises ConnectionError until the new
    # master answers), for Ladle's own commands or for Celery's (kombu wraps them).
    @app.errorhandler(redis.ConnectionError)
    @app.errorhandler(redis.TimeoutError)
    @app.errorhandler(redis.exceptions.ReadOnlyError)  # a plain redis:// URL naming a demoted primary
    # A master refusing writes for want of replicas comes as a ConnectionError once its retries run
    # out (contracts/redis_connection.py NoReplicasError); a replica that lost its master, as this.
    @app.errorhandler(redis.exceptions.MasterDownError)
    @app.errorhandler(kombu.exceptions.OperationalError)
    def redis_down(error: Exception):
        log.error("redis unavailable: %s", error)
        return api_error(
            ApiError(
                503,
                "The job queue (Redis) is unavailable; retry shortly.",
                type="service_unavailable",
                code="queue_unavailable",
                headers={"Retry-After": "5"},
            )
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if error.code == 500:
            log.error("unhandled error", exc_info=getattr(error, "original_exception", None) or error)
            message, kind = "The server had an error while processing your request.", "server_error"
        else:
            message, kind = error.description or error.name, _HTTP_TYPES.get(error.code, "invalid_request_error")
        return api_error(ApiError(error.code or 500, message, type=kind, code=error.name.lower().replace(" ", "_")))
