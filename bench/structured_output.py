"""Cost of constrained decoding on SmolLM2-135M: constrained rows vs free rows, and many tools.

    python bench/structured_output.py [--max-tokens 64] [--rounds 4]

In one `ladle serve` run, alternating rounds so both sides meet the same machine load:
(1) 8 concurrent chat requests answering freely vs 8 answering under a JSON schema whose string
cannot close before max_tokens (so both run to max_tokens and decode in a full batch): aggregate
tokens/s and their ratio (the issue's target is >= 0.9); (2) time to the first streamed token of
one request with no tools vs 128 tools (`tool_choice: required`). The 128 descriptions lengthen
the prompt (about 5,500 tokens), which dominates; building the grammar (API) and the matcher
(worker) are the rest. (3) The same 128-tool request sent again, on a second `ladle serve` whose
prefix cache (LADLE_PREFIX_CACHE_TOKENS, `--prefix-cache-tokens`) holds the whole tools prompt:
the first request reads it, the repeats start from its cached key/values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import requests
from ladle_process import PROMPTS, ladle_serve

from cli.model_build import build_model
from contracts.settings import Settings

MODEL = "smollm2-135m-instruct"
LONG_TEXT = {
    "type": "json_schema",
    "json_schema": {
        "name": "story",
        "schema": {
            "type": "object",
            "properties": {"text": {"type": "string", "minLength": 2000}},
            "required": ["text"],
        },
    },
}


def tools(count: int) -> list[dict]:
    """`count` small functions (their descriptions in the prompt take about 40 tokens each)."""
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    return [{"type": "function", "function": {"name": f"tool_{i}", "parameters": parameters}} for i in range(count)]


def chat(url: str, body: dict) -> dict:
    response = requests.post(f"{url}/v1/chat/completions", json={"model": MODEL, "temperature": 0, **body}, timeout=600)
    response.raise_for_status()
    return response.json()


def batch_tokens_per_s(url: str, max_tokens: int, extra: dict) -> tuple[float, int]:
    """Aggregate tokens/s of the 8 prompts sent together, and the tokens they produced."""

    def one(prompt: str) -> int:
        body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, **extra}
        return chat(url, body)["usage"]["completion_tokens"]

    started = time.perf_counter()
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        tokens = sum(pool.map(one, PROMPTS))
    return tokens / (time.perf_counter() - started), tokens


def ttft_ms(url: str, extra: dict) -> float:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "What is the weather in Paris?"}]}
    body |= {"max_tokens": 40, "temperature": 0, "stream": True, **extra}
    started = time.perf_counter()
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines(decode_unicode=True):
            if not line.startswith("data: {"):
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"]
            if delta.get("content") or delta.get("tool_calls"):
                return 1000 * (time.perf_counter() - started)
    raise SystemExit("the stream sent no token")


def warm_up(url: str) -> None:
    chat(url, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "response_format": LONG_TEXT})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tools", type=int, default=128)
    parser.add_argument("--model-dir", type=Path, default=Settings.from_env().model_dir)
    parser.add_argument("--prefix-cache-tokens", type=int, default=8192)
    args = parser.parse_args()
    build_model(MODEL, args.model_dir)
    free, constrained, plain, many = [], [], [], []
    with ladle_serve(args.model_dir, partial(warm_up)) as (url, _):
        for _ in range(args.rounds):
            free.append(batch_tokens_per_s(url, args.max_tokens, {}))
            constrained.append(batch_tokens_per_s(url, args.max_tokens, {"response_format": LONG_TEXT}))
            plain.append(ttft_ms(url, {}))
            many.append(ttft_ms(url, {"tools": tools(args.tools), "tool_choice": "required"}))
    free_s, constrained_s = statistics.median(f[0] for f in free), statistics.median(c[0] for c in constrained)
    print(f"8 rows free:        {free_s:7.1f} tok/s (median of {args.rounds}; tokens {[f[1] for f in free]})")
    print(f"8 rows constrained: {constrained_s:7.1f} tok/s (tokens {[c[1] for c in constrained]})")
    print(f"ratio constrained/free: x{constrained_s / free_s:.2f}")
    print(f"TTFT no tools:        {statistics.median(plain):7.0f} ms")
    print(f"TTFT {args.tools} tools: {statistics.median(many):7.0f} ms (their descriptions in the prompt + grammar)")
    cached_env = {"LADLE_PREFIX_CACHE_TOKENS": str(args.prefix_cache_tokens)}
    with ladle_serve(args.model_dir, partial(warm_up), env_overrides=cached_env) as (url, _):
        first = ttft_ms(url, {"tools": tools(args.tools), "tool_choice": "required"})
        repeats = [ttft_ms(url, {"tools": tools(args.tools), "tool_choice": "required"}) for _ in range(args.rounds)]
    print(f"with a {args.prefix_cache_tokens}-token prefix cache, {args.tools} tools:")
    print(f"  first request:  {first:7.0f} ms")
    again = statistics.median(repeats)
    print(f"  same tools again: {again:5.0f} ms (median of {args.rounds}: the prompt's key/values are cached)")


if __name__ == "__main__":
    main()
