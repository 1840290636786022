"""The `ladle models` commands on a model directory of the test's own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.helpers import TINY
from tests.stack import ROOT


def ladle(*args: str, model_dir) -> subprocess.CompletedProcess:
    env = {**os.environ, "LADLE_MODEL_DIR": str(model_dir), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, capture_output=True, text=True)


def test_list_then_rm(tmp_path, model_dir):
    shutil.copytree(model_dir / TINY, tmp_path / TINY)
    (tmp_path / "half-downloaded").mkdir()
    (tmp_path / "half-downloaded" / "genai_config.json").write_text("{}")
    (tmp_path / "half-downloaded" / "download.tmp").write_text("")
    assert ladle("models", "list", model_dir=tmp_path).stdout.split() == [TINY]
    assert ladle("models", "rm", TINY, model_dir=tmp_path).returncode == 0
    assert not (tmp_path / TINY).exists()
    missing = ladle("models", "rm", TINY, model_dir=tmp_path)
    assert missing.returncode == 1 and "no model" in missing.stderr


def test_build_refuses_an_unknown_model(tmp_path):
    result = ladle("models", "build", "gpt-9", model_dir=tmp_path)
    assert result.returncode == 2 and "buildable" in result.stderr
