"""The documentation site builds with `mkdocs build --strict` (a broken link, a missing page or a
page left out of the nav fails), its route reference lists every route the app serves, and the
README stays a front page (at most 200 lines)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.openapi_document import OPERATIONS

ROOT = Path(__file__).resolve().parent.parent


def test_site_builds_strictly_with_every_route_listed(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)]
    built = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    routes = (tmp_path / "api" / "routes" / "index.html").read_text()
    for _method, path, _operation in OPERATIONS:
        assert f"<code>{path}</code>" in routes, path


def test_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
