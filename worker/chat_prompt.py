"""Turns OpenAI chat messages into the prompt text the model was trained on."""

from __future__ import annotations

import json


def message_text(content: str | list[dict] | None) -> str:
    """A message's content as plain text (a list of text parts is concatenated)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def render_prompt(tokenizer, chat_template: str, messages: list[dict]) -> str:
    """Apply the model's chat template, ending with the assistant's turn."""
    plain = [{"role": m["role"], "content": message_text(m.get("content"))} for m in messages]
    return tokenizer.apply_chat_template(
        messages=json.dumps(plain), add_generation_prompt=True, template_str=chat_template
    )
