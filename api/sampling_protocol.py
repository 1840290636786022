"""Request fields shared by chat and text completions, with the checks they share."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contracts.jobs import SamplingParams

# Seeds are 64-bit signed integers (as vLLM accepts); each engine maps them to its own range.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


# JSON-schema keywords stating what the field validators below accept, so the published document
# (GET /openapi.json) says it too; the validators stay the checks, with their own messages.
# A keyword applies only to values of its type (minLength to strings, maxItems to arrays...).
NON_EMPTY_TEXTS = {"minLength": 1, "minItems": 1, "items": {"type": "string", "minLength": 1}}
ONLY_ZERO = {"minimum": 0, "maximum": 0}


class StrictModel(BaseModel):
    """Unknown fields and loosely typed values are 400s, never silently accepted."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(StrictModel):
    include_usage: bool = False


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
    # The engine has no presence/frequency penalty: only 0 (no effect) is accepted.
    presence_penalty: float | None = Field(None, ge=-2, le=2, json_schema_extra=ONLY_ZERO)
    frequency_penalty: float | None = Field(None, ge=-2, le=2, json_schema_extra=ONLY_ZERO)
    user: str | None = None  # no effect on output
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

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float | None) -> float | None:
        if value:
            raise ValueError("this server's engine does not support this penalty; only 0 is accepted")
        return value

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
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, seed=seed)
