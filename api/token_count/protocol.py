"""Foundry Local's token count: the request body and the answer's shape."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from api.chat.protocol import ChatMessage, ReasoningEffort, job_messages
from contracts.events import TokenCountResult
from contracts.job_store import JobRecord
from contracts.jobs import TokenCountJob


class TokenCountRequest(BaseModel):
    """Foundry's body, with chat's `reasoning_effort` (the chat template reads it); other chat
    fields are ignored (they do not change the prompt's length)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    reasoning_effort: ReasoningEffort | None = None

    def to_job(self, job_id: str) -> TokenCountJob:
        return TokenCountJob(
            job_id=job_id,
            model=self.model,
            messages=job_messages(self.messages),
            reasoning_effort=self.reasoning_effort,
        )


def count_body(result: TokenCountResult) -> dict:
    return {"tokenCount": result.token_count}


def job_result_body(record: JobRecord, result: TokenCountResult) -> dict:
    """A finished token count job's result, as GET /v1/jobs/{id} shows it."""
    return count_body(result)
