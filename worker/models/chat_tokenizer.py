"""A model's tokenizer without its weights: tokenizer.json via `tokenizers`, the chat template via jinja2.

It offers the calls Ladle makes on onnxruntime-genai's tokenizer (apply the chat template,
encode, a streaming decoder), so the CPU engine and token counting need no onnxruntime-genai
model; tests check its prompts and counts equal onnxruntime-genai's.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import numpy as np
from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

from worker.models.token_bytes import token_bytes


def _raise_exception(message: str) -> NoReturn:
    raise TemplateError(message)


def _tojson(
    value: object,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """JSON as transformers and onnxruntime-genai write it in templates: keys in order, no HTML
    escapes (jinja's own sorts keys and writes < as \\u003c: a tool's result would read otherwise)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


_ENVIRONMENT = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
# The functions chat templates call besides jinja's own (gpt-oss's writes the current date), as
# transformers and onnxruntime-genai give them.
_ENVIRONMENT.globals.update(strftime_now=lambda fmt: datetime.now().strftime(fmt), raise_exception=_raise_exception)
_ENVIRONMENT.filters["tojson"] = _tojson


class TextStream:
    """Turns tokens into text as they come; multi-byte characters appear once complete."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._stream = DecodeStream(skip_special_tokens=True)

    def decode(self, token: int) -> str:
        return self._stream.step(self._tokenizer, token) or ""


def chat_template(folder: Path) -> str:
    """A model folder's chat template: `chat_template.jinja`, else `chat_template` in
    tokenizer_config.json (a string, or named templates of which the "default" one); "" if none."""
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text()
    config = folder / "tokenizer_config.json"
    template = json.loads(config.read_text()).get("chat_template") if config.exists() else None
    if isinstance(template, list):
        named = {t.get("name"): t.get("template", "") for t in template if isinstance(t, dict)}
        template = named.get("default", next(iter(named.values()), ""))
    return template if isinstance(template, str) else ""


class ChatTokenizer:
    def __init__(self, folder: Path) -> None:
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._template = _ENVIRONMENT.from_string(chat_template(folder))

    def render(self, messages: list[dict], variables: dict[str, str] | None = None) -> str:
        """The prompt text for plain {role, content} messages, ending with the assistant's turn
        (`variables`: more the template reads, such as gpt-oss's `reasoning_effort`)."""
        return self._template.render(
            messages=messages, add_generation_prompt=True, bos_token="", eos_token="", **(variables or {})
        )

    def apply_chat_template(self, messages: str, add_generation_prompt: bool = True, template_str: str = "") -> str:
        """onnxruntime-genai's signature (messages as JSON); the model's own template is used."""
        return self.render(json.loads(messages))

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def create_stream(self) -> TextStream:
        return TextStream(self.tokenizer)

    def token_bytes(self, size: int) -> list[bytes]:
        """The bytes each of tokens 0..size-1 stands for (for logprobs)."""
        return token_bytes(self.tokenizer, size)
