"""A request's answer is the same alone or in a crowd: greedy and seeded, beside 1, 7 or 31 other
rows of other lengths, arriving together or while others decode, on both engines' CPU paths.

SmolLM2 is the model: its logits are close enough between candidates that a change of kernel
(onnxruntime's MatMulNBits runs a one-row kernel of its own on AVX2 CPUs) flips tokens within a
few dozen steps, which is what these tests would catch.
"""

from __future__ import annotations

import json
import threading

import onnxruntime_genai as og
import pytest

from contracts.jobs import GenerationJob, SamplingParams
from contracts.settings import Settings
from tests.helpers import SMOLLM2, user
from worker.engines.generation_engine import StaticBatchEngine, smallest_invariant_batch
from worker.engines.generation_request import GenerationRequest
from worker.models.model_registry import ModelRegistry, provider_config

MAX_TOKENS = 24
CROWD = 32
# The eight answers compared, of prompts from 9 to about 40 tokens once templated.
TARGETS = [
    "Name three colors.",
    "What is 2 + 2?",
    "Write one sentence about the sea.",
    "List four animals that live in cold places, then say which is the largest of them.",
    "Why is the sky blue?",
    "Give me a word that rhymes with cat.",
    "Describe a kitchen in the morning, with its smells, its sounds and the light on the table.",
    "What do bees make?",
]
# Neighbours of other lengths, so the crowd's rows differ in prompt and in position.
FILLERS = [f"Tell me fact number {i} about {'rivers ' * (i % 5 + 1)}and mountains." for i in range(CROWD)]
MODES = {
    "greedy": SamplingParams(temperature=0),
    "seeded": SamplingParams(temperature=0.8, seed=11),
}


@pytest.fixture(scope="module")
def smollm2(model_dir):
    registry = ModelRegistry(Settings(model_dir=model_dir, max_batch_rows=CROWD), "cpu")
    yield registry.get(SMOLLM2)
    registry.close()


def request(loaded, prompt: str, job_id: str, sampling: SamplingParams, emit=None) -> GenerationRequest:
    job = GenerationJob(
        job_id=job_id, model=loaded.name, messages=user(prompt), max_tokens=MAX_TOKENS, sampling=sampling
    )
    return loaded.prepare(job, emit=emit or (lambda event: None))


def answer(request: GenerationRequest) -> str:
    assert request.finished.wait(timeout=300), "the engine never finished the request"
    assert request.error is None, request.error
    return request.result.choices[0].text


def alone(engine, loaded, mode: str) -> list[str]:
    answers = []
    for i, prompt in enumerate(TARGETS):
        single = request(loaded, prompt, f"{engine.name}-{mode}-alone-{i}", MODES[mode])
        engine.submit(single)
        answers.append(answer(single))
    return answers


def in_crowd(engine, loaded, mode: str, size: int, order: str) -> tuple[list[str], int]:
    """The targets' answers among `size` rows (targets first, then fillers), submitted together in
    `order`, or half of them while the other half already decodes ("staggered")."""
    sampling, name = MODES[mode], f"{engine.name}-{mode}-{size}-{order}"
    if size < len(TARGETS):  # each target with `size - 1` fillers
        answers, largest = [], 0
        for i, target in enumerate(TARGETS):
            group = [request(loaded, target, f"{name}-{i}", sampling)]
            group += [request(loaded, f, f"{name}-{i}-f{j}", sampling) for j, f in enumerate(FILLERS[: size - 1])]
            for r in reversed(group) if order == "reversed" else group:
                engine.submit(r)
            answers.append([answer(r) for r in group][0])
            largest = max(largest, group[0].result.batch_size)
        return answers, largest
    prompts = (TARGETS + FILLERS)[:size]
    requests = [request(loaded, p, f"{name}-{i}", sampling) for i, p in enumerate(prompts)]
    if order == "reversed":
        for r in reversed(requests):
            engine.submit(r)
    elif order == "staggered":
        decoding = threading.Event()
        first_half, second_half = requests[1::2], requests[0::2]
        first_half[0].emit = lambda event: decoding.set()
        for r in first_half:
            engine.submit(r)
        assert decoding.wait(120), "the first half never started decoding"
        for r in second_half:
            engine.submit(r)
    else:
        for r in requests:
            engine.submit(r)
    answers = [answer(r) for r in requests][: len(TARGETS)]
    return answers, max(r.result.batch_size for r in requests[: len(TARGETS)])


@pytest.fixture(scope="module")
def answers_alone(smollm2):
    return {mode: alone(smollm2.engine, smollm2, mode) for mode in MODES}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("size", "order"), [(2, "together"), (8, "reversed"), (8, "staggered"), (CROWD, "together")])
def test_continuous_engine_answers_in_a_crowd_as_alone(smollm2, answers_alone, mode, size, order):
    together, batch_size = in_crowd(smollm2.engine, smollm2, mode, size, order)
    assert batch_size >= min(size, 2)  # they really were decoded together
    assert together == answers_alone[mode]


@pytest.fixture(scope="module")
def static_batch(model_dir, smollm2):
    """The static-batch engine (onnxruntime-genai's Generator) over the same folder, on the CPU."""
    folder = model_dir / SMOLLM2
    model = og.Model(provider_config(str(folder), "cpu"))
    eos_ids, pad_id = smollm2.engine.eos_ids, smollm2.engine.pad_id
    min_rows = smallest_invariant_batch(
        model, eos_ids | {pad_id}, json.loads((folder / "genai_config.json").read_text())
    )
    engine = StaticBatchEngine(model, og.Tokenizer(model), eos_ids, pad_id, 8, 0.3, "static", min_rows=min_rows)
    yield engine
    engine.stop()


@pytest.mark.parametrize("mode", MODES)
def test_static_batch_engine_answers_in_a_crowd_as_alone(static_batch, smollm2, mode):
    single = alone(static_batch, smollm2, mode)
    together, batch_size = in_crowd(static_batch, smollm2, mode, 8, "together")
    assert batch_size == 8
    assert together == single


def test_a_lone_row_decodes_at_the_width_its_crowd_would(smollm2, model_dir):
    """The engine's floor on a decode step's width is what the probe found on this CPU: 1 where
    a one-row step rounds as wider ones do, else 2; LADLE_BATCH_INVARIANT=0 lets a row run alone."""
    decoder = smollm2.engine.decoder
    assert smollm2.engine.min_width == decoder.smallest_invariant_width() in (1, 2)
    registry = ModelRegistry(Settings(model_dir=model_dir, batch_invariant=False), "cpu")
    try:
        assert registry.get(SMOLLM2).engine.min_width == 1
    finally:
        registry.close()
