"""The one error model: `ErrorInfo` (an HTTP status plus OpenAI's error fields) and its shared makers.

The API raises them wrapped in `ApiError` (api/errors.py), workers in `JobRejected` (worker/errors.py)
or as a job's error event; each failure a client can see is written once, here.
"""

from __future__ import annotations

from pydantic import BaseModel

from contracts.model_directory import GENERATION


class ErrorInfo(BaseModel):
    """A failure a client can see: HTTP status plus OpenAI's error fields."""

    status: int
    message: str
    type: str
    param: str | None = None
    code: str | None = None


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ErrorInfo:
    """A 400: the request is malformed or asks for something the model cannot do."""
    return ErrorInfo(status=400, type="invalid_request_error", param=param, code=code, message=message)


def model_not_found(name: str) -> ErrorInfo:
    return ErrorInfo(
        status=404,
        type="invalid_request_error",
        param="model",
        code="model_not_found",
        message=f"The model '{name}' does not exist.",
    )


def wrong_model_kind(name: str, wanted: str) -> ErrorInfo:
    """`name` is not a `wanted` ("generation" or "embedding") model; says which endpoint takes it."""
    endpoint = "/v1/embeddings" if wanted == GENERATION else "/v1/chat/completions or /v1/completions"
    message = f"The model '{name}' is not a {wanted} model; use it with {endpoint}."
    return invalid_request(message, "model", "wrong_model_type")


def context_exceeded(
    prompt_tokens: int, max_tokens: int, context: int, param: str, model_context: int | None = None
) -> ErrorInfo:
    """A prompt (`param`: messages, or prompt[i]) too long for the context with max_tokens
    (`model_context`: the model's own, when the worker's memory budget allows less)."""
    message = (
        f"This model's maximum context length is {context} tokens. However, you requested "
        f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in {param}, {max_tokens} in the completion)."
    )
    if model_context is not None and model_context > context:
        message += (
            f" The model takes {model_context}; the worker's memory budget (LADLE_MODEL_MEMORY_MB) leaves "
            f"its key/value cache {context}."
        )
    return invalid_request(message, param.split("[")[0], "context_length_exceeded")


def model_too_large(name: str, needed_mb: float, budget_mb: int) -> ErrorInfo:
    """`name` can never fit the worker's memory budget, even with nothing else loaded."""
    message = (
        f"The model '{name}' needs at least {needed_mb} MB (its weights and a key/value cache for one "
        f"sequence), more than the worker's memory budget of {budget_mb} MB (LADLE_MODEL_MEMORY_MB)."
    )
    return invalid_request(message, "model", "model_too_large")


def model_memory_in_use(name: str, needed_mb: float, busy: list[str], budget_mb: int) -> ErrorInfo:
    """`name` would fit the memory budget, but models running jobs hold the memory it needs."""
    message = (
        f"The model '{name}' needs {needed_mb} MB of the worker's {budget_mb} MB memory budget "
        f"(LADLE_MODEL_MEMORY_MB), which models running jobs hold ({', '.join(busy)}); retry when they finish."
    )
    return ErrorInfo(
        status=409, type="invalid_request_error", param="model", code="model_memory_in_use", message=message
    )


def model_unloaded(name: str) -> ErrorInfo:
    message = f"The model '{name}' was unloaded before this request ran; retry to load it again."
    return service_unavailable("model_unloaded", message)


def job_cancelled() -> ErrorInfo:
    """The error a cancelled job ends with."""
    return ErrorInfo(status=409, message="The job was cancelled.", type="invalid_request_error", code="cancelled")


def service_unavailable(code: str, message: str) -> ErrorInfo:
    """A 503: something Ladle depends on (Redis, a worker) failed; the client may retry."""
    return ErrorInfo(status=503, type="service_unavailable", code=code, message=message)


def server_error(code: str, message: str) -> ErrorInfo:
    """A 500 that is Ladle's doing, not the client's (`code`: bad_job, worker_lost, internal_error)."""
    return ErrorInfo(status=500, type="server_error", code=code, message=message)
