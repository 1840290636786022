"""Build on pull: onnxruntime-genai's model builder turns a downloaded Hugging Face model
(safetensors) into an ONNX model folder, for catalog entries with no published ONNX folder."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

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


def build_onnx(
    source: Path,
    out: Path,
    options: dict,
    is_cancelled: Callable[[], bool],
    on_stage: Callable[[str], None] = lambda stage: None,
) -> None:
    """Run the builder from `source` into `out`, passing each of its stage lines to `on_stage`;
    raises BuildCancelled or BuildFailed."""
    # HF_HUB_OFFLINE is huggingface_hub's own switch: the builder reads the local weights only.
    # Unbuffered, so its stage lines reach the output file as it prints them.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with (
        tempfile.TemporaryDirectory(prefix=".build-cache-", dir=out.parent) as cache,
        tempfile.TemporaryFile() as output,
    ):
        process = subprocess.Popen(
            builder_command(source, out, Path(cache), options), env=env, stdout=output, stderr=subprocess.STDOUT
        )
        stages = StageReader(output, on_stage)
        try:
            while True:
                try:
                    code = process.wait(timeout=POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    stages.read()
                    if is_cancelled():
                        raise BuildCancelled() from None
        finally:
            if process.poll() is None:  # cancelled, or the stage callback failed: stop the builder
                process.kill()
                process.wait()
        stages.read()
        if code != 0 or not (out / "genai_config.json").exists():
            output.seek(0)
            tail = output.read().decode(errors="replace").strip().splitlines()[-3:]
            log.warning("model build failed", extra={"source": str(source), "code": code})
            raise BuildFailed(f"the builder exited with {code}: {' | '.join(tail)}")


# The builder's prints that name a step of its work (onnxruntime_genai/models/builder.py); the
# rest of its output is quantizer logging and tqdm bars. What follows the step (a path) is left out.
_STAGE = re.compile(
    r"^(?P<stage>Reading (?:embedding layer|layer \d+|final norm|LM head)"
    r"|Saving (?:ONNX model|GenAI config|processing files))\b"
)
_READ_BYTES = 1 << 20


class StageReader:
    """Reads the builder's output file as it grows and passes on each stage line once."""

    def __init__(self, output: IO[bytes], on_stage: Callable[[str], None]) -> None:
        self.output = output
        self.on_stage = on_stage
        self.offset = 0
        self.pending = b""  # a line not yet ended

    def read(self) -> None:
        # pread: the builder writes through the same open file, whose offset must not move.
        while chunk := os.pread(self.output.fileno(), _READ_BYTES, self.offset):
            self.offset += len(chunk)
            *lines, self.pending = (self.pending + chunk).replace(b"\r", b"\n").split(b"\n")
            for line in lines:
                match = _STAGE.match(line.decode(errors="replace").strip())
                if match:
                    self.on_stage(match["stage"])
