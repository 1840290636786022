"""An encoder model with micro-batching: texts from concurrent requests share one onnxruntime call.

Requests arrive gathered already (the API bundles those sent together); a runner thread takes
what is waiting, up to its share of `max_batch` texts, and runs it in one call: mean pooling
over the attention mask, then L2 normalisation. Padding is masked, so a text's vector is the
same (to float tolerance) whether it ran alone or in a batch.

By default there is one runner per core (up to MAX_DEFAULT_RUNNERS), each calling the shared
session on its own share of the cores, and a request larger than a runner's share is split
between them. On 2 cores with MiniLM, one call over both cores kept them ~1.45 busy (a call
waits at each operator for its slower thread, and the API, Redis and the tokenizer take the
cores in between); two single-threaded runners left 2-5% of the machine idle instead of 6-9%.
One runner over all the cores (LADLE_EMBEDDING_RUNNERS=1) answers a lone text soonest.

An input is a text or token ids of the model's own tokenizer (OpenAI's token-array input). Ids are
embedded as given, never decoded and re-encoded, inside the special tokens the tokenizer's
post-processor puts around a text's ids ([CLS] ... [SEP] for BERT models): so the ids the tokenizer
gives a text without its special tokens (`add_special_tokens=False`, as tiktoken-style clients send)
embed exactly as the text does. Ids that already start and end with those tokens are taken as they
are (a tokenizer called with its defaults). Ids are truncated as a text's are, to max_input_tokens
special tokens included; every row is padded to the batch's longest with the pad token, masked.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from worker.errors import model_unloaded

log = logging.getLogger(__name__)


# Runners by default: one per core, at most this many (more would leave each too few texts a call).
MAX_DEFAULT_RUNNERS = 4


def runner_shape(runners: int, intra_op_threads: int, cores: int | None = None) -> tuple[int, int]:
    """How many runner threads (0 or less: one per core, up to MAX_DEFAULT_RUNNERS), and how many
    intra-op threads each call gets (0: the cores shared out between the runners)."""
    cores = cores or os.cpu_count() or 1
    runners = runners if runners > 0 else min(cores, MAX_DEFAULT_RUNNERS)
    threads = intra_op_threads if intra_op_threads > 0 else max(1, cores // runners)
    return runners, threads


# Graph rewrites onnxruntime applies by default that make an encoder slower on CPU. Its fused
# SkipLayerNormalization ran 4x slower than the Add and LayerNormalization it replaces (onnxruntime
# 1.32, 416 rows of 384 to 1,024 values, one thread), which made all-MiniLM-L6-v2 at batch 16 take
# ~13% longer a sentence; without the fusion the vectors differ by float rounding only (~2e-7).
SLOW_CPU_FUSIONS = ("SkipLayerNormFusion",)


# A text input, or the token ids of one input.
EmbeddingInput = str | list[int]


def special_tokens(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer's post-processor puts before and after a text's own ids."""
    probe = "a"  # any text with tokens of its own: where they sit in the full encoding splits the rest
    bare = tokenizer.encode(probe, add_special_tokens=False).ids
    full = tokenizer.encode(probe).ids
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    return [], []


def encoder_session(model_path: Path, intra_op_threads: int) -> ort.InferenceSession:
    """An onnxruntime CPU session for an encoder, as the engine runs it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    # Idle intra-op threads sleep instead of spinning: between batches the cores go to the
    # API, Redis and the tokenizer of the next batch, which share the host with this worker.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        str(model_path), options, providers=["CPUExecutionProvider"], disabled_optimizers=list(SLOW_CPU_FUSIONS)
    )


class EmbeddingEngine:
    """Embeds lists of texts; `embed` blocks until this engine's thread has run them."""

    def __init__(
        self,
        folder: Path,
        config: dict,
        max_batch: int,
        intra_op_threads: int = 0,
        runners: int = 0,
    ) -> None:
        self.config = config
        self.runners, threads = runner_shape(runners, intra_op_threads)
        # Most texts one call takes: each runner's share, so that waiting texts spread over them.
        self.call_limit = max(1, -(-max_batch // self.runners))
        self.session = encoder_session(folder / config["model_file"], threads)
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.max_input_tokens = int(config["max_input_tokens"])
        self.pad_id = int(config.get("pad_token_id", 0))
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_input_tokens)
        self.tokenizer.no_padding()  # rows are padded in `_encode`, texts and token ids alike
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self._prefix, self._suffix = special_tokens(self.tokenizer)
        self._queue: queue.Queue[tuple[list[EmbeddingInput], Future] | None] = queue.Queue()
        self._busy = 0  # runners inside a batch
        self._busy_lock = threading.Lock()
        self._stopped = False
        self.name = folder.name
        self._threads = [
            threading.Thread(target=self._run, name=f"embedding-runner-{i}", daemon=True) for i in range(self.runners)
        ]
        for thread in self._threads:
            thread.start()
        log.info(
            "embedding engine started",
            extra={
                "model": self.name,
                "runners": self.runners,
                "intra_op_threads": threads,
                "call_limit": self.call_limit,
            },
        )

    def embed(self, inputs: list[EmbeddingInput]) -> tuple[np.ndarray, np.ndarray, int]:
        """Unit vectors for `inputs` (texts or token ids), how many tokens each had, and how many
        inputs shared the call (the largest, when the inputs were split over several calls)."""
        if self._stopped:
            raise model_unloaded(self.name)
        limit = self.call_limit
        calls = []
        for start in range(0, max(len(inputs), 1), limit):
            done: Future = Future()
            self._queue.put((inputs[start : start + limit], done))
            calls.append(done)
        results = [done.result() for done in calls]
        if len(results) == 1:
            return results[0]
        vectors, token_counts, shared = zip(*results, strict=True)
        return np.concatenate(vectors), np.concatenate(token_counts), max(shared)

    @property
    def idle(self) -> bool:
        return self._queue.empty() and self._busy == 0

    def stop(self, cancel_running: bool = False) -> None:
        """Stop after the texts already queued (embedding calls are short; nothing is cut off)."""
        self._stopped = True
        self._queue.put(None)  # each runner passes it on before leaving
        for thread in self._threads:
            thread.join(timeout=30)
        while not self._queue.empty():  # arrived after the stop: fail rather than hang
            item = self._queue.get_nowait()
            if item is not None:
                item[1].set_exception(model_unloaded(self.name))
        if any(thread.is_alive() for thread in self._threads):
            self._queue.put(None)  # a runner that outlived its join still finds the way out

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.put(None)
                return
            with self._busy_lock:
                self._busy += 1
            batch, size = [first], len(first[0])
            while size < self.call_limit:  # what is waiting joins, up to this runner's share
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
                size += len(item[0])
            try:
                self._run_batch(batch)
            finally:
                with self._busy_lock:
                    self._busy -= 1

    def _run_batch(self, batch: list[tuple[list[EmbeddingInput], Future]]) -> None:
        texts = [text for texts, _ in batch for text in texts]
        try:
            vectors, token_counts = self._encode(texts)
        except Exception as error:
            log.exception("embedding batch failed")
            for _, done in batch:
                done.set_exception(error)
            return
        start = 0
        for request_texts, done in batch:
            end = start + len(request_texts)
            done.set_result((vectors[start:end], token_counts[start:end], len(texts)))
            start = end

    def token_row(self, ids: list[int]) -> list[int]:
        """Token ids as the model reads them: inside the special tokens, truncated as a text is."""
        prefix, suffix = self._prefix, self._suffix
        wrapped = (prefix or suffix) and len(ids) >= len(prefix) + len(suffix)
        if wrapped and ids[: len(prefix)] == prefix and ids[len(ids) - len(suffix) :] == suffix:
            ids = ids[len(prefix) : len(ids) - len(suffix)]
        room = max(0, self.max_input_tokens - len(prefix) - len(suffix))
        return [*prefix, *ids[:room], *suffix]

    def _rows(self, inputs: list[EmbeddingInput]) -> list[list[int]]:
        """Each input's ids, unpadded: texts through the tokenizer (one call for all), ids wrapped."""
        texts = [text for text in inputs if isinstance(text, str)]
        encoded = iter(self.tokenizer.encode_batch(texts) if texts else [])
        return [next(encoded).ids if isinstance(item, str) else self.token_row(item) for item in inputs]

    def _encode(self, inputs: list[EmbeddingInput]) -> tuple[np.ndarray, np.ndarray]:
        rows = self._rows(inputs)
        width = max((len(row) for row in rows), default=0)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        unit = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return unit, mask.sum(axis=1)
