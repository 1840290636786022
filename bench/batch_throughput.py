"""A chat batch through the Batch API on SmolLM2-135M, against the engine's batched throughput.

    python bench/batch_throughput.py [--lines 1000] [--max-tokens 64] [--ttft-samples 20]

In one run of `ladle serve` (one CPU worker): (1) the engine's batched throughput: the same chat
requests sent over HTTP by as many concurrent clients as the engine has rows (LADLE_MAX_BATCH), and
by as many as batch lines may hold (LADLE_BATCH_SHARE of them); (2) interactive TTFT while idle:
streamed requests one after another; (3) a `--lines` chat batch uploaded and run through the
openai SDK's files and batches, timed from create to completed, while interactive requests
stream one after another and their TTFT is measured. Prints lines/s and output tokens/s of the
batch, their ratio to (1), and TTFT p50/p99 with the batch running vs idle.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import requests
from ladle_process import PROMPTS, ladle_serve, percentile
from openai import OpenAI

from cli.model_build import build_model
from contracts.settings import Settings

MODEL = "smollm2-135m-instruct"


def chat_body(index: int, max_tokens: int) -> dict:
    prompt = PROMPTS[index % len(PROMPTS)]
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}


def request_once(url: str, index: int, max_tokens: int) -> int:
    response = requests.post(f"{url}/v1/chat/completions", json=chat_body(index, max_tokens), timeout=600)
    response.raise_for_status()
    return response.json()["usage"]["completion_tokens"]


def concurrent_throughput(url: str, concurrency: int, requests_total: int, max_tokens: int) -> dict:
    """Requests/s and output tokens/s of `requests_total` chat requests, `concurrency` at a time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        tokens = sum(pool.map(lambda i: request_once(url, i, max_tokens), range(requests_total)))
    wall = time.perf_counter() - started
    return {"requests_per_s": requests_total / wall, "tokens_per_s": tokens / wall}


def ttft(url: str, max_tokens: int = 8) -> float:
    body = {**chat_body(0, max_tokens), "stream": True}
    started = time.perf_counter()
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    return time.perf_counter() - started
    return time.perf_counter() - started


def ttft_figures(samples: list[float]) -> dict:
    return {"ttft_p50_ms": 1000 * statistics.median(samples), "ttft_p99_ms": 1000 * percentile(samples, 0.99)}


def run_batch(url: str, lines: int, max_tokens: int, samples: int) -> tuple[dict, list[float]]:
    """Run a `lines` chat batch; meanwhile interactive requests one after another (their TTFTs)."""
    sdk = OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)
    text = "".join(
        json.dumps(
            {"custom_id": f"l{i}", "method": "POST", "url": "/v1/chat/completions", "body": chat_body(i, max_tokens)}
        )
        + "\n"
        for i in range(lines)
    )
    source = sdk.files.create(file=("bench.jsonl", io.BytesIO(text.encode())), purpose="batch")
    started = time.perf_counter()
    batch = sdk.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h")
    busy: list[float] = []
    done = threading.Event()

    def interactive() -> None:
        time.sleep(1.0)  # the batch's first lines are running
        while not done.is_set() and len(busy) < samples:
            busy.append(ttft(url))
            time.sleep(0.2)

    probe = threading.Thread(target=interactive, daemon=True)
    probe.start()
    while (batch := sdk.batches.retrieve(batch.id)).status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.5)
    wall = time.perf_counter() - started
    done.set()
    probe.join()
    if batch.status != "completed":
        raise SystemExit(f"the batch ended {batch.status}: {batch.errors}")
    output = sdk.files.content(batch.output_file_id).text.splitlines()
    assert len(output) == lines, f"{len(output)} output lines for {lines}"
    figures = {
        "lines_per_s": lines / wall,
        "tokens_per_s": batch.usage.output_tokens / wall,
        "wall_s": wall,
        "failed": batch.request_counts.failed,
    }
    return figures, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--baseline-requests", type=int, default=96, help="requests per baseline measurement")
    parser.add_argument("--ttft-samples", type=int, default=20)
    parser.add_argument("--model-dir", type=Path, default=Settings.from_env().model_dir)
    args = parser.parse_args()
    build_model(MODEL, args.model_dir)
    settings = Settings.from_env()
    rows = settings.max_batch_rows
    share = max(1, int(rows * settings.batch_share))
    with tempfile.TemporaryDirectory() as files_dir:
        env = {"LADLE_FILES_DIR": files_dir}
        warm = partial(request_once, index=0, max_tokens=2)
        with ladle_serve(args.model_dir, warm, env) as (url, _):
            concurrent_throughput(url, rows, rows, args.max_tokens)  # warm: the cache grown to every row
            baseline = {
                f"HTTP x{rows} (all rows)": concurrent_throughput(url, rows, args.baseline_requests, args.max_tokens),
                f"HTTP x{share} (batch share)": concurrent_throughput(
                    url, share, args.baseline_requests, args.max_tokens
                ),
            }
            idle = [ttft(url) for _ in range(args.ttft_samples)]
            batch, busy = run_batch(url, args.lines, args.max_tokens, args.ttft_samples)
    print(f"model {MODEL}, max_tokens {args.max_tokens}, LADLE_MAX_BATCH {rows}, batch lines at once {share}")
    print(f"{'':32} {'lines|req/s':>12} {'tokens/s':>10}")
    for name, figures in baseline.items():
        print(f"{name:32} {figures['requests_per_s']:12.2f} {figures['tokens_per_s']:10.1f}")
    print(f"{f'batch of {args.lines} lines':32} {batch['lines_per_s']:12.2f} {batch['tokens_per_s']:10.1f}")
    for name, figures in baseline.items():
        print(f"batch tokens/s / {name}: {batch['tokens_per_s'] / figures['tokens_per_s']:.2f}")
    idle_figures, busy_figures = ttft_figures(idle), ttft_figures(busy) if busy else None
    print(f"interactive TTFT idle: p50 {idle_figures['ttft_p50_ms']:.0f} ms, p99 {idle_figures['ttft_p99_ms']:.0f} ms")
    if busy_figures:
        p50, p99 = busy_figures["ttft_p50_ms"], busy_figures["ttft_p99_ms"]
        ratio = p50 / idle_figures["ttft_p50_ms"]
        print(
            f"interactive TTFT, batch running ({len(busy)} samples): "
            f"p50 {p50:.0f} ms, p99 {p99:.0f} ms; p50 x{ratio:.2f}"
        )


if __name__ == "__main__":
    main()
