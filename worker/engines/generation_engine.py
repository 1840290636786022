"""The decode loop of one loaded model: concurrent requests are decoded together in batches.

One thread per model gathers waiting requests whose search options agree into a batch (up to
`max_batch_rows` sequences) and steps one batched onnxruntime-genai Generator for all of them.
Rows finish on their own (eos, stop string, max_tokens, cancellation); the batch ends when all
have finished.

Structured output and tool calls: a row with a grammar is constrained by Ladle itself, with the
same llguidance grammars and matchers as the continuous engine (worker/engines/token_grammar.py).
Each step, while a constrained row is still generating, the step's logits are read back
(`get_logits`), every constrained row's forbidden tokens are set to -inf, and they are written
back (`set_logits`) before the Generator samples; free rows' logits go back unchanged, so their
output does not depend on their neighbours. A row whose grammar is complete ends at once (the
Generator keeps decoding it; its tokens are ignored).

onnxruntime-genai's own guidance (`GeneratorParams.set_guidance`) is not used: in 0.18 it takes
one grammar for the whole batch in its own format (not the llguidance grammars the API builds and
checks), ignores the JSON schema's `whitespace_pattern` (so a small model can pad its way to
max_tokens), and with more than one row it fails the batch ("compute_mask() called after stop")
once one row's grammar has stopped.

Measured on CPU only (tests/test_decode_engines.py, tests/test_generator_fallback.py): on CUDA the
logits copy to the host and back each constrained step, fp16 logits (masked in fp16 here) and
CUDA's samplers over the masked logits have not been measured or tested.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import onnxruntime_genai as og

from worker.engines.generation_request import GenerationRequest, Row, complete
from worker.engines.sampling import allow_only
from worker.engines.token_grammar import GrammarTokenizer, RowGrammar
from worker.errors import JobRejected, model_unloaded
from worker.runtime.drain import HandedBack
from worker.runtime.event_publisher import coalesced_events

log = logging.getLogger(__name__)


class StaticBatchEngine:
    """Owns one model's decode loop thread; `submit` hands it a prepared request."""

    # The Generator samples inside onnxruntime-genai; logits are read back only to constrain rows.
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
        grammar_tokenizer: Callable[[], GrammarTokenizer] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.max_batch_rows = max_batch_rows
        self.batch_window_s = batch_window_s
        self.name = name
        self._grammar_tokenizer = grammar_tokenizer
        self._grammar_tokens: GrammarTokenizer | None = None  # built at the first constrained request
        self._table_lock = threading.Lock()
        self._pending: deque[GenerationRequest] = deque()
        self._running: list[GenerationRequest] = []
        self._wakeup = threading.Condition()
        self._stopping = False
        self._draining = False
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest) -> None:
        if request.grammar is not None:
            param = "tools" if request.tool_calls else "response_format"
            if self._grammar_tokenizer is None:  # an engine built without the model's tokenizer.json
                reason = "was loaded without a grammar tokenizer: it cannot constrain output"
                raise JobRejected.invalid(param, f"The model '{self.name}' {reason}.")
            try:
                self._grammar_tokens_for_rows()  # built here, in the job's thread, not in the decode loop
            except (OSError, ValueError, RuntimeError) as why:  # a tokenizer.json llguidance cannot read
                raise JobRejected.invalid(param, f"The model '{self.name}' cannot constrain output: {why}") from None
        with self._wakeup:
            if self._stopping:
                raise model_unloaded(self.name)
            running = next((r for r in (*self._running, *self._pending) if r.job_id == request.job_id), None)
            if running is not None:
                # A second delivery of a job this engine runs: decoding it again would send every
                # token twice on the job's stream. It ends as the running one ends.
                log.warning("job submitted again while it runs; it joins it", extra={"job_id": request.job_id})
                threading.Thread(target=_follow, args=(running, request), name="engine-join", daemon=True).start()
                return
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

    def _grammar_tokens_for_rows(self) -> GrammarTokenizer:
        """The vocabulary as llguidance sees it, built at the first constrained request."""
        with self._table_lock:
            if self._grammar_tokens is None:
                self._grammar_tokens = self._grammar_tokenizer()
            return self._grammar_tokens

    def _decode(self, batch: list[GenerationRequest]) -> None:
        rows = [Row(r, i, self.tokenizer.create_stream(), self.eos_ids) for r in batch for i in range(r.rows)]
        grammars = self._row_grammars(rows)
        generator = og.Generator(self.model, self._params(batch, rows))
        generator.append_tokens(self._input_ids(rows))
        while not self._all_done(batch, rows):
            if any(g is not None and not row.finish_reason for row, g in zip(rows, grammars, strict=True)):
                self._constrain(generator, rows, grammars)
            generator.generate_next_token()
            with coalesced_events():  # all rows' tokens of the step in one Redis write
                for row, grammar, token in zip(rows, grammars, generator.get_next_tokens().tolist(), strict=True):
                    closes = False
                    if grammar is not None and not row.finish_reason and token not in self.eos_ids:
                        grammar.advance(token)
                        closes = grammar.complete  # nothing may follow: end now rather than sample end-of-text
                    row.accept(token, closes=closes)
                if generator.is_done():
                    for row in rows:
                        row.finish("length")
        for request in batch:
            complete(request, [row for row in rows if row.request is request], len(rows))

    def _row_grammars(self, rows: list[Row]) -> list[RowGrammar | None]:
        """A matcher for each constrained row (None for free rows), with a mask buffer row for each row."""
        if all(row.request.grammar is None for row in rows):
            return [None] * len(rows)
        tokens = self._grammar_tokens_for_rows()
        tokens.reserve(len(rows))
        return [tokens.row(row.request.grammar) if row.request.grammar else None for row in rows]

    def _constrain(self, generator: og.Generator, rows: list[Row], grammars: list[RowGrammar | None]) -> None:
        """Set what each generating constrained row's grammar forbids next to -inf in the step's logits."""
        logits = generator.get_logits()  # (rows, 1, vocab), a copy on the host
        for index, (row, grammar) in enumerate(zip(rows, grammars, strict=True)):
            if grammar is not None and not row.finish_reason:
                logits[index, -1] = allow_only(logits[index, -1], grammar.allowed(index))
        generator.set_logits(logits)

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


def _follow(running: GenerationRequest, joined: GenerationRequest) -> None:
    """End `joined` with `running`'s result or error; a cancel of either cancels both."""
    while not running.finished.wait(0.05):
        if joined.cancelled.is_set():
            running.cancelled.set()
    joined.result, joined.error = running.result, running.error
    joined.finished.set()
