"""Where a streamed answer's first token spends its time, hop by hop, on a fresh server and a warm one.

    python bench/ttft_breakdown.py [--max-tokens 64] [--rounds 4] [--concurrency 1 8] [--ladle-root OTHER]

One `ladle serve` (SmolLM2-135M, greedy chat streams over plain HTTP). Each request's hops come
from the client's clock and the job's record (`GET /v1/jobs/{id}`: created_at, started_at,
first_token_at; one machine, one clock):

- accept: the request sent → its job recorded (the API reads, checks and submits it);
- queue: recorded → a worker started it (broker, worker pick-up, model lookup);
- first token: started → the first token decoded (admission to the engine, prefill, one step);
- delivery: decoded → its frame read by the client (Redis Stream, the API's relay, SSE).

First, before any other request, the first requests a fresh worker serves (the model already
loaded by one 1-token request, as a deploy's readiness check would), one at a time; then rounds at
each concurrency. Prints the median of each hop per phase, and TTFT p50.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from chat_latency import MODEL
from ladle_process import PROMPTS, ROOT, ladle_serve

from cli.model_build import build_model
from contracts.settings import Settings

HOPS = ("accept", "queue", "first_token", "delivery")


def stream_one(url: str, prompt: str, max_tokens: int) -> dict:
    """One greedy streamed chat: its hops in ms and its TTFT as the client saw it."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    sent = time.time()
    first, job_id = None, None
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines(decode_unicode=True):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            job_id = job_id or data["id"].removeprefix("chatcmpl-")
            if first is None and data["choices"] and data["choices"][0]["delta"].get("content"):
                first = time.time()
    job = requests.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
    marks = [sent, job["created_at"], job["started_at"], job["first_token_at"], first]
    hops = {hop: (after - before) * 1000 for hop, before, after in zip(HOPS, marks[:-1], marks[1:], strict=True)}
    return {**hops, "ttft": (first - sent) * 1000}


def phase(url: str, concurrency: int, count: int, max_tokens: int, tag: str) -> list[dict]:
    """`count` requests, `concurrency` at a time, each prompt new to the server (`tag` and its index
    lead it: the prefix cache holds only the chat template's opening, as for new users)."""
    prompts = [f"({tag}.{i}) {PROMPTS[i % len(PROMPTS)]}" for i in range(count)]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(lambda prompt: stream_one(url, prompt, max_tokens), prompts))


def loaded(url: str) -> bool:
    """The model is loaded (a 1-token request answers): ready, as a readiness check would see it."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    return requests.post(f"{url}/v1/chat/completions", json=body, timeout=600).status_code == 200


def report(name: str, runs: list[dict]) -> None:
    medians = {key: statistics.median(run[key] for run in runs) for key in (*HOPS, "ttft")}
    hops = ", ".join(f"{hop} {medians[hop]:.1f}" for hop in HOPS)
    print(f"{name:<24} TTFT p50 {medians['ttft']:7.1f} ms = {hops} (medians, ms; {len(runs)} requests)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--fresh", type=int, default=8, help="requests measured first, one at a time")
    parser.add_argument("--model-dir", type=Path, default=Settings.from_env().model_dir)
    parser.add_argument("--ladle-root", type=Path, default=ROOT, help="the Ladle checkout that serves")
    args = parser.parse_args()
    build_model(MODEL, args.model_dir)
    with ladle_serve(args.model_dir, loaded, root=args.ladle_root) as (url, _):
        report("fresh worker, conc 1", phase(url, 1, args.fresh, args.max_tokens, "fresh"))
        results: dict[int, list[dict]] = {c: [] for c in args.concurrency}
        for round_index in range(args.rounds):
            for concurrency in args.concurrency:
                count = max(concurrency, len(PROMPTS))
                results[concurrency] += phase(url, concurrency, count, args.max_tokens, f"{round_index}.{concurrency}")
        for concurrency, runs in results.items():
            report(f"warm, conc {concurrency}", runs)
    print(f"SmolLM2-135M, max_tokens={args.max_tokens}, greedy, streamed chat over plain HTTP, {args.ladle_root}")


if __name__ == "__main__":
    main()
