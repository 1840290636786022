"""Failures of a job that are the client's doing, carried back as the job's error event."""

from __future__ import annotations

from contracts.jobs import ErrorInfo


class JobRejected(Exception):
    """The request cannot be served as asked; `info` says why, with an HTTP status."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info

    @classmethod
    def invalid(cls, param: str, message: str) -> JobRejected:
        return cls(
            ErrorInfo(status=400, type="invalid_request_error", param=param, code="invalid_value", message=message)
        )


def model_not_found(name: str) -> JobRejected:
    return JobRejected(
        ErrorInfo(
            status=404,
            type="invalid_request_error",
            param="model",
            code="model_not_found",
            message=f"The model '{name}' does not exist.",
        )
    )


def context_exceeded(prompt_tokens: int, max_tokens: int, context: int, param: str) -> JobRejected:
    """A prompt (`param`: messages, or prompt[i]) too long for the context with max_tokens."""
    message = (
        f"This model's maximum context length is {context} tokens. However, you requested "
        f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in {param}, {max_tokens} in the completion)."
    )
    return JobRejected(
        ErrorInfo(
            status=400,
            type="invalid_request_error",
            param=param.split("[")[0],
            code="context_length_exceeded",
            message=message,
        )
    )


def wrong_model_kind(name: str, wanted: str) -> JobRejected:
    endpoint = "/v1/embeddings" if wanted == "generation" else "/v1/chat/completions or /v1/completions"
    message = f"The model '{name}' is not a {wanted} model; use it with {endpoint}."
    return JobRejected(
        ErrorInfo(status=400, type="invalid_request_error", param="model", code="wrong_model_type", message=message)
    )


def model_unloaded(name: str) -> JobRejected:
    message = f"The model '{name}' was unloaded before this request ran; retry to load it again."
    return JobRejected(ErrorInfo(status=503, type="service_unavailable", code="model_unloaded", message=message))
