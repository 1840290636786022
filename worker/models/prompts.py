"""From a job to prompt tokens: chat template or raw text, fitted to the model's context."""

from __future__ import annotations

import json

from contracts.jobs import GenerationJob
from worker.errors import context_exceeded


def message_text(content: str | list[dict] | None) -> str:
    """A message's content as plain text (a list of text parts is concatenated)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def render_chat(tokenizer, chat_template: str, messages: list[dict]) -> str:
    """Apply the model's chat template, ending with the assistant's turn."""
    plain = [{"role": m["role"], "content": message_text(m.get("content"))} for m in messages]
    return tokenizer.apply_chat_template(
        messages=json.dumps(plain), add_generation_prompt=True, template_str=chat_template
    )


def prompt_texts(tokenizer, chat_template: str, job: GenerationJob) -> list[str]:
    """The text the model sees for each prompt of the job."""
    if job.messages is not None:
        return [render_chat(tokenizer, chat_template, job.messages)]
    if job.use_raw_prompt:
        return list(job.prompts)
    return [render_chat(tokenizer, chat_template, [{"role": "user", "content": p}]) for p in job.prompts]


def fit_prompts(prompts: list[list[int]], job: GenerationJob, context: int) -> tuple[list[list[int]], list[bool], int]:
    """Prompts that fit `context` with room for the output, which were truncated, and max_tokens.

    Without `job.truncate` a prompt that does not fit rejects the job, naming that prompt; with
    it, the prompt keeps its last tokens (the text nearest to where generation continues).
    """
    max_tokens = job.max_tokens or max(1, context - max(len(p) for p in prompts))
    room = context - max_tokens
    fitted, truncated = [], []
    for index, prompt in enumerate(prompts):
        if len(prompt) > room:
            if not job.truncate or room < 1:
                which = "messages" if job.messages is not None else f"prompt[{index}]"
                raise context_exceeded(len(prompt), max_tokens, context, which)
            prompt = prompt[-room:]
        fitted.append(prompt)
        truncated.append(len(prompt) < len(prompts[index]))
    return fitted, truncated, max_tokens
