"""The package as a user installs it: `pip install .` without extras gives a working `ladle`.

A fresh virtualenv (no system site-packages, so a missing declaration cannot hide), the project
installed from this checkout with pip (its wheel cache and configured indexes make it quick).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import venv

import pytest

from tests.stack import ROOT

IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
failed = []
for package in ("api", "worker", "cli", "contracts"):
    for module in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        try:
            importlib.import_module(module.name)
        except Exception as error:
            failed.append(f"{module.name}: {error!r}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh virtualenv holding the package installed without extras; yields its bin folder."""
    home = tmp_path_factory.mktemp("fresh-venv")
    venv.create(home / "venv", with_pip=True)
    bin_dir = home / "venv" / "bin"
    subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "--quiet", str(checkout_copy(home / "source"))],
        env=outside_the_checkout(),
        check=True,
        timeout=900,
    )
    return bin_dir


def checkout_copy(target):
    """The checkout's files as git sees them (tracked, or new and not ignored): a build folder left
    by an earlier install would otherwise put modules that no longer exist into the wheel."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def outside_the_checkout() -> dict[str, str]:
    """This environment without the checkout on the import path (only the installed copy counts)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def run(command: list, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=outside_the_checkout(), capture_output=True, text=True, timeout=300)


@pytest.mark.install
def test_ladle_models_pull_runs_without_extras(installed, tmp_path):
    result = run([installed / "ladle", "models", "pull", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage: ladle models pull" in result.stdout


@pytest.mark.install
def test_every_module_imports_from_the_installed_package(installed, tmp_path):
    result = run([installed / "python", "-c", IMPORT_EVERY_MODULE], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.install
def test_the_installed_package_is_the_one_imported(installed, tmp_path):
    result = run([installed / "python", "-c", "import api; print(api.__file__)"], tmp_path)
    assert str(installed.parent) in result.stdout, result.stdout + result.stderr
