"""OpenAI response bodies of finished jobs, for the workers writing batch output files.

The same shapes as the API's synchronous answers (api/chat/render.py, api/completions/render.py,
api/embeddings/protocol.py); tests/unit/test_openai_bodies.py checks they stay equal.
"""

from __future__ import annotations

from contracts.events import EmbeddingResult, GenerationResult


def _finish_reason(reason: str) -> str:
    return "stop" if reason == "cancelled" else reason


def chat_completion_body(job_id: str, model: str, created: int, result: GenerationResult) -> dict:
    return {
        "id": f"chatcmpl-{job_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": c.index,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": None,
                "finish_reason": _finish_reason(c.finish_reason),
            }
            for c in result.choices
        ],
        "usage": result.usage.model_dump(),
        "system_fingerprint": None,
    }


def text_completion_body(
    job_id: str, model: str, created: int, result: GenerationResult, echoed: list[str] | None = None, n: int = 1
) -> dict:
    return {
        "id": f"cmpl-{job_id}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": c.index,
                "text": (echoed[c.index // n] if echoed else "") + c.text,
                "logprobs": None,
                "finish_reason": _finish_reason(c.finish_reason),
            }
            for c in result.choices
        ],
        "usage": result.usage.model_dump(),
        "system_fingerprint": None,
    }


def embeddings_body(model: str, result: EmbeddingResult, encoding_format: str = "float") -> dict:
    vectors = result.embeddings if encoding_format == "base64" else result.vectors()
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
