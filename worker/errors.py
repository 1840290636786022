"""Failures of a job that are the client's doing, carried back as the job's error event.

The errors themselves are made in contracts/errors.py (shared with the API); this module raises them.
"""

from __future__ import annotations

from contracts import errors
from contracts.errors import ErrorInfo


class JobRejected(Exception):
    """The request cannot be served as asked; `info` says why, with an HTTP status."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info

    @classmethod
    def invalid(cls, param: str, message: str) -> JobRejected:
        return cls(errors.invalid_request(message, param, "invalid_value"))


def model_not_found(name: str) -> JobRejected:
    return JobRejected(errors.model_not_found(name))


def context_exceeded(
    prompt_tokens: int, max_tokens: int, context: int, param: str, model_context: int | None = None
) -> JobRejected:
    """A prompt (`param`: messages, or prompt[i]) too long for the context with max_tokens."""
    return JobRejected(errors.context_exceeded(prompt_tokens, max_tokens, context, param, model_context))


def model_too_large(name: str, needed_mb: float, budget_mb: int) -> JobRejected:
    return JobRejected(errors.model_too_large(name, needed_mb, budget_mb))


def model_memory_in_use(name: str, needed_mb: float, busy: list[str], budget_mb: int) -> JobRejected:
    return JobRejected(errors.model_memory_in_use(name, needed_mb, busy, budget_mb))


def wrong_model_kind(name: str, wanted: str) -> JobRejected:
    return JobRejected(errors.wrong_model_kind(name, wanted))


def logprobs_unsupported(name: str) -> JobRejected:
    message = (
        f"The model '{name}' runs on an engine that cannot report logprobs (onnxruntime-genai's Generator, "
        "which serves GPU workers and graphs the continuous-batching engine cannot drive); ask without logprobs."
    )
    return JobRejected.invalid("logprobs", message)


def model_unloaded(name: str) -> JobRejected:
    return JobRejected(errors.model_unloaded(name))


def tokens_outside_vocabulary(name: str, vocab_size: int, token: int, index: int) -> JobRejected:
    """Token ids an embedding model's tokenizer does not have: most likely another tokenizer's."""
    message = (
        f"Token id {token} (in input {index}) is outside the vocabulary of the model '{name}' (ids 0 to "
        f"{vocab_size - 1}): token ids are read as this model's own tokenizer's, and these look like another "
        "tokenizer's (e.g. OpenAI's tiktoken). Send the text instead; LangChain's OpenAIEmbeddings sends text "
        "with check_embedding_ctx_length=False."
    )
    return JobRejected.invalid("input", message)
