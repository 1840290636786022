"""The builder's command line for a catalog entry built on pull."""

from pathlib import Path

from worker.hub.onnx_build import builder_command


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
