"""Both decode engines honour one contract and, greedy, give the same text for the same prompt.

The static-batch engine (onnxruntime-genai Generators, the CUDA path) runs here on the CPU beside
Ladle's continuous-batching engine: with the tiny model (plumbing) and with SmolLM2, whose
greedy answer is varied text rather than the tiny random model's repeated token.
"""

from __future__ import annotations

import onnxruntime_genai as og
import pytest

from contracts.jobs import GenerationJob, SamplingParams
from contracts.settings import Settings
from tests.helpers import SMOLLM2, TINY, user
from worker.engines.decode_engine import DecodeEngine
from worker.engines.generation_engine import StaticBatchEngine
from worker.engines.generation_request import GenerationRequest
from worker.models.model_registry import ModelRegistry, provider_config

MAX_TOKENS = 24


@pytest.fixture(params=[TINY, SMOLLM2])
def continuous(request, model_dir):
    registry = ModelRegistry(Settings(model_dir=model_dir, intra_op_threads=1), "cpu")
    yield registry.get(request.param)
    registry.close()


@pytest.fixture
def static_batch(model_dir, continuous):
    model = og.Model(provider_config(str(model_dir / continuous.name), "cpu", intra_op_threads=1))
    eos_ids, pad_id = continuous.engine.eos_ids, continuous.engine.pad_id
    engine = StaticBatchEngine(
        model, og.Tokenizer(model), eos_ids, pad_id, max_batch_rows=4, batch_window_s=0, name="t"
    )
    yield engine
    engine.stop()


def greedy_request(loaded, prompt: str, job_id: str) -> GenerationRequest:
    greedy = SamplingParams(temperature=0)
    job = GenerationJob(job_id=job_id, model=loaded.name, messages=user(prompt), max_tokens=MAX_TOKENS, sampling=greedy)
    return loaded.prepare(job, emit=lambda event: None)


def run(engine: DecodeEngine, request: GenerationRequest):
    engine.submit(request)
    assert request.finished.wait(timeout=120), "the engine never finished the request"
    assert request.error is None, request.error
    return request.result


def test_static_batch_greedy_output_equals_the_continuous_engines(continuous, static_batch):
    ours = run(continuous.engine, greedy_request(continuous, "Tell me about bread.", "continuous"))
    theirs = run(static_batch, greedy_request(continuous, "Tell me about bread.", "static"))
    assert ours.choices[0].text == theirs.choices[0].text
    assert ours.choices[0].finish_reason == theirs.choices[0].finish_reason
    assert ours.usage.completion_tokens == theirs.usage.completion_tokens > 0


def test_both_engines_are_idle_after_their_work(continuous, static_batch):
    run(continuous.engine, greedy_request(continuous, "hi", "a"))
    run(static_batch, greedy_request(continuous, "hi", "b"))
    assert continuous.engine.idle and static_batch.idle
