"""The embeddings request (OpenAI, plus `instruction`) and its response body."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from api.sampling_protocol import NON_EMPTY_TEXTS, StrictModel
from contracts.events import EmbeddingResult
from contracts.job_store import JobRecord
from contracts.jobs import EmbeddingJob
from contracts.openai_bodies import embeddings_body


class EmbeddingRequest(StrictModel):
    model: str = Field(min_length=1)
    input: str | list[str] = Field(json_schema_extra=NON_EMPTY_TEXTS)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    instruction: str | None = None
    user: str | None = None  # no effect on output

    @field_validator("input")
    @classmethod
    def _inputs(cls, value: str | list[str]) -> str | list[str]:
        inputs = [value] if isinstance(value, str) else value
        if not inputs:
            raise ValueError("at least one input is required")
        if any(not text for text in inputs):
            raise ValueError("inputs must be non-empty strings")
        return value

    @property
    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def to_job(self, job_id: str) -> EmbeddingJob:
        return EmbeddingJob(
            job_id=job_id,
            model=self.model,
            inputs=self.inputs,
            instruction=self.instruction,
            dimensions=self.dimensions,
        )


def job_result_body(record: JobRecord, result: EmbeddingResult) -> dict:
    """A finished embedding job's result, as GET /v1/jobs/{id} shows it."""
    return embeddings_body(record.model, result)
