"""From a job to prompt tokens: chat template or raw text, fitted to the model's context."""

from __future__ import annotations

import json

from jinja2 import TemplateError

from contracts.jobs import GenerationJob
from contracts.tool_markup import SEPARATOR, call_text, custom_call_text
from worker.errors import JobRejected, context_exceeded
from worker.models.chat_tokenizer import ChatTokenizer

# The system text that shows a model without a tool format of its own the functions it may call
# (Hermes style, as contracts.tool_markup writes the calls).
TOOLS_PROMPT = (
    "You may call one or more functions to assist with the user query. "
    "The functions you may call are given within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n"
    "For each function call, return a JSON object with the function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name":<function-name>,"arguments":<args-json-object>}}\n</tool_call>'
)
# How a tool of type "custom" (its input is text) is called, added when one is offered.
CUSTOM_TOOLS_PROMPT = (
    '\nA tool of type "custom" takes text, not JSON: write its name, then its input as it is '
    "(in its format, when it has one) on the lines after it:\n<tool_call>\n"
    '{"name":<tool-name>}\n<input>\n</tool_call>'
)


def _call_text(call: dict) -> str:
    """A past call (OpenAI's chat shape: a function's or a custom tool's) in the model's call markup."""
    if call.get("type") == "custom":
        return custom_call_text(call["custom"]["name"], call["custom"]["input"])
    return call_text(call["function"]["name"], call["function"]["arguments"])


def message_text(content: str | list[dict] | None) -> str:
    """A message's content as plain text (a list of text parts is concatenated)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def plain_messages(messages: list[dict], tools: list[dict] | None = None) -> list[dict]:
    """Messages as {role, content} text, which every chat template takes: an assistant's tool calls
    are written in the model's call markup, a tool's result within <tool_response> tags, and the
    `tools` (OpenAI's chat tools: functions and custom tools) are described in the system message."""
    plain = []
    for message in messages:
        text = message_text(message.get("content"))
        if message.get("tool_calls"):
            calls = [_call_text(c) for c in message["tool_calls"]]
            text = SEPARATOR.join([text, *calls] if text else calls)
        if message["role"] == "tool":
            text = f"<tool_response>\n{text}\n</tool_response>"
        plain.append({"role": message["role"], "content": text})
    if tools:
        described = TOOLS_PROMPT.format(
            tools="\n".join(json.dumps(t, ensure_ascii=False, separators=(",", ":")) for t in tools)
        )
        if any(t.get("type") == "custom" for t in tools):
            described += CUSTOM_TOOLS_PROMPT
        if plain and plain[0]["role"] in ("system", "developer"):
            plain[0] = {"role": plain[0]["role"], "content": plain[0]["content"] + "\n\n" + described}
        else:
            plain.insert(0, {"role": "system", "content": described})
    return plain


def template_variables(reasoning_effort: str | None) -> dict[str, str]:
    """The variables the chat template is given besides the messages: `reasoning_effort` when the
    request names one (left out otherwise, so a template that defaults it, as gpt-oss's does, keeps
    its default; one that never reads it is unchanged either way)."""
    return {} if reasoning_effort is None else {"reasoning_effort": reasoning_effort}


def template_setting(chat_template: str, variables: dict[str, str]) -> str:
    """The template with `variables` set at its top, for onnxruntime-genai's renderer, which takes
    no variables besides the messages (a default the template sets `if ... is not defined` then
    gives way, as it does to a variable jinja2 is given)."""
    if not chat_template or not variables:
        return chat_template
    settings = "".join(f"{{%- set {name} = {json.dumps(value)} -%}}" for name, value in variables.items())
    return settings + chat_template


def render_chat(
    tokenizer,
    chat_template: str,
    messages: list[dict],
    tools: list[dict] | None = None,
    reasoning_effort: str | None = None,
) -> str:
    """Apply the model's chat template, ending with the assistant's turn.

    A template may refuse the conversation (`raise_exception`, e.g. "roles must alternate"): that is
    the client's messages, a 400 naming them. Ladle's renderer raises jinja's TemplateError;
    onnxruntime-genai's tokenizer (the Generator path) a RuntimeError with the template's message.
    """
    plain = plain_messages(messages, tools)
    variables = template_variables(reasoning_effort)
    try:
        if isinstance(tokenizer, ChatTokenizer):
            return tokenizer.render(plain, variables)
        return tokenizer.apply_chat_template(
            messages=json.dumps(plain),
            add_generation_prompt=True,
            template_str=template_setting(chat_template, variables),
        )
    except (TemplateError, RuntimeError) as refused:
        raise template_refused(refused) from None


def template_refused(refused: Exception) -> JobRejected:
    """A 400 naming the messages, with the reason the model's chat template gave."""
    return JobRejected.invalid("messages", f"The model's chat template refused the messages: {refused}")


def prompt_texts(tokenizer, chat_template: str, job: GenerationJob) -> list[str]:
    """The text the model sees for each prompt of the job."""
    if job.messages is not None:
        return [render_chat(tokenizer, chat_template, job.messages, job.tools, job.reasoning_effort)]
    if job.use_raw_prompt:
        return list(job.prompts)
    return [render_chat(tokenizer, chat_template, [{"role": "user", "content": p}]) for p in job.prompts]


def fit_prompts(
    prompts: list[list[int]], job: GenerationJob, context: int, model_context: int | None = None
) -> tuple[list[list[int]], list[bool], int]:
    """Prompts that fit `context` with room for the output, which were truncated, and max_tokens
    (`model_context`: the model's own context, named in the error when the memory plan allows less).

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
                raise context_exceeded(len(prompt), max_tokens, context, which, model_context)
            prompt = prompt[-room:]
        fitted.append(prompt)
        truncated.append(len(prompt) < len(prompts[index]))
    return fitted, truncated, max_tokens
