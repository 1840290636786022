"""Job kinds and statuses, and the payloads the API sends workers (one pydantic model per kind)."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict


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


class SamplingParams(BaseModel):
    """How the next token is chosen; None means the model's own default (genai_config.json)."""

    model_config = ConfigDict(frozen=True)

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    # Penalties and biases on the row's logits before it picks (None or 0/1: no effect).
    # OpenAI's: minus frequency_penalty per earlier occurrence in the output, minus presence_penalty once.
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    # transformers' and vLLM's, over prompt and output: a seen token's logit divided by it (positive
    # logits) or multiplied by it (negative ones).
    repetition_penalty: float | None = None
    # Tokens less likely than min_p times the most likely one are never sampled.
    min_p: float | None = None
    # Token id -> added to its logit (OpenAI's -100..100).
    logit_bias: dict[int, float] | None = None

    @property
    def shapes_logits(self) -> bool:
        """Whether any penalty or bias changes the logits the row picks from."""
        return bool(
            self.frequency_penalty
            or self.presence_penalty
            or self.logit_bias
            or (self.repetition_penalty is not None and self.repetition_penalty != 1)
        )


# How a chat answer may call the request's tools: text or calls (auto), only calls (required), or
# exactly one call of the function the request named (named: it ends with finish_reason "stop").
ToolCallMode = Literal["auto", "required", "named"]


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
    # Log probabilities of the output tokens, each with this many most likely alternatives (None:
    # none are computed); `prompt_logprobs`: of the prompt tokens too (completions with echo).
    logprobs: int | None = None
    prompt_logprobs: bool = False
    # A batch line: interactive requests waiting for the engine go before it.
    background: bool = False
    # Structured output: an llguidance grammar (its JSON text) every token of the output must fit,
    # the functions shown to the model, and how its output may call them (see ToolCallMode).
    grammar: str | None = None
    tools: list[dict] | None = None
    tool_calls: ToolCallMode | None = None
    # The request's reasoning effort, given to the chat template as `reasoning_effort` (gpt-oss's
    # reads it; None: the variable is left out, so a template keeps its own default).
    reasoning_effort: str | None = None


class TokenCountJob(BaseModel):
    """Count the tokens of the prompt a chat model would see for `messages` (and `tools`, OpenAI
    function definitions, described in its system message as a chat job shows them; and
    `reasoning_effort`, given to the chat template as a chat job gives it)."""

    job_id: str
    model: str
    messages: list[dict]
    tools: list[dict] | None = None
    reasoning_effort: str | None = None


class EmbeddingJob(BaseModel):
    """Embed each input (with an optional instruction), truncated to `dimensions` if given.

    The inputs are texts (`inputs`), or token ids of the model's own tokenizer (`token_inputs`,
    embedded as they are, never decoded: `inputs` is then empty and `instruction` None).
    """

    job_id: str
    model: str
    inputs: list[str]
    token_inputs: list[list[int]] | None = None
    instruction: str | None = None
    dimensions: int | None = None

    @property
    def size(self) -> int:
        """How many embeddings the job asks for."""
        return len(self.inputs) + len(self.token_inputs or ())


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
    # Build on pull: the files are a Hugging Face model (safetensors) that onnxruntime-genai's
    # builder turns into the model folder, with these options (precision, execution_provider,
    # extra_options); None: the files are the model folder.
    build: dict | None = None
    # Glob patterns of repository files not to fetch (the catalog entry's; `.azDownload-*` always).
    ignore: list[str] = []
