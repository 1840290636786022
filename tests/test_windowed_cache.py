"""Sliding-window layers over windowed key/value caches (onnxruntime-genai's builder's default) on
the continuous engine: a ring per row for each sliding layer, full caches for the others, rows
reading their prompts beside decoding ones, and the prefix cache over rings. (Answers against
onnxruntime-genai's Generator, alone and beside other rows: tests/test_architectures.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli.model_build import build_model
from contracts.jobs import GenerationJob, SamplingParams
from contracts.settings import Settings
from tests.conftest import MODEL_CACHE
from worker.engines.continuous_engine import PREFILL_BLOCK
from worker.engines.generation_request import GenerationRequest
from worker.models.model_registry import ModelRegistry
from worker.onnx.kv_cache import Ring
from worker.onnx.onnx_decoder import OnnxDecoder

GPT_OSS = "tiny-random-gpt-oss"  # layer 0 sliding, layer 1 full
SLIDING = "tiny-random-mistral-sliding-layers"  # every layer sliding
GEMMA2 = "tiny-random-gemma2-windowed"  # layer 0 sliding, layer 1 full
GEMMA3 = "tiny-random-gemma3-windowed"  # layer 0 sliding, layer 1 full
CONFIG_ONLY = "tiny-random-mistral-windowed"  # a window in genai_config, none in the graph
# Their 48-token window, plus the 16 positions onnxruntime-genai keeps beyond it on CPU.
RING = Ring(window=48, capacity=64)


def decoder(name: str, slots: int) -> OnnxDecoder:
    build_model(name, MODEL_CACHE)
    folder = MODEL_CACHE / name
    return OnnxDecoder(folder, json.loads((folder / "genai_config.json").read_text()), slots, intra_op_threads=1)


def tokens(count: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(3, 40000, size=count).tolist()


def test_sliding_layers_keep_rings_of_onnxruntime_genais_capacity_and_the_others_full_caches():
    rings = {name: decoder(name, 1).cache.rings for name in (GPT_OSS, SLIDING, GEMMA2, GEMMA3, CONFIG_ONLY)}
    first_layer = {f"past_key_values.0.{kv}": RING for kv in ("key", "value")}
    assert rings[GPT_OSS] == rings[GEMMA2] == rings[GEMMA3] == first_layer
    assert rings[SLIDING] == {f"past_key_values.{i}.{kv}": RING for i in (0, 1) for kv in ("key", "value")}
    assert rings[CONFIG_ONLY] == {}  # its graph attends to every position: full caches


@pytest.mark.parametrize("name", [GPT_OSS, SLIDING])
def test_a_row_reading_its_prompt_between_decoding_rows_reads_it_as_alone(name):
    """Decode steps feed a row still reading its prompt a placeholder at its length; one step past a
    full ring would move it (at 64 positions here), so the ring is put back as it was."""
    model = decoder(name, 2)
    prompt, other = tokens(3 * PREFILL_BLOCK, 1), tokens(5, 2)
    alone = [model.prefill(0, prompt[start : start + PREFILL_BLOCK], start) for start in range(0, 96, PREFILL_BLOCK)]
    model.reset_cache()

    model.prefill(1, other, 0)
    beside = []
    for step, start in enumerate(range(0, 96, PREFILL_BLOCK)):
        beside.append(model.prefill(0, prompt[start : start + PREFILL_BLOCK], start))
        lengths = np.array([start + PREFILL_BLOCK, len(other) + step])
        model.decode(np.array([0, other[-1]]), lengths, placeholders=[0])
    assert all(np.array_equal(a, b) for a, b in zip(alone, beside, strict=True))


@pytest.fixture(scope="module")
def gpt_oss_engines():
    """gpt-oss on two registries, reading one block of a prompt per turn: with a prefix cache and without."""
    build_model(GPT_OSS, MODEL_CACHE)
    registries = [
        ModelRegistry(
            Settings(model_dir=MODEL_CACHE, intra_op_threads=1, prefill_chunk=PREFILL_BLOCK, prefix_cache_tokens=size),
            "cpu",
        )
        for size in (2048, 0)
    ]
    yield [registry.get(GPT_OSS) for registry in registries]
    for registry in registries:
        registry.close()


def submit(loaded, prompt: list[int], job_id: str, max_tokens: int = 24) -> GenerationRequest:
    request = GenerationRequest(
        job_id=job_id,
        prompts=[prompt],
        n=1,
        max_tokens=max_tokens,
        stop=[],
        sampling=SamplingParams(temperature=0),
        emit=lambda event: None,
    )
    loaded.engine.submit(request)
    return request


def outcome(request: GenerationRequest) -> tuple[str, int]:
    """The greedy text, and how many prompt positions were reused."""
    assert request.finished.wait(timeout=120), "the engine never finished the request"
    assert request.error is None, request.error
    return request.result.choices[0].text, request.result.usage.prompt_tokens_details.cached_tokens


def greedy_answer(loaded, prompt: list[int], job_id: str) -> tuple[str, int]:
    return outcome(submit(loaded, prompt, job_id))


def test_a_long_prompt_read_in_a_slot_below_a_decoding_row_answers_as_alone(gpt_oss_engines):
    """A row in slot 1 decodes while a new prompt reads block by block in slot 0 (freed just before):
    each of its blocks meets a decode step that feeds slot 0 a placeholder."""
    idle, engine = gpt_oss_engines
    brief = submit(engine, tokens(5, 8), "brief", max_tokens=1)  # slot 0
    running = submit(engine, tokens(6, 9), "running", max_tokens=400)  # slot 1
    outcome(brief)
    long = tokens(130, 10)
    beside = submit(engine, long, "beside")  # slot 0, while `running` decodes
    assert outcome(beside) == greedy_answer(idle, long, "alone")
    assert running.finished.wait(timeout=120) and running.result.usage.completion_tokens == 400


def test_prompts_starting_alike_reuse_their_prefix_exactly_whatever_the_ring_dropped(gpt_oss_engines):
    """The runs a remembered prompt's ring took in are kept as it is read: any prefix of it is
    restored, exactly as reading it gives, even one whose positions its ring has dropped."""
    cached, uncached = gpt_oss_engines
    short, long = tokens(40, 3), tokens(130, 4)  # within the ring's capacity, and twice past it
    followers = {
        "short": ([*short[:36], *tokens(10, 5)], 32),
        "long": ([*long[:129], *tokens(5, 6)], 128),
        "earlier": ([*long[:70], *tokens(5, 7)], 64),  # positions 0..63: a ring of 130 holds 68..
    }
    assert RING.first(64) < 64 <= RING.first(130)
    for name, prompt in (("short", short), ("long", long)):
        assert greedy_answer(cached, prompt, f"first-{name}") == (greedy_answer(uncached, prompt, name)[0], 0)
    for name, (prompt, reused) in followers.items():
        assert greedy_answer(cached, prompt, f"follower-{name}") == (greedy_answer(uncached, prompt, name)[0], reused)


def test_the_generator_answers_a_request_shorter_than_the_window():
    """A GPU worker runs windowed models on onnxruntime-genai's Generator, which refuses a cache
    shorter than the window: a raw prompt of a few tokens and 4 more still gets its 4 (max_length floored)."""
    import onnxruntime_genai as og

    from worker.engines.generation_engine import StaticBatchEngine, generator_min_length
    from worker.models.model_registry import provider_config

    build_model(GPT_OSS, MODEL_CACHE)
    folder = MODEL_CACHE / GPT_OSS
    genai = json.loads((folder / "genai_config.json").read_text())
    assert generator_min_length(genai) == 48 + 8
    registry = ModelRegistry(Settings(model_dir=MODEL_CACHE, intra_op_threads=1), "cpu")
    loaded = registry.get(GPT_OSS)
    model = og.Model(provider_config(str(folder), "cpu", intra_op_threads=1))
    eos_ids, pad_id = loaded.engine.eos_ids, loaded.engine.pad_id
    engine = StaticBatchEngine(
        model, og.Tokenizer(model), eos_ids, pad_id, 2, 0, "t", min_length=generator_min_length(genai)
    )
    try:
        job = GenerationJob(
            job_id="short", model=GPT_OSS, prompts=["hi there"], max_tokens=4, sampling=SamplingParams(temperature=0)
        )
        ours = loaded.prepare(job, emit=lambda event: None)
        loaded.engine.submit(ours)
        theirs = loaded.prepare(job, emit=lambda event: None)
        engine.submit(theirs)
        for request in (ours, theirs):
            assert request.finished.wait(timeout=120) and request.error is None, request.error
        assert theirs.result.usage.completion_tokens == 4
        assert theirs.result.choices[0].text == ours.result.choices[0].text
    finally:
        engine.stop()
        registry.close()


def test_the_memory_plan_counts_a_ring_per_row_for_each_windowed_layer():
    registry = ModelRegistry(Settings(model_dir=MODEL_CACHE, intra_op_threads=1, max_batch_rows=4), "cpu")
    try:
        registry.get(GPT_OSS)
        [status] = [m for m in registry.describe() if m["name"] == GPT_OSS]
    finally:
        registry.close()
    plan = status["memory_plan"]
    # Layer 1 grows with the row; layer 0 holds its 64-position ring (2 x 4 kv heads x 16 x 4 bytes each).
    assert plan["bytes_per_token"] == 256 == plan["ring_bytes_per_token"] and plan["slots"] == 4
    assert plan["kv_cache_mb"] == round(4 * (plan["kv_tokens"] * 256 + 64 * 256) / 2**20, 1)
