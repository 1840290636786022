"""The decode loop of one loaded model: concurrent requests are decoded together in batches.

One thread per model gathers waiting requests whose search options agree into a batch (up to
`max_batch_rows` sequences) and steps one batched onnxruntime-genai Generator for all of them.
Rows finish on their own (eos, stop string, max_tokens, cancellation); the batch ends when all
have finished.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np
import onnxruntime_genai as og

from worker.engines.generation_request import GenerationRequest, Row, complete
from worker.errors import JobRejected, model_unloaded
from worker.runtime.drain import HandedBack
from worker.runtime.event_publisher import coalesced_events

log = logging.getLogger(__name__)


class StaticBatchEngine:
    """Owns one model's decode loop thread; `submit` hands it a prepared request."""

    # The Generator samples inside onnxruntime-genai; this engine does not read its logits back.
    supports_logprobs = False

    def __init__(
        self,
        model: og.Model,
        tokenizer: og.Tokenizer,
        eos_ids: frozenset[int],
        pad_id: int,
        max_batch_rows: int,
        batch_window_s: float,
        name: str,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.max_batch_rows = max_batch_rows
        self.batch_window_s = batch_window_s
        self.name = name
        self._pending: deque[GenerationRequest] = deque()
        self._running: list[GenerationRequest] = []
        self._wakeup = threading.Condition()
        self._stopping = False
        self._draining = False
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest) -> None:
        if request.grammar is not None:
            # onnxruntime-genai has guidance of its own, not wired to Ladle's grammars yet.
            raise JobRejected.invalid(
                "response_format" if request.tool_calls is None else "tools",
                "Structured output and tool calls are served by the continuous-batching engine only; this model "
                "runs on onnxruntime-genai's Generator (a GPU worker, or a graph that engine cannot drive).",
            )
        with self._wakeup:
            if self._stopping:
                raise model_unloaded(self.name)
            if self._draining:
                raise HandedBack(request.job_id)
            self._pending.append(request)
            self._wakeup.notify()

    @property
    def idle(self) -> bool:
        with self._wakeup:
            return not self._pending and not self._running

    def hand_back_waiting(self) -> None:
        """The worker is stopping: requests not in a batch yet fail with HandedBack, and so do new ones."""
        with self._wakeup:
            self._draining = True
            while self._pending:
                request = self._pending.popleft()
                request.fail(HandedBack(request.job_id))

    def stats(self) -> dict:
        """Rows decoding now (onnxruntime-genai owns this engine's key/value cache), for the heartbeat."""
        rows = sum(request.rows for request in list(self._running))
        return {"rows_in_use": rows, "kv_slots": self.max_batch_rows, "kv_slots_in_use": rows}

    def stop(self, cancel_running: bool = False) -> None:
        """Stop the loop; waiting requests fail (model unloaded), running ones finish or are cancelled."""
        with self._wakeup:
            self._stopping = True
            if cancel_running:
                for request in self._running:
                    request.cancelled.set()
            self._wakeup.notify()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._pending and not self._stopping:
                    self._wakeup.wait()
                if self._stopping:
                    while self._pending:
                        self._pending.popleft().fail(model_unloaded(self.name))
                    return
            time.sleep(self.batch_window_s)  # let requests that arrive together share the batch
            batch = self._take_batch()
            try:
                self._decode(batch)
            except Exception as error:  # the engine must outlive one bad batch
                log.exception("batch failed", extra={"jobs": [r.job_id for r in batch]})
                for request in batch:
                    if not request.finished.is_set():
                        request.fail(error)
            finally:
                with self._wakeup:
                    self._running = []

    def _take_batch(self) -> list[GenerationRequest]:
        with self._wakeup:
            head = self._pending.popleft()
            batch, rows = [head], head.rows
            for request in list(self._pending):
                if request.batch_key() == head.batch_key() and rows + request.rows <= self.max_batch_rows:
                    self._pending.remove(request)
                    batch.append(request)
                    rows += request.rows
            self._running = batch
            return batch

    def _decode(self, batch: list[GenerationRequest]) -> None:
        rows = [Row(r, i, self.tokenizer.create_stream(), self.eos_ids) for r in batch for i in range(r.rows)]
        generator = og.Generator(self.model, self._params(batch, rows))
        generator.append_tokens(self._input_ids(rows))
        while not self._all_done(batch, rows):
            generator.generate_next_token()
            with coalesced_events():  # all rows' tokens of the step in one Redis write
                for row, token in zip(rows, generator.get_next_tokens().tolist(), strict=True):
                    row.accept(token)
                if generator.is_done():
                    for row in rows:
                        row.finish("length")
        for request in batch:
            complete(request, [row for row in rows if row.request is request], len(rows))

    def _params(self, batch: list[GenerationRequest], rows: list[Row]) -> og.GeneratorParams:
        longest_prompt = max(len(row.prompt) for row in rows)
        options: dict = {"batch_size": len(rows), "max_length": longest_prompt + max(r.max_tokens for r in batch)}
        sampling = batch[0].sampling
        if sampling.temperature == 0:
            options["do_sample"] = False
        elif sampling.temperature is not None or sampling.top_p is not None or sampling.top_k is not None:
            options["do_sample"] = True
        for name in ("temperature", "top_p", "top_k"):
            value = getattr(sampling, name)
            if value is not None and not (name == "temperature" and value == 0):
                options[name] = value
        if sampling.seed is not None:
            # onnxruntime-genai takes a 32-bit seed; wider ones wrap (int32 seeds pass unchanged).
            options["random_seed"] = (sampling.seed + 2**31) % 2**32 - 2**31
        params = og.GeneratorParams(self.model)
        params.set_search_options(**options)
        return params

    def _input_ids(self, rows: list[Row]) -> np.ndarray:
        """Prompts of all rows, right-padded with the pad token (as `encode_batch` does)."""
        width = max(len(row.prompt) for row in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int32)
        for i, row in enumerate(rows):
            ids[i, : len(row.prompt)] = row.prompt
        return ids if len(rows) > 1 else ids[0]

    @staticmethod
    def _all_done(batch: list[GenerationRequest], rows: list[Row]) -> bool:
        for row in rows:
            if row.request.cancelled.is_set():
                row.finish("cancelled")
        return all(row.finish_reason for row in rows)
