"""Continuous batching through the real stack: rows join a running batch and leave on their own."""

from __future__ import annotations

import threading

import pytest
import requests

from contracts.jobs import GenerationJob
from contracts.settings import Settings
from tests.helpers import ASYNC, SMOLLM2, TINY, user, wait_for
from tests.stack import start_fleet, stop_fleet
from worker.models.model_registry import ModelRegistry

LONG = {"model": TINY, "messages": user("go on"), "max_tokens": 8000, "temperature": 0}


def test_a_request_joins_a_running_generation_and_leaves_before_it(chat, api_url):
    long_id = chat(LONG, headers=ASYNC).json()["id"]
    wait_for(api_url, long_id, {"running"})
    short = chat({"model": TINY, "messages": user("hi"), "max_tokens": 5})
    assert short.status_code == 200
    # The short request ran beside the long one (a static batch would have made it wait for all
    # 8000 tokens) and finished while the long one went on.
    job = requests.get(f"{api_url}/v1/jobs/{short.headers['X-Request-Id']}", timeout=10).json()
    assert job["batch_size"] == 2
    assert requests.get(f"{api_url}/v1/jobs/{long_id}", timeout=10).json()["status"] == "running"
    requests.delete(f"{api_url}/v1/jobs/{long_id}", timeout=10)
    assert wait_for(api_url, long_id, {"cancelled"})["status"] == "cancelled"


def test_rows_keep_their_own_seed_and_sampling_in_a_shared_batch(chat, api_url):
    seeded = {"model": TINY, "messages": user("tell me"), "max_tokens": 24, "temperature": 0.8, "seed": 1234}
    alone = chat(seeded).json()
    long_id = chat(LONG, headers=ASYNC).json()["id"]
    wait_for(api_url, long_id, {"running"})
    beside = chat(seeded)
    requests.delete(f"{api_url}/v1/jobs/{long_id}", timeout=10)
    job = requests.get(f"{api_url}/v1/jobs/{beside.headers['X-Request-Id']}", timeout=10).json()
    assert job["batch_size"] == 2  # decoded next to a greedy row
    assert beside.json()["choices"][0]["message"]["content"] == alone["choices"][0]["message"]["content"]
    other_seed = chat({**seeded, "seed": 99}).json()["choices"][0]["message"]["content"]
    assert other_seed != alone["choices"][0]["message"]["content"]


def test_more_choices_than_slots_run_as_slots_free_up(chat):
    # n=16 on a worker with 8 slots: rows wait their turn, the request completes whole.
    response = chat({"model": TINY, "messages": user("hi"), "max_tokens": 4, "n": 16, "temperature": 0})
    choices = response.json()["choices"]
    assert [c["index"] for c in choices] == list(range(16))
    assert len({c["message"]["content"] for c in choices}) == 1  # greedy: all the same


@pytest.fixture
def one_worker(tmp_path, model_dir):
    """Starts a stack of its own with one worker configured by the given settings."""
    fleets = []

    def start(**overrides):
        home = tmp_path / f"fleet{len(fleets)}"
        home.mkdir()
        fleets.append(start_fleet(home, model_dir, workers=1, **overrides))
        return fleets[-1]

    yield start
    for fleet in fleets:
        stop_fleet(fleet)


def test_a_prompt_read_in_chunks_gives_the_same_answer(chat, one_worker):
    small_chunks = one_worker(prefill_chunk=32)
    question = "Explain in two sentences why the sky looks blue during the day and red at sunset."
    body = {"model": SMOLLM2, "messages": user(question), "max_tokens": 40, "temperature": 0}
    whole = chat(body).json()["choices"][0]["message"]["content"]
    chunked = requests.post(f"{small_chunks.api_url}/v1/chat/completions", json=body, timeout=120)
    assert chunked.json()["choices"][0]["message"]["content"] == whole
    assert chunked.json()["usage"]["prompt_tokens"] > 32  # read over several steps


def onnxruntime_genai_greedy(folder, question: str, max_tokens: int) -> str:
    """The reference: onnxruntime-genai's own Generator, greedy, in this process; beside a copy of
    the prompt where one row alone takes other kernels (as Ladle decodes a lone row there)."""
    import json

    import numpy as np
    import onnxruntime_genai as og

    from worker.engines.generation_engine import smallest_invariant_batch

    model = og.Model(str(folder))
    genai = json.loads((folder / "genai_config.json").read_text())
    rows = smallest_invariant_batch(model, frozenset({1, 2}), genai)
    tokenizer = og.Tokenizer(model)
    prompt = tokenizer.apply_chat_template(
        messages=json.dumps(user(question)),
        add_generation_prompt=True,
        template_str=(folder / "chat_template.jinja").read_text(),
    )
    tokens = tokenizer.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(batch_size=rows, max_length=len(tokens) + max_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([tokens] * rows, dtype=np.int32) if rows > 1 else tokens)
    produced = []
    while not generator.is_done() and len(produced) < max_tokens:
        generator.generate_next_token()
        token = int(generator.get_next_tokens()[0])
        if token == 2:
            break
        produced.append(token)
    return tokenizer.decode(produced)


def test_a_long_answer_across_cache_growth_equals_onnxruntime_genais(chat, model_dir):
    # The cache starts at 256 positions per row and doubles past them.
    question = "Write a long, detailed story about a dragon who learns to bake bread."
    body = {"model": SMOLLM2, "messages": user(question), "max_tokens": 300, "temperature": 0}
    ours = chat(body).json()
    assert ours["usage"]["prompt_tokens"] + ours["usage"]["completion_tokens"] > 256
    assert ours["choices"][0]["message"]["content"] == onnxruntime_genai_greedy(model_dir / SMOLLM2, question, 300)


def test_prompts_that_start_alike_reuse_the_cached_prefix_exactly(chat, one_worker):
    no_prefix_cache = one_worker(prefix_cache_tokens=0)
    rules = "You are a careful assistant. Answer in one short sentence, name one thing only, use plain words, "
    system = {"role": "system", "content": rules + "never add a list, never explain, and never ask a question back."}
    first = {"model": SMOLLM2, "messages": [system, *user("Name a color.")], "max_tokens": 20, "temperature": 0}
    second = {**first, "messages": [system, *user("Name a fruit.")]}
    chat(first)
    reused = chat(second).json()
    assert reused["usage"]["prompt_tokens_details"]["cached_tokens"] >= 32  # whole blocks of the system turn
    fresh = requests.post(f"{no_prefix_cache.api_url}/v1/chat/completions", json=second, timeout=120).json()
    assert fresh["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert reused["choices"][0]["message"]["content"] == fresh["choices"][0]["message"]["content"]


def test_reading_a_prompt_computes_the_lm_head_for_its_last_position_only(model_dir):
    """The in-memory graph edit: the same last-position logits as the builder's graph, one row of
    them; or, asked for every position (prompt logprobs), all of the builder's rows."""
    import json

    import numpy as np
    import onnxruntime as ort

    from worker.onnx.onnx_decoder import OnnxDecoder

    folder = model_dir / SMOLLM2
    genai = json.loads((folder / "genai_config.json").read_text())
    decoder = OnnxDecoder(folder, genai, slots=1)
    assert decoder.last_position_only
    prompt = list(range(100, 120))
    edited = decoder.prefill(0, prompt, 0)
    assert edited.shape == (genai["model"]["vocab_size"],)
    every = decoder.prefill(0, prompt, 0, every_position=True)
    full = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = genai["model"]["decoder"]
    kv = genai["model"]["decoder"]["num_key_value_heads"], 0, genai["model"]["decoder"]["head_size"]
    feeds = {"input_ids": np.array([prompt], dtype=np.int64), "attention_mask": np.ones((1, 20), dtype=np.int64)}
    for i in range(names["num_hidden_layers"]):
        for key in (names["inputs"]["past_key_names"] % i, names["inputs"]["past_value_names"] % i):
            feeds[key] = np.zeros((1, *kv), dtype=np.float32)
    logits = full.run([names["outputs"]["logits"]], feeds)[0]
    assert logits.shape[1] == 20
    assert np.allclose(edited, logits[0, -1], atol=1e-4)
    assert np.allclose(every, logits[0], atol=1e-4)


def test_a_job_submitted_again_while_it_runs_joins_the_running_one(model_dir):
    """A job's message delivered again while the job runs here (its lease ran out): the second
    submit neither replaces the running rows' tracking (which would leave them never ending) nor
    decodes the job twice; it ends with the running request, and a cancel reaching it stops both."""
    registry = ModelRegistry(Settings(model_dir=model_dir, intra_op_threads=1), "cpu")
    try:
        loaded = registry.get(TINY)
        job = GenerationJob(job_id="again", model=TINY, messages=user("go on"), max_tokens=8000)
        decoding, second_events = threading.Event(), []
        first = loaded.prepare(job, emit=lambda event: decoding.set())
        second = loaded.prepare(job, emit=second_events.append)
        loaded.engine.submit(first)
        assert decoding.wait(60)
        loaded.engine.submit(second)
        second.cancelled.set()  # the cancel listener knows the newest delivery's request
        assert first.finished.wait(60) and second.finished.wait(60)
        assert first.cancelled.is_set() and first.result.choices[0].finish_reason == "cancelled"
        assert second.result is first.result and second.error is None
        assert second_events == [] and loaded.engine.idle
    finally:
        registry.close()


def test_a_job_submitted_again_as_its_rows_end_gets_their_result(model_dir):
    """A job's message delivered again in the step where its last row ended, before its result was
    built: the new submit takes that result instead of decoding the job a second time."""
    registry = ModelRegistry(Settings(model_dir=model_dir, intra_op_threads=1), "cpu")
    try:
        loaded = registry.get(TINY)
        engine = loaded.engine
        short = GenerationJob(job_id="short", model=TINY, messages=user("go on"), max_tokens=12, temperature=0)
        first = loaded.prepare(short, emit=lambda event: None)
        again = loaded.prepare(short, emit=lambda event: None)
        joined = threading.Event()

        def submit_in_the_gap(event) -> None:
            # The long job decodes in a higher slot, so in the step where the short job's last row
            # ended this runs after that row left and before the short job's result is built.
            if not joined.is_set() and "short" not in engine._tracked and not first.finished.is_set():
                joined.set()
                engine.submit(again)

        long_job = GenerationJob(job_id="long", model=TINY, messages=user("go on"), max_tokens=8000, temperature=0)
        long_request = loaded.prepare(long_job, emit=submit_in_the_gap)
        engine.submit(first)
        engine.submit(long_request)
        assert first.finished.wait(60)
        long_request.cancelled.set()
        assert long_request.finished.wait(60)
        assert joined.is_set(), "the long job's tokens never came in the short job's last step"
        assert again.finished.wait(10)
        assert again.result is first.result and again.error is None
        assert engine.idle
    finally:
        registry.close()
