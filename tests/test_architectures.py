"""The architecture suite: Ladle's continuous-batching engine gives, token for token, the greedy
output of onnxruntime-genai's own Generator on a tiny random model of every architecture the
builder supports (cli/model_build.py TINY_ARCHITECTURES), each read alone and beside other rows.

The models are built once into the test model cache. Their options are those of published
folders: int4 RTN block 32 accuracy level 4, block 128, AWQ block 128 (a pre-quantized AWQ
checkpoint the builder reads, as `cpu-int4-awq-block-128-acc-level-4` folders are made), a graph
with a `position_ids` input, a model file named only by genai_config.json; Phi-3 with LongRoPE and
a sliding window, Llama with llama3 rope scaling, Qwen3 with q/k norms, Gemma, gpt-oss with
attention sinks, experts, YaRN and a sliding window over a full cache (its stop tokens and harmony
chat template checked too); sliding windows over the builder's default windowed caches, read and
decoded past the window: gpt-oss's, Gemma 2's and Gemma 3's (a sliding layer beside a full one),
Mistral with every layer sliding, and Mistral whose window is in genai_config only.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime_genai as og
import pytest
import requests

from cli.awq_checkpoint import dequantize, quantize
from cli.harmony import HARMONY_STOP
from cli.model_build import AWQ_CHECKPOINTS, TINY_ARCHITECTURES, build_model, tiny_model
from contracts.jobs import GenerationJob, SamplingParams
from contracts.settings import Settings
from tests.conftest import MODEL_CACHE
from tests.helpers import TINY, assert_error, user
from tests.stack import WorkerProcess, start_fleet, stop_fleet
from worker.engines.generation_engine import smallest_invariant_batch
from worker.engines.generation_request import GenerationRequest
from worker.models.chat_tokenizer import chat_template
from worker.models.model_registry import ModelRegistry, provider_config
from worker.models.prompts import plain_messages

MAX_TOKENS = 40
# A short prompt, one of a few blocks, and one past the tiny Phi-3's LongRoPE switch (64
# positions) and the 48-token sliding windows (a windowed cache holds 64 positions): decoding
# beside it, the others cross them.
PROMPT_LENGTHS = (7, 30, 80)


# The hybrid model runs on onnxruntime-genai's Generator (tests/test_generator_fallback.py).
GENERATOR_SERVED = {"tiny-random-lfm2-hybrid"}
DRIVEN = sorted(set(TINY_ARCHITECTURES) - GENERATOR_SERVED)
GPT_OSS = "tiny-random-gpt-oss-full-cache"
AWQ = "tiny-random-llama-awq-block-128"


@pytest.fixture(scope="module", params=[TINY, *DRIVEN])
def architecture(request):
    build_model(request.param, MODEL_CACHE)
    registry = ModelRegistry(Settings(model_dir=MODEL_CACHE, intra_op_threads=1), "cpu")
    loaded = registry.get(request.param)
    yield loaded
    registry.close()


def prompts(vocab_size: int) -> list[list[int]]:
    rng = np.random.default_rng(16)
    return [rng.integers(3, vocab_size, size=n).tolist() for n in PROMPT_LENGTHS]


def generator_text(folder, loaded, tokens: list[int]) -> tuple[str, int]:
    """onnxruntime-genai's Generator, greedy: the text of its tokens (decoded as the engine does)."""
    produced = generator_tokens(folder, loaded.engine.eos_ids, tokens)
    stream = loaded.tokenizer.create_stream()
    return "".join(stream.decode(t) for t in produced), len(produced)


def generator_tokens(folder, eos_ids, tokens: list[int]) -> list[int]:
    """Greedy tokens of onnxruntime-genai's Generator, beside a copy of the prompt where one row alone
    takes other kernels (as Ladle decodes a lone row there)."""
    model = og.Model(provider_config(str(folder), "cpu", intra_op_threads=1))
    genai = json.loads((folder / "genai_config.json").read_text())
    rows = smallest_invariant_batch(model, frozenset(eos_ids), genai)
    # A windowed cache holds at least its window (onnxruntime refuses a shorter one).
    window = genai["model"]["decoder"].get("sliding_window", {}).get("window_size", 0)
    params = og.GeneratorParams(model)
    params.set_search_options(batch_size=rows, max_length=max(len(tokens) + MAX_TOKENS, window), do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray([tokens] * rows if rows > 1 else tokens, dtype=np.int32))
    produced = []
    while not generator.is_done() and len(produced) < MAX_TOKENS:
        generator.generate_next_token()
        token = int(generator.get_next_tokens()[0])
        if token in eos_ids:
            break
        produced.append(token)
    return produced


def greedy(loaded, tokens: list[int], job_id: str) -> GenerationRequest:
    request = GenerationRequest(
        job_id=job_id,
        prompts=[tokens],
        n=1,
        max_tokens=MAX_TOKENS,
        stop=[],
        sampling=SamplingParams(temperature=0),
        emit=lambda event: None,
    )
    loaded.engine.submit(request)
    return request


def answer(request: GenerationRequest) -> tuple[str, int]:
    assert request.finished.wait(timeout=120), "the engine never finished the request"
    assert request.error is None, request.error
    return request.result.choices[0].text, request.result.usage.completion_tokens


def test_greedy_tokens_equal_onnxruntime_genais_alone_and_beside_other_rows(architecture):
    folder = MODEL_CACHE / architecture.name
    genai = json.loads((folder / "genai_config.json").read_text())
    expected = [generator_text(folder, architecture, p) for p in prompts(genai["model"]["vocab_size"])]
    assert all(count > 0 for _, count in expected)

    alone = [answer(greedy(architecture, p, f"alone-{i}")) for i, p in enumerate(prompts(genai["model"]["vocab_size"]))]
    assert alone == expected

    together = [greedy(architecture, p, f"together-{i}") for i, p in enumerate(prompts(genai["model"]["vocab_size"]))]
    assert [answer(r) for r in together] == expected


def test_a_chat_template_in_tokenizer_config_gives_the_prompt_the_jinja_file_gives(tmp_path):
    build_model(TINY, MODEL_CACHE)
    source = MODEL_CACHE / TINY
    moved = tmp_path / TINY
    moved.mkdir()
    for path in source.iterdir():
        if path.name not in ("chat_template.jinja", "tokenizer_config.json"):
            shutil.copy(path, moved / path.name)
    config = json.loads((source / "tokenizer_config.json").read_text())
    config["chat_template"] = (source / "chat_template.jinja").read_text()
    (moved / "tokenizer_config.json").write_text(json.dumps(config))

    job = GenerationJob(job_id="t", model=TINY, messages=user("Which template?"), max_tokens=4)
    prompts = []
    for folder in (MODEL_CACHE, tmp_path):
        registry = ModelRegistry(Settings(model_dir=folder, intra_op_threads=1), "cpu")
        prompts.append(registry.get(TINY).prepare(job, emit=lambda event: None).prompts)
        registry.close()
    assert prompts[0] == prompts[1] and len(prompts[0][0]) > 4


def test_every_stop_token_listed_in_genai_config_ends_an_answer(tmp_path):
    """genai_config's eos_token_id is a list (Phi-3: three ids); any of them stops a row."""
    build_model(TINY, MODEL_CACHE)
    job = GenerationJob(
        job_id="s", model=TINY, messages=user("Stop here."), max_tokens=6, sampling=SamplingParams(temperature=0)
    )
    registry = ModelRegistry(Settings(model_dir=MODEL_CACHE, intra_op_threads=1), "cpu")
    prompt = registry.get(TINY).prepare(job, emit=lambda event: None).prompts[0]
    registry.close()
    first = generator_tokens(MODEL_CACHE / TINY, {2}, prompt)[0]

    copy = tmp_path / TINY
    shutil.copytree(MODEL_CACHE / TINY, copy)
    config = json.loads((copy / "genai_config.json").read_text())
    config["model"]["eos_token_id"] = [2, int(first)]
    (copy / "genai_config.json").write_text(json.dumps(config))
    registry = ModelRegistry(Settings(model_dir=tmp_path, intra_op_threads=1), "cpu")
    request = submit(registry.get(TINY), job)
    answer(request)
    registry.close()
    assert request.result.choices[0].finish_reason == "stop"
    assert request.result.usage.completion_tokens <= 1


def submit(loaded, job: GenerationJob) -> GenerationRequest:
    request = loaded.prepare(job, emit=lambda event: None)
    loaded.engine.submit(request)
    return request


def test_gpt_oss_stops_on_its_three_stop_tokens_listed_in_genai_config():
    """<|return|>, <|endoftext|> and <|call|>: genai_config's list, and the engine's stop ids."""
    build_model(GPT_OSS, MODEL_CACHE)
    genai = json.loads((MODEL_CACHE / GPT_OSS / "genai_config.json").read_text())
    assert genai["model"]["eos_token_id"] == list(HARMONY_STOP)
    registry = ModelRegistry(Settings(model_dir=MODEL_CACHE, intra_op_threads=1), "cpu")
    assert registry.get(GPT_OSS).engine.eos_ids == frozenset(HARMONY_STOP)
    registry.close()


def test_gpt_oss_harmony_template_gives_the_prompt_onnxruntime_genai_gives():
    """gpt-oss's template calls strftime_now and writes a tool's result with tojson (in order,
    `<` and `&` as they are); Ladle's renderer gives onnxruntime-genai's prompt, token for token."""
    build_model(GPT_OSS, MODEL_CACHE)
    folder = MODEL_CACHE / GPT_OSS
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "tool", "tool_call_id": "c1", "content": '{"sky": "<blue> & clear", "at": "noon"}'},
        {"role": "user", "content": "Again?"},
    ]
    job = GenerationJob(job_id="h", model=GPT_OSS, messages=messages, max_tokens=4)
    registry = ModelRegistry(Settings(model_dir=MODEL_CACHE, intra_op_threads=1), "cpu")
    loaded = registry.get(GPT_OSS)
    prompt = loaded.prepare(job, emit=lambda event: None).prompts[0]
    registry.close()

    tokenizer = og.Tokenizer(og.Model(provider_config(str(folder), "cpu", intra_op_threads=1)))
    text = tokenizer.apply_chat_template(
        json.dumps(plain_messages(messages)), template_str=chat_template(folder), add_generation_prompt=True
    )
    assert list(prompt) == tokenizer.encode(text).tolist()
    assert "<|start|>developer<|message|># Instructions\n\nAnswer briefly.<|end|>" in text
    assert '"<tool_response>\\n{\\"sky\\": \\"<blue> & clear\\", \\"at\\": \\"noon\\"}' in text
    assert text.endswith("<|start|>user<|message|>Again?<|end|><|start|>assistant")
    start = tokenizer.encode("<|start|>").tolist()
    assert len(start) == 1 and prompt[0] == start[0]  # harmony's markers are single special tokens


# The graph features the suite's docstring claims of its builds, read from the built files.


def decoder_graph(name: str) -> tuple[dict, object]:
    """The model's genai_config.json and its decoder graph (structure only, no weights)."""
    build_model(name, MODEL_CACHE)
    folder = MODEL_CACHE / name
    genai = json.loads((folder / "genai_config.json").read_text())
    model = onnx.load(str(folder / genai["model"]["decoder"]["filename"]), load_external_data=False)
    return genai, model.graph


def test_the_mistral_build_feeds_position_ids_as_a_graph_input():
    genai, graph = decoder_graph("tiny-random-mistral-position-ids")
    assert "position_ids" in {node.name for node in graph.input}
    assert genai["model"]["decoder"]["inputs"]["position_ids"] == "position_ids"


def test_the_phi3_model_file_is_the_one_genai_config_names_not_model_onnx():
    genai, graph = decoder_graph("tiny-random-phi3-longrope")
    filename = genai["model"]["decoder"]["filename"]
    assert filename == "phi3-tiny-cpu-int4-rtn-block-32-acc-level-4.onnx"
    folder = MODEL_CACHE / "tiny-random-phi3-longrope"
    assert not (folder / "model.onnx").exists()  # nothing to fall back on: the name must be read
    assert "input_ids" in {node.name for node in graph.input}


def matmul_nbits(graph) -> dict[str, dict]:
    """Each MatMulNBits node's attributes, by node name."""
    return {
        node.name: {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        for node in graph.node
        if node.op_type == "MatMulNBits"
    }


def test_the_awq_build_keeps_the_checkpoints_int4_layers_as_matmul_nbits_of_block_128():
    _, graph = decoder_graph(AWQ)
    nodes = matmul_nbits(graph)
    projections = ("attn/qkv_proj", "attn/o_proj", "mlp/gate_proj", "mlp/up_proj", "mlp/down_proj")
    expected = {f"/model/layers.{layer}/{p}/MatMulNBits" for layer in range(2) for p in projections}
    assert expected <= set(nodes)
    assert "MatMul" not in {node.op_type for node in graph.node}  # no projection left in float
    assert all(n["bits"] == 4 and n["block_size"] == 128 and n["accuracy_level"] == 4 for n in nodes.values())


def nbits_weight(initializers: dict, prefix: str) -> np.ndarray:
    """A MatMulNBits node's (out, in) weight, dequantized from its blocks, scales and zero points."""
    blocks = onnx.numpy_helper.to_array(initializers[f"{prefix}.qweight"])
    out_features, block_count, _ = blocks.shape
    levels = np.stack([blocks & 15, blocks >> 4], axis=-1).reshape(out_features, -1).astype(np.float32)
    zero_bytes = onnx.numpy_helper.to_array(initializers[f"{prefix}.qzeros"]).reshape(out_features, -1)
    zeros = np.stack([zero_bytes & 15, zero_bytes >> 4], axis=-1).reshape(out_features, -1)[:, :block_count]
    scales = onnx.numpy_helper.to_array(initializers[f"{prefix}.scales"]).reshape(out_features, block_count)
    block = levels.shape[1] // block_count
    return (levels - np.repeat(zeros, block, axis=1)) * np.repeat(scales, block, axis=1)


def test_the_awq_builds_weights_are_the_checkpoints_int4_weights_read_in_autoawq_order():
    """The builder unpacks AutoAWQ's interleaved words itself: what it wrote must be, value for
    value, the int4 weights the checkpoint packed (a wrong column order would scramble them)."""
    build_model(AWQ, MODEL_CACHE)
    folder = MODEL_CACHE / AWQ
    model = onnx.load(str(folder / "model.onnx"))
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    group = AWQ_CHECKPOINTS[AWQ]
    weights = {name: tensor.detach().numpy() for name, tensor in tiny_model(AWQ).state_dict().items()}
    for layer in range(2):
        source = f"model.layers.{layer}"
        expected = {
            "attn.qkv_proj": np.concatenate([weights[f"{source}.self_attn.{p}_proj.weight"] for p in "qkv"]),
            "attn.o_proj": weights[f"{source}.self_attn.o_proj.weight"],
            "mlp.gate_proj": weights[f"{source}.mlp.gate_proj.weight"],
            "mlp.up_proj": weights[f"{source}.mlp.up_proj.weight"],
            "mlp.down_proj": weights[f"{source}.mlp.down_proj.weight"],
        }
        for projection, weight in expected.items():
            checkpoint = dequantize(*quantize(weight, group), group)
            built = nbits_weight(initializers, f"model.layers.{layer}.{projection}.MatMulNBits")
            np.testing.assert_array_equal(built, checkpoint)


# The same two config readings over HTTP: model folders copied from the tiny model with their
# configs edited, served by a fleet of their own (a private Redis, one worker, an API).
STOP_IDS = "tiny-stop-ids"
TEMPLATE_IN_CONFIG = "tiny-template-in-tokenizer-config"
STRICT_ROLES = "tiny-strict-roles"
STOP_PROMPT = "Stop here."
# Mistral's and Llama 2's templates refuse a conversation whose roles do not alternate.
ALTERNATING_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if (message.role == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}"
)


@pytest.fixture(scope="module")
def config_fleet(tmp_path_factory):
    build_model(TINY, MODEL_CACHE)
    models = tmp_path_factory.mktemp("config-models")
    shutil.copytree(MODEL_CACHE / TINY, models / TINY)
    job = GenerationJob(job_id="s", model=TINY, messages=user(STOP_PROMPT), max_tokens=6)
    registry = ModelRegistry(Settings(model_dir=MODEL_CACHE, intra_op_threads=1), "cpu")
    prompt = registry.get(TINY).prepare(job, emit=lambda event: None).prompts[0]
    registry.close()
    first = generator_tokens(MODEL_CACHE / TINY, {2}, prompt)[0]  # the greedy answer's first token

    shutil.copytree(MODEL_CACHE / TINY, models / STOP_IDS)
    config = json.loads((models / STOP_IDS / "genai_config.json").read_text())
    config["model"]["eos_token_id"] = [2, int(first)]
    (models / STOP_IDS / "genai_config.json").write_text(json.dumps(config))

    moved = models / TEMPLATE_IN_CONFIG
    shutil.copytree(MODEL_CACHE / TINY, moved)
    tokenizer_config = json.loads((moved / "tokenizer_config.json").read_text())
    tokenizer_config["chat_template"] = (moved / "chat_template.jinja").read_text()
    (moved / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (moved / "chat_template.jinja").unlink()

    shutil.copytree(MODEL_CACHE / TINY, models / STRICT_ROLES)
    (models / STRICT_ROLES / "chat_template.jinja").write_text(ALTERNATING_TEMPLATE)

    logs = tmp_path_factory.mktemp("config-fleet")
    fleet = start_fleet(logs, models, workers=1)
    fleet.workers.append(WorkerProcess(fleet.settings, logs / "light-worker.log", lane="light"))  # token counts
    yield fleet
    stop_fleet(fleet)


def http_chat(fleet, model: str, text: str) -> dict:
    body = {"model": model, "messages": user(text), "max_tokens": 6, "temperature": 0}
    response = requests.post(f"{fleet.api_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_over_http_a_second_stop_id_in_genai_config_ends_the_answer(config_fleet):
    unedited = http_chat(config_fleet, TINY, STOP_PROMPT)
    assert unedited["choices"][0]["finish_reason"] == "length"
    assert unedited["usage"]["completion_tokens"] == 6
    stopped = http_chat(config_fleet, STOP_IDS, STOP_PROMPT)
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert stopped["usage"]["completion_tokens"] <= 1
    assert stopped["choices"][0]["message"]["content"] == ""  # the stop token's text is not sent


def test_over_http_a_template_only_in_tokenizer_config_templates_the_chat(config_fleet):
    from_jinja = http_chat(config_fleet, TINY, "Which template?")
    from_config = http_chat(config_fleet, TEMPLATE_IN_CONFIG, "Which template?")
    assert "chat_template" not in json.loads((MODEL_CACHE / TINY / "tokenizer_config.json").read_text())
    assert from_config["usage"]["prompt_tokens"] == from_jinja["usage"]["prompt_tokens"] > 4
    assert from_config["choices"][0]["message"]["content"] == from_jinja["choices"][0]["message"]["content"]


def test_over_http_a_chat_template_that_refuses_the_messages_is_a_400_naming_them(config_fleet):
    alternating = [*user("Hi"), {"role": "assistant", "content": "Hello."}, *user("Again?")]
    assert http_chat(config_fleet, STRICT_ROLES, "Hi")["usage"]["prompt_tokens"] > 0
    body = {"model": STRICT_ROLES, "messages": alternating, "max_tokens": 2}
    assert requests.post(f"{config_fleet.api_url}/v1/chat/completions", json=body, timeout=120).status_code == 200
    twice = {"model": STRICT_ROLES, "messages": [*user("Hi"), *user("Hi again")], "max_tokens": 2}
    for stream in (False, True):
        url = f"{config_fleet.api_url}/v1/chat/completions"
        response = requests.post(url, json=twice | {"stream": stream}, timeout=120)
        error = assert_error(response, 400, param="messages")
        assert "must alternate" in error["message"]
    url = f"{config_fleet.api_url}/v1/chat/completions/tokenizer/encode/count"
    error = assert_error(requests.post(url, json=twice, timeout=120), 400, param="messages")
    assert "must alternate" in error["message"]
