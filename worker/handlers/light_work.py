"""The work of embedding and token-count jobs."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from contracts.events import DoneEvent, EmbeddingResult, ErrorEvent, TokenCountResult
from contracts.jobs import EmbeddingJob, JobStatus, TokenCountJob
from worker.engines.embedding_engine import EmbeddingEngine
from worker.errors import JobRejected, tokens_outside_vocabulary
from worker.models.model_registry import ModelRegistry
from worker.models.token_counter import TokenCounter
from worker.runtime.job_runner import Outcome


def count_tokens(counter: TokenCounter, job: TokenCountJob) -> Outcome:
    result = TokenCountResult(token_count=counter.count(job.model, job.messages, job.tools, job.reasoning_effort))
    return DoneEvent(result=result), JobStatus.SUCCEEDED


def with_instruction(text: str, instruction: str | None, config: dict) -> str:
    """The model's instruction format if it has one, else the instruction as a plain prefix."""
    if not instruction:
        return text
    template = config.get("instruction_format")
    return template.format(instruction=instruction, text=text) if template else f"{instruction} {text}"


def embed(registry: ModelRegistry, jobs: list[EmbeddingJob]) -> list[Outcome]:
    """Embed a bundle of jobs: the texts of all jobs for a model go to its encoder in one call."""
    outcomes: dict[str, Outcome] = {}
    by_model: dict[str, list[EmbeddingJob]] = defaultdict(list)
    for job in jobs:
        by_model[job.model].append(job)
    for model, group in by_model.items():
        try:
            with registry.in_use(model):
                outcomes.update(_embed(registry.encoder(model), group))
        except JobRejected as rejected:  # the model itself is the problem: each job of it fails
            outcomes.update({job.job_id: (ErrorEvent(error=rejected.info), JobStatus.FAILED) for job in group})
    return [outcomes[job.job_id] for job in jobs]


def job_inputs(job: EmbeddingJob, config: dict) -> list[str] | list[list[int]]:
    """What the encoder embeds for the job: its token ids as given, or its texts with the instruction."""
    if job.token_inputs is not None:
        return job.token_inputs
    return [with_instruction(text, job.instruction, config) for text in job.inputs]


def vocabulary_check(job: EmbeddingJob, vocab_size: int) -> JobRejected | None:
    """A 400 for token ids the model's tokenizer does not have (they are another tokenizer's)."""
    for index, ids in enumerate(job.token_inputs or ()):
        outside = next((token for token in ids if token >= vocab_size), None)
        if outside is not None:
            return tokens_outside_vocabulary(job.model, vocab_size, outside, index)
    return None


def _embed(encoder: EmbeddingEngine, jobs: list[EmbeddingJob]) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    allowed = encoder.config["allowed_dimensions"]
    for job in jobs:
        rejected = vocabulary_check(job, encoder.vocab_size)
        if job.dimensions is not None and job.dimensions not in allowed:
            rejected = JobRejected.invalid("dimensions", f"The model '{job.model}' allows dimensions {allowed}.")
        if rejected is not None:
            outcomes[job.job_id] = ErrorEvent(error=rejected.info), JobStatus.FAILED
    running = [job for job in jobs if job.job_id not in outcomes]
    if not running:
        return outcomes
    inputs = [item for job in running for item in job_inputs(job, encoder.config)]
    vectors, token_counts, batch_size = encoder.embed(inputs)
    start = 0
    for job in running:
        end = start + job.size
        mine = vectors[start:end]
        if job.dimensions is not None and job.dimensions < mine.shape[1]:
            mine = mine[:, : job.dimensions]
            mine = mine / np.linalg.norm(mine, axis=1, keepdims=True)
        tokens = int(token_counts[start:end].sum())
        result = EmbeddingResult.of(mine, tokens, batch_size)
        outcomes[job.job_id] = DoneEvent(result=result), JobStatus.SUCCEEDED
        start = end
    return outcomes
