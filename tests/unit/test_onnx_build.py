"""The builder's command line for a catalog entry built on pull."""

import tempfile
from pathlib import Path

from worker.hub.onnx_build import StageReader, builder_command


def test_options_become_the_builders_arguments():
    command = builder_command(
        Path("/w"),
        Path("/o"),
        Path("/c"),
        {"precision": "int4", "execution_provider": "cuda", "extra_options": ["block_size=128"]},
    )
    assert command[1:3] == ["-m", "onnxruntime_genai.models.builder"]
    assert command[3:] == [
        "-i",
        "/w",
        "-o",
        "/o",
        "-c",
        "/c",
        "-p",
        "int4",
        "-e",
        "cuda",
        "--extra_options",
        "block_size=128",
    ]


def test_int4_on_cpu_without_extra_options_by_default():
    command = builder_command(Path("/w"), Path("/o"), Path("/c"), {})
    assert command[-4:] == ["-p", "int4", "-e", "cpu"] and "--extra_options" not in command


BUILDER_OUTPUT = (
    b"GroupQueryAttention (GQA) is used in this model.\n"
    b"\rLoading weights:   0%|          | 0/26\rLoading weights: 100%|##########| 26/26\n"
    b"Reading embedding layer\nReading layer 0\nReading layer 1\nReading final norm\nReading LM head\n"
    b"Saving ONNX model in /m/.downloads/x.built\n"
    b"2026-01-01 onnxruntime.quantization [INFO] - start to quantize /model/layers.0/attn/qkv_proj/MatMul ...\n"
    b"\rSaving model.layers.0.input_layernorm.weight (f32, [128]):   3%|\rSaving lm_head.MatMul.weight_Q4: 100%|\n"
    b"Saving GenAI config in /m/.downloads/x.built\nSaving processing files in /m/.downloads/x.built for GenAI\n"
)


def test_the_builders_stage_lines_are_read_as_its_output_grows():
    seen: list[str] = []
    with tempfile.TemporaryFile() as output:
        reader = StageReader(output, seen.append)
        for start in range(0, len(BUILDER_OUTPUT), 37):  # lines split across reads
            output.write(BUILDER_OUTPUT[start : start + 37])
            output.flush()
            reader.read()
    assert seen == [
        "Reading embedding layer",
        "Reading layer 0",
        "Reading layer 1",
        "Reading final norm",
        "Reading LM head",
        "Saving ONNX model",
        "Saving GenAI config",
        "Saving processing files",
    ]
