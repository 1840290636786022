"""Job kinds, Celery task and queue names, and the pydantic shapes of jobs and their events."""

from __future__ import annotations

import base64
from enum import Enum
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

GENERATE_TASK = "ladle.generate"
# Its argument is a list of embedding job payloads (a bundle): the API gathers requests that
# arrive together into one task, so a burst of small requests costs one queue message.
EMBED_TASK = "ladle.embed"
COUNT_TOKENS_TASK = "ladle.count_tokens"
LOAD_TASK = "ladle.load_model"
DOWNLOAD_TASK = "ladle.download_model"
DEFAULT_DEVICE = "cpu"
# Lanes of a device: "compute" runs models; "light" runs cheap jobs (token counts) in a worker
# of its own, so they never wait behind long generations.
COMPUTE_LANE = "compute"
LIGHT_LANE = "light"
# Downloads are I/O, never on a compute worker; one queue for the whole fleet, since every host
# of a deployment shares the model directory.
DOWNLOADS_LANE = "downloads"
DOWNLOADS_QUEUE = "ladle.downloads"


class JobKind(str, Enum):
    """What a job asks a worker to do."""

    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDING = "embedding"
    TOKEN_COUNT = "token_count"
    LOAD = "load"
    DOWNLOAD = "download"


class JobStatus(str, Enum):
    """Life cycle of a job record."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def queue_for_device(device: str, lane: str = COMPUTE_LANE) -> str:
    """The Celery queue consumed by workers bound to `device` ("cpu", "cuda:0", ...) and lane."""
    if lane == DOWNLOADS_LANE:
        return DOWNLOADS_QUEUE
    return f"ladle.device.{device}" if lane == COMPUTE_LANE else f"ladle.device.{device}.{lane}"


def queue_for_worker(worker_name: str) -> str:
    """A compute worker's own queue: jobs for a model it has loaded (model affinity)."""
    return f"ladle.worker.{worker_name}"


class SamplingParams(BaseModel):
    """How the next token is chosen; None means the model's own default (genai_config.json)."""

    model_config = ConfigDict(frozen=True)

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None


class GenerationJob(BaseModel):
    """A chat or completion request as the worker receives it.

    Chat jobs carry `messages` (one prompt, rendered with the chat template). Completion jobs
    carry `prompts`, decoded together in one batch; each is sent verbatim, or wrapped in the chat
    template as a user message when `use_raw_prompt` is false. With `truncate`, a prompt too long
    for the context keeps its last tokens instead of failing the job.
    """

    job_id: str
    model: str
    messages: list[dict] | None = None
    prompts: list[str] | None = None
    use_raw_prompt: bool = True
    truncate: bool = False
    n: int = 1
    max_tokens: int | None = None
    stop: list[str] = []
    sampling: SamplingParams = SamplingParams()
    # A batch line: interactive requests waiting for the engine go before it.
    background: bool = False


class TokenCountJob(BaseModel):
    """Count the tokens of the prompt a chat model would see for `messages`."""

    job_id: str
    model: str
    messages: list[dict]


class EmbeddingJob(BaseModel):
    """Embed each input (with an optional instruction), truncated to `dimensions` if given."""

    job_id: str
    model: str
    inputs: list[str]
    instruction: str | None = None
    dimensions: int | None = None


class LoadJob(BaseModel):
    """Load a model on a worker of the job's device; keep it `ttl_s` after last use (None: always)."""

    job_id: str
    model: str
    ttl_s: float | None = None


class DownloadJob(BaseModel):
    """Fetch `subfolder` of a Hugging Face repo at `revision` into `<target_root>/<model>`.

    `sealed_token` is the request's token encrypted with the deployment's secret (see
    contracts.token_seal): the job record, the queue and the logs never hold it in clear.
    """

    job_id: str
    model: str
    repo_id: str
    revision: str = "main"
    subfolder: str = ""
    target_root: str
    sealed_token: str | None = None
    prompt_template: dict | None = None
    publisher: str | None = None
    force: bool = False


class ErrorInfo(BaseModel):
    """A failure a client can see: HTTP status plus OpenAI's error fields."""

    status: int
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class Choice(BaseModel):
    """One generated sequence."""

    index: int
    text: str
    finish_reason: Literal["stop", "length", "cancelled"]


class PromptTokensDetails(BaseModel):
    # Prompt tokens whose key/values came from the prefix cache instead of being read again.
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = PromptTokensDetails()


class GenerationResult(BaseModel):
    """What a finished chat job produced."""

    choices: list[Choice]
    usage: Usage
    # Sequences decoded together in the batch this job ran in (all jobs in it, this one included).
    batch_size: int = 1


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
    # The file most recently advanced ("" before the first byte and once complete).
    current_file: str = ""

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
    """New text of one choice; finish_reason is set on the choice's last delta."""

    type: Literal["delta"] = "delta"
    index: int
    text: str
    finish_reason: Literal["stop", "length", "cancelled"] | None = None


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


def cancelled_error() -> ErrorInfo:
    """The error a cancelled job ends with."""
    return ErrorInfo(status=409, message="The job was cancelled.", type="invalid_request_error", code="cancelled")
