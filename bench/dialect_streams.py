"""What a stream costs in each dialect: OpenAI chat completions, OpenAI's Responses API and
Anthropic's Messages API, on one Ladle, the same prompts, in alternating rounds.

    python bench/dialect_streams.py [--max-tokens 64] [--rounds 6] [--concurrency 1 8]

Each dialect runs the same chat job underneath; what differs is the API's translation of the
job's events into the dialect's frames. Streams are read with plain HTTP (no SDK), the first token
being the first frame that carries text. Prints per round and dialect the tokens/s and TTFT p50,
then each agent dialect's median ratio to chat (tokens/s) and TTFT difference, per concurrency,
and the Redis memory a stored response takes (the Responses API keeps each one for
LADLE_RESPONSES_TTL).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import redis
import requests
from chat_latency import MODEL, Run, summarize, warm_up
from ladle_process import PROMPTS, ladle_serve

from cli.model_build import build_model
from contracts.settings import Settings


def request_of(dialect: str, prompt: str, max_tokens: int) -> tuple[str, dict, dict]:
    """(path, body, headers) of a greedy streamed request in `dialect`."""
    messages = [{"role": "user", "content": prompt}]
    if dialect == "chat":
        body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
        return "/v1/chat/completions", body, {}
    if dialect == "responses":
        body = {"model": MODEL, "input": prompt, "max_output_tokens": max_tokens, "temperature": 0, "stream": True}
        return "/v1/responses", body | {"store": False}, {}
    body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    return "/v1/messages", body, {"anthropic-version": "2023-06-01"}


def carries_text(dialect: str, data: dict) -> bool:
    if dialect == "chat":
        return bool(data.get("choices") and data["choices"][0]["delta"].get("content"))
    if dialect == "responses":
        return data.get("type") == "response.output_text.delta" and bool(data.get("delta"))
    return data.get("type") == "content_block_delta" and bool(data.get("delta", {}).get("text"))


def output_tokens(dialect: str, data: dict) -> int | None:
    if dialect == "responses" and data.get("type") in ("response.completed", "response.incomplete"):
        return data["response"]["usage"]["output_tokens"]
    if dialect == "messages" and data.get("type") == "message_delta":
        return data["usage"]["output_tokens"]
    if dialect == "chat" and data.get("usage"):
        return data["usage"]["completion_tokens"]
    return None


def stream_one(url: str, dialect: str, prompt: str, max_tokens: int) -> Run:
    path, body, headers = request_of(dialect, prompt, max_tokens)
    if dialect == "chat":
        body["stream_options"] = {"include_usage": True}
    started = time.perf_counter()
    first, tokens = None, 0
    with requests.post(url + path, json=body, headers=headers, stream=True, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines(decode_unicode=True):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if first is None and carries_text(dialect, data):
                first = time.perf_counter()
            tokens = output_tokens(dialect, data) or tokens
    end = time.perf_counter()
    return Run((first or end) - started, tokens, end - started)


def figures(url: str, dialect: str, concurrency: int, max_tokens: int) -> dict:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(max(concurrency, len(PROMPTS)))]
    started = time.perf_counter()
    if concurrency == 1:
        runs = [stream_one(url, dialect, p, max_tokens) for p in prompts]
    else:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            runs = list(pool.map(lambda p: stream_one(url, dialect, p, max_tokens), prompts[:concurrency]))
    return summarize(runs, time.perf_counter() - started)


def stored_response_bytes(url: str, redis_url: str, count: int = 20) -> float:
    """Redis memory per stored response (a short conversation and answer), from INFO used_memory."""
    client = redis.Redis.from_url(redis_url)
    before = client.info("memory")["used_memory"]
    for i in range(count):
        body = {"model": MODEL, "input": f"{PROMPTS[i % len(PROMPTS)]} ({i})", "max_output_tokens": 64}
        requests.post(f"{url}/v1/responses", json=body | {"temperature": 0}, timeout=600).raise_for_status()
    return (client.info("memory")["used_memory"] - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--model-dir", type=Path, default=Settings.from_env().model_dir)
    args = parser.parse_args()
    build_model(MODEL, args.model_dir)
    dialects = ("chat", "responses", "messages")
    results: dict[tuple[str, int], list[dict]] = {(d, c): [] for d in dialects for c in args.concurrency}
    with ladle_serve(args.model_dir, partial(warm_up, model=MODEL, workers=1)) as (url, redis_url):
        for dialect in dialects:  # each dialect's path seen once before measuring
            figures(url, dialect, 1, 4)
        for round_index in range(args.rounds):
            order = dialects if round_index % 2 == 0 else tuple(reversed(dialects))
            for dialect in order:
                for concurrency in args.concurrency:
                    result = figures(url, dialect, concurrency, args.max_tokens)
                    results[(dialect, concurrency)].append(result)
                    print(
                        f"round {round_index} {dialect:<9} conc {concurrency}: {result['tokens_per_s']:.1f} tok/s, "
                        f"TTFT p50 {result['ttft_p50_ms']:.1f} ms",
                        flush=True,
                    )
        per_response = stored_response_bytes(url, redis_url)
    print(f"SmolLM2-135M, max_tokens={args.max_tokens}, greedy, streamed over plain HTTP")
    for dialect in dialects[1:]:
        for concurrency in args.concurrency:
            ours, chat = results[(dialect, concurrency)], results[("chat", concurrency)]
            ratios = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(ours, chat, strict=True)]
            ttft = [a["ttft_p50_ms"] - b["ttft_p50_ms"] for a, b in zip(ours, chat, strict=True)]
            print(
                f"{dialect}/chat, concurrency {concurrency}: tokens/s x{statistics.median(ratios):.3f} "
                f"(rounds {', '.join(f'{r:.2f}' for r in ratios)}), TTFT p50 {statistics.median(ttft):+.1f} ms"
            )
    print(f"Redis memory per stored response (64-token answer): {per_response / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
