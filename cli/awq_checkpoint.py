"""Turns a saved fp32 Hugging Face folder into a pre-quantized AWQ checkpoint (AutoAWQ's GEMM layout).

Published `*-int4-awq-block-128-*` ONNX folders are built by onnxruntime-genai's builder from such
checkpoints: each quantized linear layer holds `qweight`, `qzeros` (int32, eight 4-bit values a
word) and `scales` (fp16) instead of `weight`, and config.json names the method in
`quantization_config`. The weights are quantized here by plain asymmetric min/max per group (no
activation-aware search: the layout, not the accuracy, is what the builder reads).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

BITS = 4
LEVELS = 2**BITS - 1
# AutoAWQ's GEMM packing: the word for columns 8j..8j+7 holds column 8j+AWQ_ORDER[i] in bits 4i..4i+3
# (the builder's loader undoes it: onnxruntime_genai/models/loaders/awq.py reverse_reorder_tensor).
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
PER_WORD = 32 // BITS
# The layers AutoAWQ quantizes in a Llama-style decoder; embeddings, norms and lm_head stay float.
QUANTIZED_SUFFIXES = ("_proj.weight",)


def pack(values: np.ndarray) -> np.ndarray:
    """(rows, cols) of 0..15 -> (rows, cols / 8) int32 words in AutoAWQ's order."""
    rows, cols = values.shape
    grouped = values.reshape(rows, cols // PER_WORD, PER_WORD)[:, :, list(AWQ_ORDER)].astype(np.uint32)
    words = np.zeros((rows, cols // PER_WORD), dtype=np.uint32)
    for position in range(PER_WORD):
        words |= grouped[:, :, position] << np.uint32(BITS * position)
    return words.view(np.int32)


def unpack(words: np.ndarray) -> np.ndarray:
    """The inverse of `pack`: int32 words -> (rows, cols) of 0..15."""
    as_unsigned = words.view(np.uint32)
    positions = np.stack([(as_unsigned >> np.uint32(BITS * i)) & LEVELS for i in range(PER_WORD)], axis=-1)
    columns = np.empty_like(positions)
    columns[:, :, list(AWQ_ORDER)] = positions
    return columns.reshape(words.shape[0], -1)


def quantize(weight: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A linear layer's (out, in) weight -> qweight (in, out/8), qzeros (in/g, out/8), scales (in/g, out)."""
    columns = weight.T.astype(np.float32)  # AWQ stores (in_features, out_features)
    in_features, out_features = columns.shape
    groups = columns.reshape(in_features // group_size, group_size, out_features)
    low, high = groups.min(axis=1), groups.max(axis=1)
    # Scales rounded to fp16 first, as stored, so the zero points and levels fit what is read back.
    scales = (np.maximum(high - low, 1e-6) / LEVELS).astype(np.float16).astype(np.float32)
    zeros = np.clip(np.round(-low / scales), 0, LEVELS)
    levels = np.clip(np.round(groups / scales[:, None, :]) + zeros[:, None, :], 0, LEVELS)
    return (
        pack(levels.reshape(in_features, out_features).astype(np.uint32)),
        pack(zeros.astype(np.uint32)),
        scales.astype(np.float16),
    )


def dequantize(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, group_size: int) -> np.ndarray:
    """The (out, in) weight an AWQ layer stands for: (level - zero) * scale."""
    levels = unpack(qweight).astype(np.float32)
    zeros = np.repeat(unpack(qzeros).astype(np.float32), group_size, axis=0)
    return ((levels - zeros) * np.repeat(scales.astype(np.float32), group_size, axis=0)).T


def convert_to_awq(hf_dir: Path, group_size: int) -> None:
    """Quantize the linear layers of the fp32 checkpoint in `hf_dir` in place, AutoAWQ-style."""
    import torch
    from safetensors.torch import load_file, save_file

    for path in sorted(hf_dir.glob("*.safetensors")):
        tensors = {}
        for name, tensor in load_file(path).items():
            if not (name.startswith("model.layers.") and name.endswith(QUANTIZED_SUFFIXES)):
                tensors[name] = tensor
                continue
            layer = name.removesuffix(".weight")
            qweight, qzeros, scales = quantize(tensor.float().numpy(), group_size)
            tensors[f"{layer}.qweight"] = torch.from_numpy(np.ascontiguousarray(qweight))
            tensors[f"{layer}.qzeros"] = torch.from_numpy(np.ascontiguousarray(qzeros))
            tensors[f"{layer}.scales"] = torch.from_numpy(np.ascontiguousarray(scales))
        save_file(tensors, path, metadata={"format": "pt"})
    config_path = hf_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["quantization_config"] = {
        "quant_method": "awq",
        "bits": BITS,
        "group_size": group_size,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": None,
    }
    config_path.write_text(json.dumps(config, indent=2))
