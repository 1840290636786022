"""What batch-invariant decoding costs: Ladle with LADLE_BATCH_INVARIANT=1 (the default) against
the same code with 0, in one run, SmolLM2-135M, streaming chat clients at concurrency 1 and 8.

    python bench/batch_invariance_cost.py [--max-tokens 64] [--rounds 4]

Both servers stay up and take turns, round by round, so drift on the machine falls on both. With
invariance on, a row decoding alone runs beside an idle slot where the CPU's one-row kernels round
differently (AVX2); at concurrency 8 rows rarely decode alone. Prints each round's tokens/s and
TTFT p50, then the median ratio (on / off) per concurrency, and the decode step's floor each
server's engine chose (from the worker's probe, as `/openai/status` cannot show it: read again here).
"""

from __future__ import annotations

import argparse
import json
import statistics
from functools import partial
from pathlib import Path

import numpy as np
from chat_latency import MODEL, http_figures, warm_up
from ladle_process import ladle_serve

from cli.model_build import build_model
from contracts.settings import Settings
from worker.onnx.onnx_decoder import OnnxDecoder

CONCURRENCY = (1, 8)
MODES = {"on": {"LADLE_BATCH_INVARIANT": "1"}, "off": {"LADLE_BATCH_INVARIANT": "0"}}


def decode_floor(folder: Path) -> int:
    """The width a lone row decodes at with invariance on, on this CPU (the engine's probe)."""
    genai = json.loads((folder / "genai_config.json").read_text())
    return OnnxDecoder(folder, genai, 8, 0, 512).smallest_invariant_width()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--model-dir", type=Path, default=Settings.from_env().model_dir)
    args = parser.parse_args()
    folder = build_model(MODEL, args.model_dir)
    floor = decode_floor(folder)
    figures: dict[tuple[str, int], list[dict]] = {(m, c): [] for m in MODES for c in CONCURRENCY}
    ready = partial(warm_up, model=MODEL, workers=1)
    with (
        ladle_serve(args.model_dir, ready, MODES["on"]) as (on_url, _),
        ladle_serve(args.model_dir, ready, MODES["off"]) as (off_url, _),
    ):
        urls = {"on": on_url, "off": off_url}
        for concurrency in CONCURRENCY:  # each shape seen once before measuring
            for url in urls.values():
                http_figures(url, MODEL, concurrency, 8, 1)
        for round_index in range(args.rounds):
            for mode in MODES if round_index % 2 == 0 else reversed(MODES):
                for concurrency in CONCURRENCY:
                    result = http_figures(urls[mode], MODEL, concurrency, args.max_tokens, 1)
                    figures[(mode, concurrency)].append(result)
                    print(
                        f"round {round_index} invariance {mode:<3} conc {concurrency}: "
                        f"{result['tokens_per_s']:.1f} tok/s, TTFT p50 {result['ttft_p50_ms']:.1f} ms",
                        flush=True,
                    )
    print(f"SmolLM2-135M, max_tokens={args.max_tokens}, greedy; a lone row decodes at width {floor} with invariance on")
    for concurrency in CONCURRENCY:
        on, off = figures[("on", concurrency)], figures[("off", concurrency)]
        ratios = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(on, off, strict=True)]
        ttft = [a["ttft_p50_ms"] - b["ttft_p50_ms"] for a, b in zip(on, off, strict=True)]
        print(
            f"concurrency {concurrency}: on {statistics.median(r['tokens_per_s'] for r in on):.1f} tok/s, "
            f"off {statistics.median(r['tokens_per_s'] for r in off):.1f} tok/s, "
            f"on/off x{statistics.median(ratios):.3f} (rounds {', '.join(f'{r:.3f}' for r in ratios)}), "
            f"TTFT p50 {np.median(ttft):+.1f} ms"
        )


if __name__ == "__main__":
    main()
