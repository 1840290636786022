"""Raw onnxruntime-genai in-process vs Ladle end to end over HTTP, on SmolLM2, in one run.

    python bench/chat_latency.py [--max-tokens 64] [--rounds 3]

Prints TTFT p50 and tokens/s at concurrency 1 and 8 for each, and the ratios Ladle/raw.
Raw at concurrency 1 is one Generator per request, run one after another; raw at concurrency 8
is one Generator with batch_size=8 (a static batch). Ladle runs as `ladle serve` (embedded Redis,
one CPU worker, gunicorn) in a subprocess and is driven by streaming HTTP clients.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime_genai as og
import requests
from ladle_process import ladle_serve

from contracts.settings import Settings
from worker.model_build import build_model  # noqa: E402

MODEL = "smollm2-135m-instruct"
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Describe the water cycle in detail.",
    "Write a poem about autumn leaves.",
    "What are the benefits of regular exercise?",
    "Explain photosynthesis to a child.",
    "Describe a busy market in the morning.",
    "Give advice to someone learning to cook.",
]


@dataclass
class Run:
    """One measured request: time to first token, tokens produced, and total seconds."""

    ttft_s: float
    tokens: int
    seconds: float


def summarize(runs: list[Run], wall_s: float) -> dict:
    return {
        "ttft_p50_ms": 1000 * statistics.median(r.ttft_s for r in runs),
        "tokens_per_s": sum(r.tokens for r in runs) / wall_s,
        "stream_tokens_per_s": statistics.median((r.tokens - 1) / max(r.seconds - r.ttft_s, 1e-9) for r in runs),
    }


class RawEngine:
    def __init__(self, folder: Path) -> None:
        self.model = og.Model(str(folder))
        self.tokenizer = og.Tokenizer(self.model)
        self.template = (folder / "chat_template.jinja").read_text()

    def tokens(self, prompt: str) -> np.ndarray:
        messages = json.dumps([{"role": "user", "content": prompt}])
        text = self.tokenizer.apply_chat_template(
            messages=messages, add_generation_prompt=True, template_str=self.template
        )
        return self.tokenizer.encode(text)

    def generate(self, prompts: list[str], max_tokens: int) -> list[Run]:
        """One Generator for all prompts (a static batch when there are several)."""
        encoded = [self.tokens(p) for p in prompts]
        started = time.perf_counter()
        width = max(len(e) for e in encoded)
        params = og.GeneratorParams(self.model)
        params.set_search_options(batch_size=len(prompts), max_length=width + max_tokens, do_sample=False)
        generator = og.Generator(self.model, params)
        if len(prompts) == 1:
            generator.append_tokens(encoded[0])
        else:
            ids = np.full((len(prompts), width), 2, dtype=np.int32)
            for i, e in enumerate(encoded):
                ids[i, : len(e)] = e
            generator.append_tokens(ids)
        counts, done_at, first = [0] * len(prompts), [0.0] * len(prompts), None
        while not generator.is_done() and not all(done_at):
            generator.generate_next_token()
            now = time.perf_counter()
            first = first or now
            for i, token in enumerate(generator.get_next_tokens().tolist()):
                if done_at[i]:
                    continue
                counts[i] += 1
                if token == 2 or counts[i] >= max_tokens:
                    done_at[i] = now
        end = time.perf_counter()
        return [Run(first - started, c, (d or end) - started) for c, d in zip(counts, done_at, strict=True)]


def raw_figures(engine: RawEngine, concurrency: int, max_tokens: int, rounds: int) -> dict:
    runs, wall = [], 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        if concurrency == 1:
            for prompt in PROMPTS[:8]:
                runs += engine.generate([prompt], max_tokens)
        else:
            runs += engine.generate(PROMPTS[:concurrency], max_tokens)
        wall += time.perf_counter() - started
    return summarize(runs, wall)


def stream_one(url: str, prompt: str, max_tokens: int) -> Run:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first, tokens = None, 0
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=300) as response:
        response.raise_for_status()
        for line in response.iter_lines(decode_unicode=True):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    return Run((first or end) - started, tokens, end - started)


def ladle_figures(url: str, concurrency: int, max_tokens: int, rounds: int) -> dict:
    runs, wall = [], 0.0
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for _ in range(rounds):
            started = time.perf_counter()
            if concurrency == 1:
                runs += [stream_one(url, p, max_tokens) for p in PROMPTS[:8]]
            else:
                runs += list(pool.map(lambda p: stream_one(url, p, max_tokens), PROMPTS[:concurrency]))
            wall += time.perf_counter() - started
    return summarize(runs, wall)


def warm_up(url: str, workers: int) -> None:
    """Load the model in every worker before measuring (concurrent requests reach each of them)."""
    with ThreadPoolExecutor(max_workers=2 * workers) as pool:
        list(pool.map(lambda _: stream_one(url, "hi", 2), range(4 * workers)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model-dir", type=Path, default=Settings.from_env().model_dir)
    args = parser.parse_args()
    cores = os.cpu_count() or 2
    folder = build_model(MODEL, args.model_dir)
    engine = RawEngine(folder)
    engine.generate(PROMPTS[:1], 4)  # warm up
    results = {}
    for concurrency in (1, 8):
        results[("raw", concurrency)] = raw_figures(engine, concurrency, args.max_tokens, args.rounds)
    del engine
    layouts = {"ladle": {}, "ladle 2w": {"LADLE_CPU_WORKERS": "2", "LADLE_INTRA_OP_THREADS": str(max(1, cores // 2))}}
    for system, env in layouts.items():
        workers = int(env.get("LADLE_CPU_WORKERS", 1))
        with ladle_serve(args.model_dir, partial(warm_up, workers=workers), env) as (url, _):
            for concurrency in (1, 8):
                results[(system, concurrency)] = ladle_figures(url, concurrency, args.max_tokens, args.rounds)
    print(f"SmolLM2-135M int4, {os.cpu_count()} cores, max_tokens={args.max_tokens}, greedy, rounds={args.rounds}")
    print(f"{'system':<9}{'conc':>5}{'TTFT p50 ms':>13}{'tokens/s':>10}{'stream tok/s':>14}")
    for (system, concurrency), figures in results.items():
        print(
            f"{system:<9}{concurrency:>5}{figures['ttft_p50_ms']:>13.1f}{figures['tokens_per_s']:>10.1f}"
            f"{figures['stream_tokens_per_s']:>14.1f}"
        )
    two = results[("ladle 2w", 8)]["tokens_per_s"] / results[("ladle", 8)]["tokens_per_s"]
    threads = layouts["ladle 2w"]["LADLE_INTRA_OP_THREADS"]
    print(f"Two CPU workers ({threads} onnxruntime thread each) vs one, concurrency 8: x{two:.2f}")
    for concurrency in (1, 8):
        raw, ladle = results[("raw", concurrency)], results[("ladle", concurrency)]
        print(
            f"Ladle/raw at concurrency {concurrency}: tokens/s x{ladle['tokens_per_s'] / raw['tokens_per_s']:.2f}, "
            f"TTFT overhead {ladle['ttft_p50_ms'] - raw['ttft_p50_ms']:+.1f} ms"
        )


if __name__ == "__main__":
    main()
