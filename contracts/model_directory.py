"""The model directory: one folder per model, readable without onnxruntime.

A folder is a usable model when it holds `genai_config.json` (a generative model for
onnxruntime-genai) or `embedding_config.json` (an encoder for onnxruntime), and no
`download.tmp` marker (an unfinished download is never listed).
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_FILE = "genai_config.json"
EMBEDDING_CONFIG_FILE = "embedding_config.json"
INCOMPLETE_MARKER = "download.tmp"

GENERATION = "generation"
EMBEDDING = "embedding"

# Longest folder name common filesystems allow (NAME_MAX, in bytes).
MAX_NAME_BYTES = 255


def is_folder_name(name: str) -> bool:
    """Whether `name` can name a model folder: one visible path part of printable characters
    within NAME_MAX, so a client's name never reaches the filesystem as anything else."""
    return (
        bool(name)
        and name.isprintable()  # no NUL, control characters or lone surrogates
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and len(name.encode("utf-8")) <= MAX_NAME_BYTES
    )


class ModelDirectory:
    """Lists models in a folder and reads what the API needs from their configuration."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Parsed configuration files by path, with the modification time they were read at:
        # requests read them on every call, a changed or replaced model is read again.
        self._configs: dict[Path, tuple[int, dict]] = {}

    def path(self, name: str) -> Path:
        return self.root / name

    def exists(self, name: str) -> bool:
        return self.usable_kind(name) is not None

    def usable_kind(self, name: str) -> str | None:
        """The kind of the model `name` if it is usable (see `exists`), else None: one look for both."""
        kind = self.kind(name)
        return kind if kind is not None and not (self.path(name) / INCOMPLETE_MARKER).exists() else None

    def kind(self, name: str) -> str | None:
        """GENERATION or EMBEDDING, by the configuration file the folder holds (None if it cannot be a folder)."""
        if not is_folder_name(name):
            return None
        folder = self.path(name)
        if (folder / CONFIG_FILE).is_file():
            return GENERATION
        if (folder / EMBEDDING_CONFIG_FILE).is_file():
            return EMBEDDING
        return None

    def names(self) -> list[str]:
        return list(self.kinds())

    def kinds(self) -> dict[str, str]:
        """Every usable model's kind, by name in sorted order (one look at each folder)."""
        if not self.root.is_dir():
            return {}
        found = ((p.name, self.usable_kind(p.name)) for p in sorted(self.root.iterdir()))
        return {name: kind for name, kind in found if kind is not None}

    def genai_config(self, name: str) -> dict:
        return self._read_config(self.path(name) / CONFIG_FILE)

    def embedding_config(self, name: str) -> dict:
        return self._read_config(self.path(name) / EMBEDDING_CONFIG_FILE)

    def _read_config(self, path: Path) -> dict:
        modified = path.stat().st_mtime_ns
        cached = self._configs.get(path)
        if cached is None or cached[0] != modified:
            cached = (modified, json.loads(path.read_text()))
            self._configs[path] = cached
        return cached[1]

    def context_length(self, name: str) -> int:
        return int(self.genai_config(name)["model"]["context_length"])

    def created_at(self, name: str) -> int:
        return int(self.path(name).stat().st_mtime)
