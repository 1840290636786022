"""Request fields shared by chat and text completions, with the checks they share."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contracts.jobs import SamplingParams

# Seeds are 64-bit signed integers (as vLLM accepts); each engine maps them to its own range.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


# JSON-schema keywords stating what the field validators below accept, so the published document
# (GET /openapi.json) says it too; the validators stay the checks, with their own messages.
# A keyword applies only to values of its type (minLength to strings, maxItems to arrays...).
NON_EMPTY_TEXTS = {"minLength": 1, "minItems": 1, "items": {"type": "string", "minLength": 1}}
# OpenAI's limits on logit_bias: at most 300 tokens, each biased by -100..100.
MAX_LOGIT_BIAS = 300
LOGIT_BIAS_SCHEMA = {
    "maxProperties": MAX_LOGIT_BIAS,
    "propertyNames": {"pattern": "^[0-9]+$"},
    "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
}


class StrictModel(BaseModel):
    """Unknown fields and loosely typed values are 400s, never silently accepted."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(StrictModel):
    include_usage: bool = False


class PredictedOutput(StrictModel):
    """OpenAI's predicted output (a speed-up for edits); accepted and not used."""

    type: Literal["content"]
    content: str | list[dict]


class SamplingFields(StrictModel):
    model: str = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=16)
    stop: list[str] = Field([], json_schema_extra={**NON_EMPTY_TEXTS, "minItems": 0, "maxItems": 4})
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Penalties and biases, per row (worker/engines/token_penalties.py): OpenAI's two, vLLM's and
    # transformers' repetition_penalty, min_p, and logit_bias (token id of the model's tokenizer -> bias).
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0)
    min_p: float | None = Field(None, ge=0, le=1)
    logit_bias: dict[str, float] | None = Field(None, json_schema_extra=LOGIT_BIAS_SCHEMA)
    # Accepted with no effect on output (as OpenAI accepts them for every model): the answer
    # echoes service_tier "default"; the prefix cache needs no key; text is the only modality.
    user: str | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    modalities: list[Literal["text"]] | None = None
    prediction: PredictedOutput | None = None
    # Foundry: the execution provider to run on (cpu, cuda, ...); routes the job to such a worker.
    ep: str | None = None

    @field_validator("stop", mode="before", json_schema_input_type=str | list[str] | None)
    @classmethod
    def _stop_as_list(cls, stop: object) -> object:
        return [stop] if isinstance(stop, str) else ([] if stop is None else stop)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stops: list[str]) -> list[str]:
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return stops

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _bias_values_may_be_integers(cls, bias: object) -> object:
        """JSON has one number type: {"50256": -100} is a float bias of -100 (strict mode would refuse it)."""
        if isinstance(bias, dict):
            return {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in bias.items()}
        return bias

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        if bias is None:
            return None
        if len(bias) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} tokens may be biased, not {len(bias)}")
        for token, value in bias.items():
            if not token.isascii() or not token.isdigit():
                raise ValueError(f"keys must be token ids (non-negative integers), not '{token[:40]}'")
            if not -100 <= value <= 100:
                raise ValueError(f"the bias of token {token} must be between -100 and 100, not {value}")
        return bias

    @model_validator(mode="after")
    def _stream_options_need_stream(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling(self, seed: int | None = None) -> SamplingParams:
        seed = self.seed if seed is None else seed
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=seed,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            repetition_penalty=self.repetition_penalty,
            min_p=self.min_p,
            logit_bias={int(token): value for token, value in self.logit_bias.items()} if self.logit_bias else None,
        )
