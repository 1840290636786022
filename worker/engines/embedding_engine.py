"""An encoder model with micro-batching: texts from concurrent requests share one onnxruntime call.

Requests wait up to `window_s` for company, up to `max_batch` texts a call; mean pooling over
the attention mask, then L2 normalisation. Padding is masked, so a text's vector is the same
(to float tolerance) whether it ran alone or in a batch.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from worker.errors import model_unloaded

log = logging.getLogger(__name__)


class EmbeddingEngine:
    """Embeds lists of texts; `embed` blocks until this engine's thread has run them."""

    def __init__(self, folder: Path, config: dict, max_batch: int, window_s: float, intra_op_threads: int = 0) -> None:
        self.config = config
        self.max_batch = max_batch
        self.window_s = window_s
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        # Idle intra-op threads sleep instead of spinning: between batches the cores go to the
        # API, Redis and the tokenizer of the next batch, which share the host with this worker.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(folder / config["model_file"]), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(int(config["max_input_tokens"]))
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))
        self._queue: queue.Queue[tuple[list[str], Future] | None] = queue.Queue()
        self._busy = False
        self._stopped = False
        self.name = folder.name
        self._thread = threading.Thread(target=self._run, name="embedding-engine", daemon=True)
        self._thread.start()

    def embed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
        """Unit vectors for `texts`, how many tokens each had, and how many texts shared the call."""
        if self._stopped:
            raise model_unloaded(self.name)
        done: Future = Future()
        self._queue.put((texts, done))
        return done.result()

    @property
    def idle(self) -> bool:
        return self._queue.empty() and not self._busy

    def stop(self, cancel_running: bool = False) -> None:
        """Stop after the texts already queued (embedding calls are short; nothing is cut off)."""
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout=30)
        while not self._queue.empty():  # arrived after the stop: fail rather than hang
            item = self._queue.get_nowait()
            if item is not None:
                item[1].set_exception(model_unloaded(self.name))

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            self._busy = True
            batch, size = [first], len(first[0])
            while size < self.max_batch:
                try:
                    item = self._queue.get(timeout=self.window_s)
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
                size += len(item[0])
            self._run_batch(batch)
            self._busy = False

    def _run_batch(self, batch: list[tuple[list[str], Future]]) -> None:
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

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        unit = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return unit, mask.sum(axis=1)
