"""The embeddings request (OpenAI, plus `instruction`) and its response body.

`input` is text (a string or strings) or, as OpenAI defines it, token ids: an array of integers, or
an array of such arrays, read as ids of the embedding model's own tokenizer (the worker checks them
against its vocabulary; see worker/engines/embedding_engine.py for how they are embedded).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from api.sampling_protocol import StrictModel
from contracts.events import EmbeddingResult
from contracts.job_store import JobRecord
from contracts.jobs import EmbeddingJob
from contracts.openai_bodies import embeddings_body

Text = Annotated[str, Field(min_length=1)]
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
INPUT_SHAPES = "a string, an array of strings, an array of token ids (integers), or an array of such arrays"


def _is_token_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_token_ids(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_token_id(v) for v in value)


class EmbeddingRequest(StrictModel):
    model: str = Field(min_length=1)
    input: Text | Annotated[list[Text], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    instruction: str | None = None
    user: str | None = None  # no effect on output

    @field_validator("input", mode="before")
    @classmethod
    def _inputs(cls, value: object) -> object:
        """One message per mistake, naming `input` (the union's own errors would list every shape)."""
        if isinstance(value, str) and not value:
            raise ValueError("inputs must be non-empty strings")
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValueError(f"input must be {INPUT_SHAPES}")
        if not value:
            raise ValueError("at least one input is required")
        if all(isinstance(v, str) for v in value):
            if any(not text for text in value):
                raise ValueError("inputs must be non-empty strings")
        elif not (_is_token_ids(value) or all(_is_token_ids(v) for v in value)):
            if all(isinstance(v, list) for v in value) and any(not v for v in value):
                raise ValueError("token id arrays must not be empty")
            raise ValueError(f"input must be {INPUT_SHAPES}; token ids are non-negative integers, and shapes never mix")
        return value

    @field_validator("instruction")
    @classmethod
    def _instruction_needs_text(cls, value: str | None, info: ValidationInfo) -> str | None:
        # The instruction is text put before each input's text: token ids have no text to join.
        if value and isinstance(info.data.get("input"), list) and not isinstance(info.data["input"][0], str):
            raise ValueError("instruction applies to text inputs, not to token ids")
        return value

    @property
    def token_ids(self) -> bool:
        """Whether the inputs are token ids rather than text."""
        return isinstance(self.input, list) and isinstance(self.input[0], (int, list))

    @property
    def inputs(self) -> list[str] | list[list[int]]:
        """The texts, or the token id arrays: one per embedding."""
        if isinstance(self.input, str) or (self.input and isinstance(self.input[0], int)):
            return [self.input]
        return list(self.input)

    def to_job(self, job_id: str) -> EmbeddingJob:
        return EmbeddingJob(
            job_id=job_id,
            model=self.model,
            inputs=[] if self.token_ids else self.inputs,
            token_inputs=self.inputs if self.token_ids else None,
            instruction=self.instruction,
            dimensions=self.dimensions,
        )


def job_result_body(record: JobRecord, result: EmbeddingResult) -> dict:
    """A finished embedding job's result, as GET /v1/jobs/{id} shows it."""
    return embeddings_body(record.model, result)
