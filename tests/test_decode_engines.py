"""Both decode engines honour one contract and, greedy, give the same text for the same prompt,
free or constrained by a grammar (structured output, tool calls).

The static-batch engine (onnxruntime-genai Generators, the CUDA path) runs here on the CPU beside
Ladle's continuous-batching engine: with the tiny model (plumbing) and with SmolLM2, whose
greedy answer is varied text rather than the tiny random model's repeated token.
"""

from __future__ import annotations

import json
import threading
from functools import partial

import jsonschema
import onnxruntime_genai as og
import pytest

from api.chat.grammars import answer_grammar, tools_grammar
from contracts.jobs import GenerationJob, SamplingParams
from contracts.settings import Settings
from tests.helpers import SMOLLM2, TINY, user
from tests.tool_schemas import BOUNDED, PICK
from worker.engines.decode_engine import DecodeEngine
from worker.engines.generation_engine import StaticBatchEngine, smallest_invariant_batch
from worker.engines.generation_request import GenerationRequest
from worker.engines.token_grammar import GrammarTokenizer
from worker.models.model_registry import ModelRegistry, provider_config

MAX_TOKENS = 24
NOW = {"type": "function", "function": {"name": "now"}}
# Grammar and tool_calls of a GenerationJob, as the API builds them.
CONSTRAINTS = {
    "json_schema": {"grammar": answer_grammar(BOUNDED, True)},
    "required_tool_call": {"grammar": tools_grammar([PICK, NOW], "required", False), "tool_calls": "required"},
}


@pytest.fixture(params=[TINY, SMOLLM2])
def continuous(request, model_dir):
    registry = ModelRegistry(Settings(model_dir=model_dir, intra_op_threads=1), "cpu")
    yield registry.get(request.param)
    registry.close()


def static_engine(model_dir, continuous, batch_window_s: float = 0) -> StaticBatchEngine:
    """A static-batch engine over the same model folder, as a GPU worker would load it (here on CPU)."""
    folder = model_dir / continuous.name
    model = og.Model(provider_config(str(folder), "cpu", intra_op_threads=1))
    eos_ids, pad_id = continuous.engine.eos_ids, continuous.engine.pad_id
    genai = json.loads((folder / "genai_config.json").read_text())
    vocab_size = genai["model"]["vocab_size"]
    grammar_tokens = partial(GrammarTokenizer, folder / "tokenizer.json", eos_ids, vocab_size, 4)
    return StaticBatchEngine(
        model,
        og.Tokenizer(model),
        eos_ids,
        pad_id,
        4,
        batch_window_s,
        "t",
        grammar_tokenizer=grammar_tokens,
        min_rows=smallest_invariant_batch(model, eos_ids | {pad_id}, genai),  # as the registry loads it on a CPU
    )


@pytest.fixture
def static_batch(model_dir, continuous):
    engine = static_engine(model_dir, continuous)
    yield engine
    engine.stop()


def greedy_request(loaded, prompt: str, job_id: str, max_tokens: int = MAX_TOKENS, **fields) -> GenerationRequest:
    greedy = SamplingParams(temperature=0)
    job = GenerationJob(
        job_id=job_id, model=loaded.name, messages=user(prompt), max_tokens=max_tokens, sampling=greedy, **fields
    )
    return loaded.prepare(job, emit=lambda event: None)


def run(engine: DecodeEngine, request: GenerationRequest):
    engine.submit(request)
    return result_of(request)


def result_of(request: GenerationRequest):
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


@pytest.mark.parametrize("constraint", CONSTRAINTS)
def test_static_batch_constrained_greedy_output_equals_the_continuous_engines(continuous, static_batch, constraint):
    fields = CONSTRAINTS[constraint]
    ours = run(continuous.engine, greedy_request(continuous, "Pick a color.", "continuous", 120, **fields))
    theirs = run(static_batch, greedy_request(continuous, "Pick a color.", "static", 120, **fields))
    ours, theirs = ours.choices[0], theirs.choices[0]
    assert (theirs.text, theirs.finish_reason) == (ours.text, ours.finish_reason)
    assert [(c.name, c.arguments) for c in theirs.tool_calls or []] == [
        (c.name, c.arguments) for c in ours.tool_calls or []
    ]
    answer = json.loads(theirs.tool_calls[0].arguments if theirs.tool_calls else theirs.text)
    jsonschema.validate(answer, BOUNDED)


def test_free_rows_of_a_static_batch_are_untouched_by_constrained_neighbours(model_dir, continuous):
    engine = static_engine(model_dir, continuous, batch_window_s=0.5)  # the requests below share one batch
    try:
        alone = run(engine, greedy_request(continuous, "Tell me about bread.", "alone")).choices[0]
        free = greedy_request(continuous, "Tell me about bread.", "free")
        constrained = greedy_request(continuous, "Pick a color.", "constrained", 120, n=2, **CONSTRAINTS["json_schema"])
        for request in (constrained, free):
            engine.submit(request)
        beside, answers = result_of(free), result_of(constrained)
    finally:
        engine.stop()
    assert beside.batch_size == answers.batch_size == 3
    assert (beside.choices[0].text, beside.choices[0].finish_reason) == (alone.text, alone.finish_reason)
    for choice in answers.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.text), BOUNDED)


def test_a_job_submitted_again_to_the_static_batch_joins_the_running_one(model_dir):
    """A second delivery of a running job neither decodes it again (its stream would carry every
    token twice) nor is lost: it ends with the running request, and a cancel reaching it stops both."""
    registry = ModelRegistry(Settings(model_dir=model_dir, intra_op_threads=1), "cpu")
    loaded = registry.get(TINY)
    engine = static_engine(model_dir, loaded)
    try:
        job = GenerationJob(job_id="again", model=TINY, messages=user("go on"), max_tokens=4000)
        decoding, second_events = threading.Event(), []
        first = loaded.prepare(job, emit=lambda event: decoding.set())
        second = loaded.prepare(job, emit=second_events.append)
        engine.submit(first)
        assert decoding.wait(60)
        engine.submit(second)
        second.cancelled.set()
        assert first.finished.wait(60) and second.finished.wait(60)
        assert first.cancelled.is_set() and first.result.choices[0].finish_reason == "cancelled"
        assert second.result is first.result and second.error is None
        assert second_events == [] and engine.idle
    finally:
        engine.stop()
        registry.close()


KNOBS = {
    "greedy with penalties": SamplingParams(
        temperature=0, frequency_penalty=1.0, presence_penalty=0.5, repetition_penalty=1.3, logit_bias={13: 3.0}
    ),
    "seeded with min_p": SamplingParams(temperature=0.9, seed=5, min_p=0.05, top_k=40, frequency_penalty=0.4),
}


@pytest.mark.parametrize("knobs", KNOBS)
def test_static_batch_samples_and_penalises_as_the_continuous_engine(continuous, static_batch, knobs):
    """The Generator only picks greedily: Ladle's own sampler steers each row, so sampling options,
    seeds, penalties and biases give the continuous engine's text."""

    def request(job_id: str) -> GenerationRequest:
        job = GenerationJob(
            job_id=job_id, model=continuous.name, messages=user("Say apple five times."), max_tokens=20
        ).model_copy(update={"sampling": KNOBS[knobs]})
        return continuous.prepare(job, emit=lambda event: None)

    ours = run(continuous.engine, request("continuous")).choices[0]
    theirs = run(static_batch, request("static")).choices[0]
    assert (theirs.text, theirs.finish_reason) == (ours.text, ours.finish_reason)
