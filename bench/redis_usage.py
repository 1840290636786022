"""What streaming chat costs Redis: commands per generated token, memory, keys and AOF size.

    python bench/redis_usage.py [--tokens 100000] [--max-tokens 128] [--model smollm2-135m-instruct]
        [--events-ttl 10] [--concurrency 1 8] [--ladle-root PATH]

Starts `ladle serve` (one CPU worker) on a private Redis with an append-only file, then for
concurrency 1 and 8 streams chat completions (greedy, `max_tokens` each) until about `--tokens`
tokens were generated. For each concurrency it prints: Redis commands per generated token (the
delta of INFO commandstats totals, commands run inside Lua scripts included, background work such
as heartbeats included; the idle background rate is printed too, and the figure by command), TTFT
p50 and inter-token gap p50/p99 seen by the streaming clients, and Redis used memory, key count and
AOF size, right after the run and again once the events window (LADLE_EVENTS_TTL, set to
`--events-ttl`) has passed. `--concurrency 8` measures 8 streams only.

The same script measures other Ladle code: `--ladle-root /work/main` serves that checkout (its
server runs with PYTHONPATH and working directory set to it; settings it does not know are ignored),
so the figures of two versions can be compared on one machine:

    python bench/redis_usage.py --tokens 4000 --ladle-root /path/to/other/checkout
    python bench/redis_usage.py --tokens 4000

`--model tiny-random-llama` uses the tiny random model (plumbing only, far faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests
from ladle_process import ROOT, ladle_serve, percentile

from cli.model_build import BUILD_RECIPE_VERSION, build_model

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
TEST_MODEL_CACHE = Path.home() / ".cache" / "ladle-test" / f"models-v{BUILD_RECIPE_VERSION}"


@dataclass
class Stream:
    """One streamed request as its client saw it."""

    ttft_s: float
    gaps_s: list[float] = field(default_factory=list)
    tokens: int = 0


@dataclass
class RedisState:
    used_memory: int
    keys: int
    aof_bytes: int
    job_bytes: int  # MEMORY USAGE of every job key (record, events): what the jobs themselves hold


def redis_state(client: redis.Redis) -> RedisState:
    info = client.info("all")
    job_bytes = sum(client.memory_usage(key) or 0 for key in client.scan_iter(match="ladle:job:*", count=1000))
    return RedisState(info["used_memory"], client.dbsize(), info.get("aof_current_size", 0), job_bytes)


def stream_one(url: str, model: str, prompt: str, max_tokens: int) -> Stream:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    run, previous, tokens = None, None, 0
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines(decode_unicode=True):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                if run is None:
                    run = Stream(now - started)
                else:
                    run.gaps_s.append(now - previous)
                previous = now
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    run = run or Stream(time.perf_counter() - started)
    run.tokens = tokens
    return run


def generate(url: str, model: str, concurrency: int, requests_count: int, max_tokens: int) -> list[Stream]:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(requests_count)]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(lambda p: stream_one(url, model, p, max_tokens), prompts))


def command_counts(client: redis.Redis) -> dict[str, int]:
    """Calls so far of each command (INFO commandstats; a Lua script's commands counted one by one)."""
    return {name.removeprefix("cmdstat_"): v["calls"] for name, v in client.info("commandstats").items()}


def command_total(client: redis.Redis) -> int:
    return sum(command_counts(client).values())


def idle_commands_per_s(client: redis.Redis, seconds: float = 5.0) -> float:
    """Commands Redis runs with no request in flight (heartbeats, polling), per second."""
    before = command_total(client)
    time.sleep(seconds)
    return (command_total(client) - before - 1) / seconds  # minus this INFO


def measure(url: str, client: redis.Redis, args, concurrency: int) -> dict:
    background = idle_commands_per_s(client)
    before = redis_state(client)
    counts_before = command_counts(client)  # last before the run, first after: the bench's own reads stay out
    started = time.perf_counter()
    runs = generate(url, args.model, concurrency, max(1, round(args.tokens / args.max_tokens)), args.max_tokens)
    seconds = time.perf_counter() - started
    counts_after = command_counts(client)
    counts_after["info"] -= 1
    by_command = {name: n - counts_before.get(name, 0) for name, n in counts_after.items()}
    by_command = {name: n for name, n in sorted(by_command.items(), key=lambda kv: -kv[1]) if n}
    commands = sum(by_command.values())
    after = redis_state(client)
    time.sleep(args.events_ttl + 2)  # the events window passes
    later = redis_state(client)
    tokens = sum(r.tokens for r in runs)
    gaps = [1000 * g for r in runs for g in r.gaps_s]
    return {
        "concurrency": concurrency,
        "requests": len(runs),
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "commands_per_token": commands / tokens,
        "commands_per_token_by_command": {name: round(n / tokens, 4) for name, n in by_command.items()},
        "background_commands_per_token": background * seconds / tokens,
        "ttft_p50_ms": statistics.median(1000 * r.ttft_s for r in runs),
        "gap_p50_ms": statistics.median(gaps) if gaps else 0.0,
        "gap_p99_ms": percentile(gaps, 0.99) if gaps else 0.0,
        "memory_bytes_per_token_after_run": (after.used_memory - before.used_memory) / tokens,
        "memory_bytes_per_token_after_window": (later.used_memory - before.used_memory) / tokens,
        "job_bytes_per_token_after_run": (after.job_bytes - before.job_bytes) / tokens,
        "job_bytes_per_token_after_window": (later.job_bytes - before.job_bytes) / tokens,
        "keys_added_after_run": after.keys - before.keys,
        "keys_added_after_window": later.keys - before.keys,
        "aof_bytes_per_token": (after.aof_bytes - before.aof_bytes) / tokens,
        "used_memory_after_window": later.used_memory,
        "aof_bytes_after_window": later.aof_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=100_000, help="tokens to generate per concurrency (about)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--model-dir", type=Path, default=TEST_MODEL_CACHE)
    parser.add_argument("--events-ttl", type=int, default=10, help="LADLE_EVENTS_TTL of the served Ladle")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8], help="streams at once, one run each")
    parser.add_argument("--ladle-root", type=Path, default=ROOT, help="the Ladle checkout to serve")
    args = parser.parse_args()
    build_model(args.model, args.model_dir)
    env = {"LADLE_EVENTS_TTL": str(args.events_ttl), "LADLE_CPU_WORKERS": "1"}

    def ready(url: str) -> None:
        stream_one(url, args.model, "hi", 2)  # also loads the model

    results = []
    with ladle_serve(args.model_dir, ready, env, root=args.ladle_root.resolve(), persist=True) as (url, redis_url):
        client = redis.Redis.from_url(redis_url)
        for concurrency in args.concurrency:
            results.append(measure(url, client, args, concurrency))
    print(f"Ladle at {args.ladle_root.resolve()}, model {args.model}, max_tokens={args.max_tokens}, greedy")
    print(f"LADLE_EVENTS_TTL={args.events_ttl} s; memory, keys and AOF are deltas over the run; B: used_memory,")
    print("jobB: MEMORY USAGE of the ladle:job:* keys; '+ttl': once the events window passed; (idle): background")
    header = ["conc", "tokens", "tok/s", "cmd/tok", "(idle)", "TTFT p50", "gap p50", "gap p99"]
    header += ["B/tok run", "B/tok +ttl", "jobB/tok run", "jobB/tok +ttl", "keys run", "keys +ttl", "AOF B/tok"]
    print("".join(f"{h:>14}" for h in header))
    for r in results:
        cells = [r["concurrency"], r["tokens"], f"{r['tokens_per_s']:.1f}", f"{r['commands_per_token']:.3f}"]
        cells += [f"{r['background_commands_per_token']:.3f}", f"{r['ttft_p50_ms']:.1f}", f"{r['gap_p50_ms']:.1f}"]
        cells += [f"{r['gap_p99_ms']:.1f}", f"{r['memory_bytes_per_token_after_run']:.0f}"]
        cells += [f"{r['memory_bytes_per_token_after_window']:.0f}", f"{r['job_bytes_per_token_after_run']:.0f}"]
        cells += [f"{r['job_bytes_per_token_after_window']:.0f}", r["keys_added_after_run"]]
        cells += [r["keys_added_after_window"], f"{r['aof_bytes_per_token']:.0f}"]
        print("".join(f"{c:>14}" for c in cells))
    for r in results:
        shares = ", ".join(f"{name} {n:.3f}" for name, n in r["commands_per_token_by_command"].items())
        print(f"commands per token at concurrency {r['concurrency']}: {shares}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
