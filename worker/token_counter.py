"""Counts a chat prompt's tokens with the model's tokenizer alone (no weights loaded).

The chat template is rendered with jinja2 the way transformers does, and tokenizer.json is
applied with the `tokenizers` library; tests check the counts equal onnxruntime-genai's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from contracts.model_directory import GENERATION, ModelDirectory
from worker.errors import model_not_found
from worker.prompts import message_text


@dataclass(frozen=True)
class _ChatTokenizer:
    tokenizer: Tokenizer
    template: object


class TokenCounter:
    """Tokenizers per model, loaded on first use and kept."""

    def __init__(self, directory: ModelDirectory) -> None:
        self.directory = directory
        self._environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._loaded: dict[str, _ChatTokenizer] = {}
        self._lock = threading.Lock()

    def count(self, model: str, messages: list[dict]) -> int:
        chat = self._get(model)
        plain = [{"role": m["role"], "content": message_text(m.get("content"))} for m in messages]
        prompt = chat.template.render(messages=plain, add_generation_prompt=True, bos_token="", eos_token="")
        return len(chat.tokenizer.encode(prompt, add_special_tokens=False).ids)

    def _get(self, model: str) -> _ChatTokenizer:
        with self._lock:
            if model not in self._loaded:
                if not self.directory.exists(model) or self.directory.kind(model) != GENERATION:
                    raise model_not_found(model)
                folder = self.directory.path(model)
                self._loaded[model] = _ChatTokenizer(
                    Tokenizer.from_file(str(folder / "tokenizer.json")),
                    self._environment.from_string((folder / "chat_template.jinja").read_text()),
                )
            return self._loaded[model]
