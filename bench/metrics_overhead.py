"""Chat throughput with metrics on (the default) and off (LADLE_METRICS=0), in the same run.

    python bench/metrics_overhead.py [--concurrency 8] [--max-tokens 64] [--rounds 4] [--pairs 2]
    python bench/metrics_overhead.py --model tiny-random-llama --model-dir ~/.cache/ladle-test/models-v2 \
        --pairs 1 --rounds 1   # a quick check that it runs

Starts `ladle serve` once per setting, alternating off, on, off, on... (`--pairs` of each) so drift
of a shared machine falls on both, warms the model up, streams chat completions at one
concurrency and prints tokens/s and TTFT per run, then the ratio on/off of the summed tokens/s.
Metrics cost the API a counter and a histogram observation per request, and the worker two Redis
round trips per job (none per token); the target is a difference of at most 3%.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import requests
from chat_latency import MODEL, http_figures, warm_up
from ladle_process import ladle_serve

from cli.model_build import build_model
from contracts.settings import Settings


def measure(model_dir: Path, model: str, metrics: bool, concurrency: int, max_tokens: int, rounds: int) -> dict:
    env = {"LADLE_METRICS": "1" if metrics else "0"}
    with ladle_serve(model_dir, partial(warm_up, model=model, workers=1), env) as (url, _):
        figures = http_figures(url, model, concurrency, max_tokens, rounds)
        page = requests.get(f"{url}/metrics", timeout=30)
        assert (page.status_code == 200) == metrics, f"/metrics answered {page.status_code} with metrics={metrics}"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--model-dir", type=Path, default=Settings.from_env().model_dir)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    build_model(args.model, args.model_dir)
    totals = {False: 0.0, True: 0.0}
    print(f"{args.model}, concurrency {args.concurrency}, max_tokens={args.max_tokens}, {args.rounds} rounds a run")
    print(f"{'metrics':<9}{'tokens/s':>10}{'TTFT p50 ms':>13}")
    for _ in range(args.pairs):
        for metrics in (False, True):
            figures = measure(args.model_dir, args.model, metrics, args.concurrency, args.max_tokens, args.rounds)
            totals[metrics] += figures["tokens_per_s"]
            print(f"{'on' if metrics else 'off':<9}{figures['tokens_per_s']:>10.1f}{figures['ttft_p50_ms']:>13.1f}")
    ratio = totals[True] / totals[False]
    print(f"metrics on/off: tokens/s x{ratio:.3f} ({(ratio - 1) * 100:+.1f}%; target: within -3%)")


if __name__ == "__main__":
    main()
