"""Chat throughput with logprobs off, on (`top_logprobs: 0`) and on with 20 alternatives, in one run.

    python bench/logprobs_overhead.py [--concurrency 8] [--max-tokens 64] [--rounds 2] [--pairs 2]
    python bench/logprobs_overhead.py --model tiny-random-llama --model-dir ~/.cache/ladle-test/models-v2 \
        --pairs 1 --rounds 1   # a quick check that it runs

One `ladle serve`; the settings take turns (off, 0, 20, off, 0, 20...: `--pairs` of each) so drift of
a shared machine falls on all of them. Each streams chat completions at one concurrency, every
request of the round with the same setting, and prints tokens/s and TTFT; then each setting's
summed tokens/s as a ratio of off's. Logprobs cost a log-softmax over the vocabulary per token of
the rows that ask (and a top-k), plus bigger events and chunks.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import requests
from chat_latency import MODEL, PROMPTS, Run, summarize, warm_up
from ladle_process import ladle_serve

from cli.model_build import build_model
from contracts.settings import Settings

SETTINGS = {"off": {}, "top 0": {"logprobs": True}, "top 20": {"logprobs": True, "top_logprobs": 20}}


def stream_one(url: str, model: str, prompt: str, max_tokens: int, extra: dict) -> Run:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
    body |= {"temperature": 0, "stream": True, "stream_options": {"include_usage": True}, **extra}
    started = time.perf_counter()
    first, tokens = None, 0
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines(decode_unicode=True):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                first = first or time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    return Run((first or end) - started, tokens, end - started)


def figures(url: str, model: str, concurrency: int, max_tokens: int, rounds: int, extra: dict) -> dict:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(concurrency)]
    runs, wall = [], 0.0
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for _ in range(rounds):
            started = time.perf_counter()
            runs += list(pool.map(lambda p: stream_one(url, model, p, max_tokens, extra), prompts))
            wall += time.perf_counter() - started
    return summarize(runs, wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--model-dir", type=Path, default=Settings.from_env().model_dir)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    build_model(args.model, args.model_dir)
    totals = dict.fromkeys(SETTINGS, 0.0)
    print(f"{args.model}, concurrency {args.concurrency}, max_tokens={args.max_tokens}, {args.rounds} rounds a run")
    print(f"{'logprobs':<10}{'tokens/s':>10}{'TTFT p50 ms':>13}")
    with ladle_serve(args.model_dir, partial(warm_up, model=args.model, workers=1)) as (url, _):
        for _ in range(args.pairs):
            for name, extra in SETTINGS.items():
                result = figures(url, args.model, args.concurrency, args.max_tokens, args.rounds, extra)
                totals[name] += result["tokens_per_s"]
                print(f"{name:<10}{result['tokens_per_s']:>10.1f}{result['ttft_p50_ms']:>13.1f}")
    for name in list(SETTINGS)[1:]:
        ratio = totals[name] / totals["off"]
        print(f"logprobs {name} / off: tokens/s x{ratio:.3f} ({(ratio - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
