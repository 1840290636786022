"""OpenAI response bodies of finished jobs: the API's synchronous answers and the lines of batch
output files are built by these same functions (so a batch line holds what a request would get)."""

from __future__ import annotations

from contracts.events import Choice, EmbeddingResult, GenerationResult, TokenLogprob
from contracts.legacy_logprobs import choice_logprobs


def public_finish_reason(reason: str) -> str:
    return "stop" if reason == "cancelled" else reason


def chat_completion_id(job_id: str) -> str:
    return f"chatcmpl-{job_id}"


def text_completion_id(job_id: str) -> str:
    return f"cmpl-{job_id}"


def chat_logprobs(entries: list[TokenLogprob] | None, no_content: bool = False) -> dict | None:
    """A chat choice's `logprobs`: its content's tokens with their alternatives (None when not asked
    for); `content` is null when the message's is (an answer that is tool calls only), as OpenAI's."""
    if entries is None:
        return None
    return {"content": None if no_content else [e.model_dump() for e in entries], "refusal": None}


def assistant_message(choice: Choice) -> dict:
    """The assistant's message; once it began calling tools, content is null unless text came before."""
    # `tool_calls` holds complete calls only: one max_tokens cut (a forced call's, say) leaves none.
    began = choice.began_calls or bool(choice.tool_calls)
    content = None if began and not choice.text.strip() else choice.text
    # A thinking model's reasoning, in vLLM's and DeepSeek's field (only when the output thought).
    reasoning = {"reasoning_content": choice.reasoning} if choice.reasoning is not None else {}
    if not choice.tool_calls:
        return {"role": "assistant", "content": content, **reasoning}
    calls = [
        {"id": c.id, "type": "custom", "custom": {"name": c.name, "input": c.arguments}}
        if c.type == "custom"
        else {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in choice.tool_calls
    ]
    return {"role": "assistant", "content": content, **reasoning, "tool_calls": calls}


def chat_completion_body(job_id: str, model: str, created: int, result: GenerationResult) -> dict:
    """A `chat.completion` object."""
    return {
        "id": chat_completion_id(job_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [_chat_choice(c) for c in result.choices],
        "usage": result.usage.model_dump(),
        "service_tier": "default",  # as OpenAI answers: every request is served alike here
        "system_fingerprint": None,
    }


def _chat_choice(choice: Choice) -> dict:
    message = assistant_message(choice)
    return {
        "index": choice.index,
        "message": message,
        "logprobs": chat_logprobs(choice.logprobs, no_content=message["content"] is None),
        "finish_reason": public_finish_reason(choice.finish_reason),
    }


def text_completion_body(
    job_id: str, model: str, created: int, result: GenerationResult, echoed: list[str] | None = None, n: int = 1
) -> dict:
    """A `text_completion`; with `echoed` prompts, each choice's text (and logprobs) starts with its prompt."""
    return {
        "id": text_completion_id(job_id),
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": c.index,
                "text": (echoed[c.index // n] if echoed else "") + c.text,
                "logprobs": choice_logprobs(c.logprobs, c.prompt_logprobs, echoed[c.index // n] if echoed else None),
                "finish_reason": public_finish_reason(c.finish_reason),
            }
            for c in result.choices
        ],
        "usage": result.usage.model_dump(),
        "system_fingerprint": None,
    }


def embeddings_body(model: str, result: EmbeddingResult, encoding_format: str = "float") -> dict:
    """OpenAI's list of embeddings; base64 is little-endian float32, as OpenAI sends it (and as the
    result holds it)."""
    vectors = result.embeddings if encoding_format == "base64" else result.vectors()
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
