"""A model directory of configuration files only, for API tests that never reach a worker."""

from __future__ import annotations

import json
from pathlib import Path

CHAT_MODEL = "config-only-chat"
EMBEDDING_MODEL = "config-only-embeddings"
CONTEXT_LENGTH = 256


def write_config_only_models(root: Path) -> Path:
    """One generation and one embedding model: what the API reads of a model, and no weights."""
    (root / CHAT_MODEL).mkdir()
    (root / CHAT_MODEL / "genai_config.json").write_text(json.dumps({"model": {"context_length": CONTEXT_LENGTH}}))
    (root / EMBEDDING_MODEL).mkdir()
    embedding = {"dimensions": 4, "allowed_dimensions": [4], "max_input_tokens": 16, "instruction_format": None}
    (root / EMBEDDING_MODEL / "embedding_config.json").write_text(json.dumps(embedding))
    return root
