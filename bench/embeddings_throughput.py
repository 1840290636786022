"""Embeddings through Ladle with 32 concurrent single-text clients vs infinity-emb and raw onnxruntime.

    bash bench/install_infinity.sh            # once: the peer's own virtualenv
    python bench/embeddings_throughput.py [--seconds 10] [--rounds 3]

All embed the same ~20-word sentences with all-MiniLM-L6-v2 (int8 ONNX, the folder Ladle serves)
in one run: raw onnxruntime at batch 32 (the ceiling) and batch 1, on the graph Ladle's engine
runs (onnxruntime's rewrites less those slower on CPU, SLOW_CPU_FUSIONS), then infinity-emb (a
Python embedding server with dynamic batching, `--engine optimum` on the same ONNX file, which
onnxruntime rewrites as it does by default) and Ladle started as `ladle serve` runs it. Both
servers stay up and take turns at the 32-client load for `--rounds` rounds, so that the machine's
drift (here ±10% over minutes) falls on both alike; each round's ratio is printed, then the
median. Idle, each server uses about 1% of a core.

The infinity-emb column is skipped, saying why, when its virtualenv (INFINITY_VENV, default
~/.cache/ladle-bench/infinity) is missing. Each server's CPU per sentence (its processes and their
children, Redis included) is printed too: on a machine shared with other work it moves far less
than sentences/s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import onnxruntime as ort
import requests
from ladle_process import ladle_serve, tree_cpu_s, wait_until
from tokenizers import Tokenizer

from cli.embedded_redis import free_port
from cli.model_build import MINILM, build_model
from contracts.settings import Settings
from worker.engines.embedding_engine import SLOW_CPU_FUSIONS

WORDS = "the quick brown fox jumps over a lazy dog while seven curious birds watch from an old oak tree".split()


def sentence(i: int) -> str:
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(20)) + f" {i}"


def raw_sentences_per_s(folder, batch: int, seconds: float) -> float:
    # onnxruntime's defaults, less the graph rewrites the engine leaves out as slower on CPU.
    session = ort.InferenceSession(
        str(folder / "model.onnx"), providers=["CPUExecutionProvider"], disabled_optimizers=list(SLOW_CPU_FUSIONS)
    )
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding()
    done, started, i = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        encodings = tokenizer.encode_batch([sentence(i + k) for k in range(batch)])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        done, i = done + batch, i + batch
    return done / (time.perf_counter() - started)


@dataclass(frozen=True)
class Load:
    """What a load run measured: sentences/s, and the server's CPU ms per sentence (0 if unknown)."""

    sentences_per_s: float
    cpu_ms_per_sentence: float = 0.0


# Seconds of the same load run unmeasured first: onnxruntime plans each new input shape on first
# sight, and each server sees many (batch sizes, lengths) in its first seconds.
WARM_UP_S = 3.0


def measured(url: str, server_pids: list[int], clients: int, seconds: float, **options) -> Load:
    """`sentences_per_s` of the server at `url` after WARM_UP_S of the same load, with the CPU its
    processes (`server_pids` and their children) used meanwhile."""
    sentences_per_s(url, clients, WARM_UP_S, **options)
    cpu_before, started = tree_cpu_s(server_pids), time.perf_counter()
    rate = sentences_per_s(url, clients, seconds, **options)
    sentences = rate * (time.perf_counter() - started)
    return Load(rate, 1000 * (tree_cpu_s(server_pids) - cpu_before) / max(sentences, 1))


def sentences_per_s(url: str, clients: int, seconds: float, texts: int = 1, path: str = "/v1/embeddings") -> float:
    """Sentences/s with `clients` sending requests of `texts` sentences each, one after another.

    Each client is a keep-alive `http.client` connection: the load generator shares the 2 cores
    with the server, and `requests` took ~15% more of them (the server then did 12-15% less).
    """
    address = urlparse(url)
    deadline = time.perf_counter() + seconds

    def client(c: int) -> int:
        connection, count = http.client.HTTPConnection(address.hostname, address.port), 0
        while time.perf_counter() < deadline:
            # base64, as the openai SDK asks by default; the body is not decoded, to keep this
            # load generator from taking the CPU the server needs.
            inputs = [sentence(c * 100000 + count + k) for k in range(texts)]
            body = {"model": MINILM, "input": inputs[0] if texts == 1 else inputs, "encoding_format": "base64"}
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"embeddings request to {url} failed: HTTP {response.status}")
            count += texts
        connection.close()
        return count

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        total = sum(pool.map(client, range(clients)))
    return total / (time.perf_counter() - started)


def infinity_venv() -> Path:
    return Path(os.environ.get("INFINITY_VENV", Path.home() / ".cache" / "ladle-bench" / "infinity"))


@contextmanager
def infinity_serve(folder: Path) -> Iterator[tuple[str, int]]:
    """infinity-emb serving `folder`'s ONNX model; yields (URL, process ID) once it answers, then stops it."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    with tempfile.TemporaryDirectory() as logs:
        log_path = Path(logs) / "infinity.log"
        # `--model-id .` from inside the folder: optimum matches the ONNX file by its name relative
        # to the model path, and infinity-emb passes it on as found. No graph optimisation: the same
        # int8 graph as Ladle's (infinity's optimiser also fails on this optimum release).
        command = [
            str(infinity_venv() / "bin" / "infinity_emb"),
            "v2",
            "--model-id",
            ".",
            "--served-model-name",
            MINILM,
            "--engine",
            "optimum",
            "--device",
            "cpu",
            "--pooling-method",
            "mean",
            "--batch-size",
            "32",
            "--onnx-disable-optimize",
            "--no-model-warmup",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        with log_path.open("w") as log:
            process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            if not wait_until(lambda: warm_up(url, "/embeddings"), process):
                raise SystemExit(f"infinity-emb did not come up:\n{log_path.read_text()[-3000:]}")
            yield url, process.pid
        finally:
            process.terminate()
            process.wait(timeout=60)


def warm_up(url: str, path: str = "/v1/embeddings") -> None:
    body = {"model": MINILM, "input": "warm up"}
    requests.post(f"{url}{path}", json=body, timeout=30).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="turns each server takes at the 32-client load")
    parser.add_argument("--model-dir", type=Path, default=Settings.from_env().model_dir)
    args = parser.parse_args()
    folder = build_model(MINILM, args.model_dir)
    raw32 = raw_sentences_per_s(folder, 32, args.seconds)
    raw1 = raw_sentences_per_s(folder, 1, args.seconds)
    peer = (infinity_venv() / "bin" / "infinity_emb").exists()
    rounds: list[tuple[Load | None, Load]] = []
    with ExitStack() as servers:
        infinity_url, infinity_pid = servers.enter_context(infinity_serve(folder)) if peer else ("", 0)
        pids: list[int] = []
        url, _ = servers.enter_context(ladle_serve(args.model_dir, warm_up, pids=pids))
        for number in range(1, args.rounds + 1):
            theirs = measured(infinity_url, [infinity_pid], 32, args.seconds, path="/embeddings") if peer else None
            ours = measured(url, pids, 32, args.seconds)
            rounds.append((theirs, ours))
            line = f"round {number}: Ladle {ours.sentences_per_s:6.1f} sentences/s"
            if theirs:
                ratio = ours.sentences_per_s / theirs.sentences_per_s
                line += f"   infinity-emb {theirs.sentences_per_s:6.1f}   x{ratio:.2f}"
            print(line, flush=True)
        # The same texts in fewer, larger requests: what the per-request cost is.
        ladle4x8 = measured(url, pids, 4, args.seconds, texts=8)

    def row(name: str, loads: list[Load]) -> str:
        rates = [load.sentences_per_s for load in loads]
        rate = statistics.median(rates)
        cpu = statistics.median(load.cpu_ms_per_sentence for load in loads)
        spread = f" ({min(rates):.0f}-{max(rates):.0f})" if len(rates) > 1 else ""
        cpu_text = f"   {cpu:5.2f} ms CPU/sentence" if cpu else ""
        return f"{name:37}{rate:8.1f} sentences/s{spread}{cpu_text}"

    ladle32 = [ours for _, ours in rounds]
    print("all-MiniLM-L6-v2 int8, ~20-word sentences (CPU: the server's processes, Redis included)")
    print(f"{'raw onnxruntime, batch 32':37}{raw32:8.1f} sentences/s")
    print(f"{'raw onnxruntime, batch 1':37}{raw1:8.1f} sentences/s")
    if peer:
        print(row("infinity-emb, 32 single-text clients", [theirs for theirs, _ in rounds if theirs]))
    else:
        print(
            f"{'infinity-emb, 32 single-text clients':37}  skipped: no infinity-emb in {infinity_venv()} "
            "(run bash bench/install_infinity.sh)"
        )
    print(row("Ladle, 32 single-text clients", ladle32))
    print(row("Ladle, 4 clients x 8 texts", [ladle4x8]))
    rate32 = statistics.median(load.sentences_per_s for load in ladle32)
    print(f"Ladle/raw batch 32: x{rate32 / raw32:.2f}   Ladle/raw batch 1: x{rate32 / raw1:.2f}")
    if peer:
        ratios = [ours.sentences_per_s / theirs.sentences_per_s for theirs, ours in rounds if theirs]
        cpu_ratios = [
            ours.cpu_ms_per_sentence / theirs.cpu_ms_per_sentence
            for theirs, ours in rounds
            if theirs and theirs.cpu_ms_per_sentence
        ]
        cpu_text = f", x{statistics.median(cpu_ratios):.2f} CPU per sentence" if cpu_ratios else ""
        print(
            f"Ladle/infinity-emb, 32 single-text clients: x{statistics.median(ratios):.2f} sentences/s "
            f"(median of {len(ratios)} rounds: {' '.join(f'x{r:.2f}' for r in ratios)}){cpu_text}"
        )
    print(f"Ladle 4 clients x 8 texts/raw batch 32: x{ladle4x8.sentences_per_s / raw32:.2f}")


if __name__ == "__main__":
    main()
