"""Build on pull: onnxruntime-genai's model builder turns a downloaded Hugging Face model
(safetensors) into an ONNX model folder, for catalog entries with no published ONNX folder."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

POLL_S = 0.5


class BuildCancelled(Exception):
    """The pull was cancelled while the builder ran (the builder was stopped)."""


class BuildFailed(Exception):
    """The builder failed; the message ends with its last output lines."""


def builder_command(source: Path, out: Path, cache: Path, options: dict) -> list[str]:
    """The builder's command line for `options` (precision, execution_provider, extra_options)."""
    command = [
        sys.executable,
        "-m",
        "onnxruntime_genai.models.builder",
        "-i",
        str(source),
        "-o",
        str(out),
        "-c",
        str(cache),
        "-p",
        str(options.get("precision", "int4")),
        "-e",
        str(options.get("execution_provider", "cpu")),
    ]
    extra = [str(option) for option in options.get("extra_options", [])]
    return [*command, "--extra_options", *extra] if extra else command


def build_onnx(source: Path, out: Path, options: dict, is_cancelled: Callable[[], bool]) -> None:
    """Run the builder from `source` into `out`; raises BuildCancelled or BuildFailed."""
    # HF_HUB_OFFLINE is huggingface_hub's own switch: the builder reads the local weights only.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with (
        tempfile.TemporaryDirectory(prefix=".build-cache-", dir=out.parent) as cache,
        tempfile.TemporaryFile() as output,
    ):
        process = subprocess.Popen(
            builder_command(source, out, Path(cache), options), env=env, stdout=output, stderr=subprocess.STDOUT
        )
        while True:
            try:
                code = process.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                if is_cancelled():
                    process.kill()
                    process.wait()
                    raise BuildCancelled() from None
        if code != 0 or not (out / "genai_config.json").exists():
            output.seek(0)
            tail = output.read().decode(errors="replace").strip().splitlines()[-3:]
            log.warning("model build failed", extra={"source": str(source), "code": code})
            raise BuildFailed(f"the builder exited with {code}: {' | '.join(tail)}")
