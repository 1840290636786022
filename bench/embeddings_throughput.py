"""Embeddings through Ladle with 32 concurrent single-text clients vs raw onnxruntime at batch 32.

    python bench/embeddings_throughput.py [--seconds 10]

Both sides embed the same ~20-word sentences with all-MiniLM-L6-v2 (int8 ONNX) in one run; the
ratio shows how close micro-batching of single-text requests gets to the raw batch ceiling.
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import onnxruntime as ort
import requests
from ladle_process import ladle_serve
from tokenizers import Tokenizer

from contracts.settings import Settings
from worker.model_build import MINILM, build_model

WORDS = "the quick brown fox jumps over a lazy dog while seven curious birds watch from an old oak tree".split()


def sentence(i: int) -> str:
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(20)) + f" {i}"


def raw_sentences_per_s(folder, batch: int, seconds: float) -> float:
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
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


def ladle_sentences_per_s(url: str, clients: int, seconds: float, texts: int = 1) -> float:
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
            connection.request("POST", "/v1/embeddings", json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"embeddings request failed: HTTP {response.status}")
            count += texts
        connection.close()
        return count

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        total = sum(pool.map(client, range(clients)))
    return total / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--model-dir", type=Path, default=Settings.from_env().model_dir)
    args = parser.parse_args()
    folder = build_model(MINILM, args.model_dir)
    raw32 = raw_sentences_per_s(folder, 32, args.seconds)
    raw1 = raw_sentences_per_s(folder, 1, args.seconds)

    def ready(url: str) -> None:
        requests.post(f"{url}/v1/embeddings", json={"model": MINILM, "input": "warm up"}, timeout=30).raise_for_status()

    with ladle_serve(args.model_dir, ready) as (url, _):
        ladle32 = ladle_sentences_per_s(url, 32, args.seconds)
        # The same texts in fewer, larger requests: what the per-request cost is.
        ladle4x8 = ladle_sentences_per_s(url, 4, args.seconds, texts=8)
    print("all-MiniLM-L6-v2 int8, ~20-word sentences")
    print(f"raw onnxruntime, batch 32         {raw32:8.1f} sentences/s")
    print(f"raw onnxruntime, batch 1          {raw1:8.1f} sentences/s")
    print(f"Ladle, 32 single-text clients     {ladle32:8.1f} sentences/s")
    print(f"Ladle, 4 clients x 8 texts        {ladle4x8:8.1f} sentences/s")
    print(f"Ladle/raw batch 32: x{ladle32 / raw32:.2f}   Ladle/raw batch 1: x{ladle32 / raw1:.2f}")
    print(f"Ladle 4 clients x 8 texts/raw batch 32: x{ladle4x8 / raw32:.2f}")


if __name__ == "__main__":
    main()
