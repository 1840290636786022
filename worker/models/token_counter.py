"""Counts a chat prompt's tokens with the model's tokenizer alone (no weights loaded)."""

from __future__ import annotations

import threading

from jinja2 import TemplateError

from contracts.model_directory import GENERATION, ModelDirectory
from worker.errors import model_not_found
from worker.models.chat_tokenizer import ChatTokenizer
from worker.models.prompts import plain_messages, template_refused, template_variables


class TokenCounter:
    """Tokenizers per model, loaded on first use and kept."""

    def __init__(self, directory: ModelDirectory) -> None:
        self.directory = directory
        self._loaded: dict[str, ChatTokenizer] = {}
        self._lock = threading.Lock()

    def count(
        self, model: str, messages: list[dict], tools: list[dict] | None = None, reasoning_effort: str | None = None
    ) -> int:
        """The tokens of the prompt a chat job with these messages, tools and effort renders."""
        chat = self._get(model)
        try:
            text = chat.render(plain_messages(messages, tools), template_variables(reasoning_effort))
        except TemplateError as refused:
            raise template_refused(refused) from None
        return len(chat.encode(text))

    def _get(self, model: str) -> ChatTokenizer:
        with self._lock:
            if model not in self._loaded:
                if not self.directory.exists(model) or self.directory.kind(model) != GENERATION:
                    raise model_not_found(model)
                self._loaded[model] = ChatTokenizer(self.directory.path(model))
            return self._loaded[model]
