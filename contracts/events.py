"""What a job reports: its results and the events of its stream (started, delta, progress, done, error)."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, Field, TypeAdapter

from contracts.errors import ErrorInfo


def _absent(value: object) -> bool:
    """Fields left out of the JSON when None, so events and results without logprobs stay as small."""
    return value is None


class TopLogprob(BaseModel):
    """A token with its log probability: `token` is its text (its bytes written `bytes:\\xNN...`
    when they are not whole UTF-8 characters), `bytes` exactly the bytes it stands for."""

    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    """A token of the text, its log probability and the most likely tokens at its position (the
    model's distribution before temperature, top-k and top-p, as vLLM reports by default). A
    prompt's first token has no context: its logprob and top_logprobs are None."""

    logprob: float | None
    top_logprobs: list[TopLogprob] | None = []


FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]


class ToolCall(BaseModel):
    """A complete call of one of the request's tools: of a function (`arguments` is its JSON text), or
    of a custom tool (`type` custom: `arguments` is its input, text as the model wrote it)."""

    id: str
    name: str
    arguments: str
    type: Literal["function", "custom"] = "function"


class ToolCallDelta(BaseModel):
    """Part of a tool call as it is generated: the first part names it (id, name), later ones
    carry fragments of its arguments (joined, they are the call's `arguments`)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    # On a custom tool's parts (its first and its input's fragments); None on a function's fragments.
    type: Literal["function", "custom"] | None = None


class Choice(BaseModel):
    """One generated sequence, with its tokens' log probabilities when the job asked for them."""

    index: int
    text: str
    finish_reason: FinishReason
    logprobs: list[TokenLogprob] | None = Field(None, exclude_if=_absent)
    prompt_logprobs: list[TokenLogprob] | None = Field(None, exclude_if=_absent)
    tool_calls: list[ToolCall] | None = Field(None, exclude_if=_absent)  # complete ones only
    # The stop string that ended the text (finish_reason "stop"), when one did.
    stop_sequence: str | None = Field(None, exclude_if=_absent)
    # Whether the answer began calling tools (all of a forced one does), even with a call max_tokens
    # cut: its `text` is then only what came before the calls.
    began_calls: bool = Field(False, exclude_if=lambda began: not began)
    # The call max_tokens cut while it was being written: what of it came (the Responses API shows it
    # as an incomplete item; chat's `tool_calls` holds complete calls only).
    cut_call: ToolCall | None = Field(None, exclude_if=_absent)
    # A thinking model's reasoning (worker/engines/reasoning.py; harmony's: worker/engines/harmony_reasoning.py),
    # kept out of `text`; None when the model does not think or this output did not.
    reasoning: str | None = Field(None, exclude_if=_absent)


class PromptTokensDetails(BaseModel):
    # Prompt tokens whose key/values came from the prefix cache instead of being read again.
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    # Completion tokens of a thinking model's reasoning, its tags included.
    reasoning_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = PromptTokensDetails()
    # Only for models that think (absent otherwise, as before they did).
    completion_tokens_details: CompletionTokensDetails | None = Field(None, exclude_if=_absent)


class GenerationResult(BaseModel):
    """What a finished chat or completion job produced."""

    choices: list[Choice]
    usage: Usage
    # Sequences decoded together in the batch this job ran in (all jobs in it, this one included).
    batch_size: int = 1
    # When the job's first token was decoded (Unix time, the worker's clock), for its timeline.
    first_token_at: float | None = Field(None, exclude_if=_absent)


class TokenCountResult(BaseModel):
    token_count: int


class EmbeddingResult(BaseModel):
    # Each vector as base64 of little-endian float32 (OpenAI's base64 encoding): compact in Redis
    # and exact; `vectors()` decodes them.
    embeddings: list[str]
    prompt_tokens: int
    # Texts run in the same onnxruntime call as this job's (its own included).
    batch_size: int = 1

    @classmethod
    def of(cls, vectors, prompt_tokens: int, batch_size: int) -> EmbeddingResult:
        """From a float array [texts, dimensions]."""
        rows = [base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode() for v in vectors]
        return cls(embeddings=rows, prompt_tokens=prompt_tokens, batch_size=batch_size)

    def vectors(self) -> list[list[float]]:
        return [np.frombuffer(base64.b64decode(row), dtype="<f4").tolist() for row in self.embeddings]


class LoadResult(BaseModel):
    loaded_model: str
    worker: str


class FileProgress(BaseModel):
    """Bytes of one file of a download (path relative to the model folder)."""

    name: str
    bytes_done: int
    bytes_total: int


class DownloadProgress(BaseModel):
    """A download's progress: per file and overall."""

    files: list[FileProgress]
    bytes_done: int
    bytes_total: int
    # The file most recently advanced ("" before the first byte, once complete, and while building).
    current_file: str = ""
    # "building" once a build-on-pull's weights are all in and onnxruntime-genai's builder runs;
    # `stage` is then the builder's latest step ("Reading layer 3", "Saving ONNX model"), "" before its first.
    phase: Literal["downloading", "building"] = "downloading"
    stage: str = ""

    @property
    def fraction(self) -> float:
        return self.bytes_done / self.bytes_total if self.bytes_total else 1.0

    def file_fraction(self, name: str) -> float:
        for file in self.files:
            if file.name == name:
                return file.bytes_done / file.bytes_total if file.bytes_total else 1.0
        return 1.0


class DownloadResult(BaseModel):
    model: str
    path: str
    files: list[FileProgress]
    bytes_total: int
    # True when the model was already complete in the directory and nothing was fetched.
    already_present: bool = False


class StartedEvent(BaseModel):
    type: Literal["started"] = "started"
    worker: str


class DeltaEvent(BaseModel):
    """New text of one choice; finish_reason is set on the choice's last delta.

    When the job asked for logprobs, `logprobs` holds those of the tokens whose text this delta
    completes, and one delta before the first text holds the prompt's (`prompt_logprobs`).
    """

    type: Literal["delta"] = "delta"
    index: int
    text: str
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprob] | None = Field(None, exclude_if=_absent)
    prompt_logprobs: list[TokenLogprob] | None = Field(None, exclude_if=_absent)
    tool_calls: list[ToolCallDelta] | None = Field(None, exclude_if=_absent)
    # New reasoning text of a thinking model (never part of `text`).
    reasoning: str | None = Field(None, exclude_if=_absent)


class ProgressEvent(BaseModel):
    """How far a long job (a download) has come."""

    type: Literal["progress"] = "progress"
    progress: DownloadProgress


class DoneEvent(BaseModel):
    """Terminal: the job succeeded."""

    type: Literal["done"] = "done"
    result: GenerationResult | EmbeddingResult | TokenCountResult | LoadResult | DownloadResult


class ErrorEvent(BaseModel):
    """Terminal: the job failed or was cancelled."""

    type: Literal["error"] = "error"
    error: ErrorInfo


JobEvent = Annotated[StartedEvent | DeltaEvent | ProgressEvent | DoneEvent | ErrorEvent, Field(discriminator="type")]
job_event_adapter: TypeAdapter[JobEvent] = TypeAdapter(JobEvent)

TERMINAL_EVENT_TYPES = frozenset({"done", "error"})
