"""The work of embedding and token-count jobs."""

from __future__ import annotations

import numpy as np

from contracts.jobs import DoneEvent, EmbeddingJob, EmbeddingResult, JobStatus, TokenCountJob, TokenCountResult
from worker.errors import JobRejected
from worker.job_runner import Outcome
from worker.model_registry import ModelRegistry
from worker.token_counter import TokenCounter


def count_tokens(counter: TokenCounter, job: TokenCountJob) -> Outcome:
    result = TokenCountResult(token_count=counter.count(job.model, job.messages))
    return DoneEvent(result=result), JobStatus.SUCCEEDED


def with_instruction(text: str, instruction: str | None, config: dict) -> str:
    """The model's instruction format if it has one, else the instruction as a plain prefix."""
    if not instruction:
        return text
    template = config.get("instruction_format")
    return template.format(instruction=instruction, text=text) if template else f"{instruction} {text}"


def embed(registry: ModelRegistry, job: EmbeddingJob) -> Outcome:
    with registry.in_use(job.model):
        return _embed(registry.encoder(job.model), job)


def _embed(encoder, job: EmbeddingJob) -> Outcome:
    if job.dimensions is not None and job.dimensions not in encoder.config["allowed_dimensions"]:
        raise JobRejected.invalid(
            "dimensions", f"The model '{job.model}' allows dimensions {encoder.config['allowed_dimensions']}."
        )
    vectors, tokens, batch_size = encoder.embed(
        [with_instruction(t, job.instruction, encoder.config) for t in job.inputs]
    )
    if job.dimensions is not None and job.dimensions < vectors.shape[1]:
        vectors = vectors[:, : job.dimensions]
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    result = EmbeddingResult(embeddings=vectors.tolist(), prompt_tokens=tokens, batch_size=batch_size)
    return DoneEvent(result=result), JobStatus.SUCCEEDED
