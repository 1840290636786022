"""The text completion request (OpenAI, plus Databricks' use_raw_prompt and error_behavior)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from api.sampling_protocol import NON_EMPTY_TEXTS, SamplingFields
from contracts.jobs import GenerationJob

# Most prompts one request may batch (documented in the README).
MAX_PROMPTS = 64
# OpenAI's default output limit for completions.
DEFAULT_MAX_TOKENS = 16
# Most alternatives per token `logprobs` may ask for (OpenAI's limit for completions).
MAX_LOGPROBS = 5


class CompletionRequest(SamplingFields):
    prompt: str | list[str] = Field(json_schema_extra={**NON_EMPTY_TEXTS, "maxItems": MAX_PROMPTS})
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1)
    echo: bool = False
    suffix: str | None = Field(None, json_schema_extra={"maxLength": 0})
    # Logprobs of each token with this many most likely alternatives (with echo, the prompt's too).
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    use_raw_prompt: bool = True
    error_behavior: Literal["error", "truncate"] = "error"

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, prompt: str | list[str]) -> str | list[str]:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not prompts:
            raise ValueError("at least one prompt is required")
        if len(prompts) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts may be sent in one request")
        if any(not p for p in prompts):
            raise ValueError("prompts must be non-empty strings")
        return prompt

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, suffix: str | None) -> str | None:
        if suffix:
            raise ValueError("suffix (fill-in-the-middle) is not supported by the served models")
        return suffix

    @field_validator("use_raw_prompt")
    @classmethod
    def _echoed_logprobs_need_raw_prompts(cls, raw: bool, info: ValidationInfo) -> bool:
        # The prompt's logprobs are of the tokens the model read: with the chat template around the
        # prompt they would not be the echoed text's.
        if not raw and info.data.get("echo") and info.data.get("logprobs") is not None:
            raise ValueError("echo with logprobs needs use_raw_prompt true (the prompt's tokens as sent)")
        return raw

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def to_job(self, job_id: str) -> GenerationJob:
        return GenerationJob(
            job_id=job_id,
            model=self.model,
            prompts=self.prompts,
            use_raw_prompt=self.use_raw_prompt,
            truncate=self.error_behavior == "truncate",
            n=self.n,
            max_tokens=self.max_tokens,
            stop=self.stop,
            sampling=self.sampling(),
            logprobs=self.logprobs,
            prompt_logprobs=self.echo and self.logprobs is not None,
        )
