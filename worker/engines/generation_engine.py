"""The decode loop of one loaded model: concurrent requests are decoded together in batches.

One thread per model gathers waiting requests whose search options agree into a batch (up to
`max_batch_rows` sequences) and steps one batched onnxruntime-genai Generator for all of them.
Rows finish on their own (eos, stop string, max_tokens, cancellation); the batch ends when all
have finished.

The Generator itself only ever picks greedily. A row that samples, or has penalties or logit biases,
or a grammar (structured output, tool calls), is steered by Ladle, with the same RowSampler and
llguidance matchers as the continuous engine (worker/engines/sampling.py, token_grammar.py): each
step while such a row is generating, the step's logits are read back (`get_logits`), a constrained
row's forbidden tokens are set to -inf, a sampling row's pick (its own seed, its own penalties)
becomes the only token left, and they are written back (`set_logits`) before the Generator's
greedy choice; plain greedy rows' logits go back unchanged. So any requests share a batch, and no
row's output depends on its neighbours. A row whose grammar is complete ends at once (the
Generator keeps decoding it; its tokens are ignored).

On the CPU, where onnxruntime rounds a one-row step differently from wider ones (AVX2), a lone
row is decoded beside an idle one (`min_rows`), so it answers as it would in a crowd.

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
from worker.engines.sampling import RowSampler, allow_only
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
        search_defaults: dict | None = None,
        min_rows: int = 1,
        min_length: int = 0,
    ) -> None:
        self.model = model
        self.min_length = min_length
        self.search_defaults = search_defaults or {}
        self.min_rows = min_rows
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
                if rows + request.rows <= self.max_batch_rows:
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
        samplers = [RowSampler(row.request.sampling, self.search_defaults, row.index, row.prompt) for row in rows]
        grammars = self._row_grammars(rows)
        width = max(len(rows), self.min_rows)  # idle rows beside a lone one
        generator = og.Generator(self.model, self._params(batch, rows, width))
        generator.append_tokens(self._input_ids(rows, width))
        while not self._all_done(batch, rows):
            steered = [
                i
                for i, row in enumerate(rows)
                if not row.finish_reason and (grammars[i] is not None or not samplers[i].plain)
            ]
            if steered:
                self._steer(generator, steered, grammars, samplers)
            generator.generate_next_token()
            tokens = generator.get_next_tokens().tolist()[: len(rows)]
            with coalesced_events():  # all rows' tokens of the step in one Redis write
                for row, grammar, sampler, token in zip(rows, grammars, samplers, tokens, strict=True):
                    closes = False
                    if not row.finish_reason:
                        sampler.observe(token)
                        if grammar is not None and token not in self.eos_ids:
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

    def _steer(
        self,
        generator: og.Generator,
        steered: list[int],
        grammars: list[RowGrammar | None],
        samplers: list[RowSampler],
    ) -> None:
        """Leave in the step's logits only what each steered row may take: its grammar's tokens, or
        the one token its sampler picked (the Generator's greedy choice then takes it)."""
        logits = generator.get_logits()  # (rows, 1, vocab), a copy on the host
        for index in steered:
            grammar, row_logits = grammars[index], logits[index, -1]
            allowed = row_logits if grammar is None else allow_only(row_logits, grammar.allowed(index))
            if samplers[index].plain:
                logits[index, -1] = allowed
            else:
                token = samplers[index].pick(allowed.astype(np.float32))
                logits[index, -1] = -np.inf
                logits[index, -1, token] = 0
        generator.set_logits(logits)

    def _params(self, batch: list[GenerationRequest], rows: list[Row], width: int) -> og.GeneratorParams:
        longest_prompt = max(len(row.prompt) for row in rows)
        # Rows end at their own max_tokens; a windowed cache must hold its whole window however short they are.
        max_length = max(longest_prompt + max(r.max_tokens for r in batch), self.min_length)
        params = og.GeneratorParams(self.model)
        params.set_search_options(batch_size=width, max_length=max_length, do_sample=False)
        return params

    def _input_ids(self, rows: list[Row], width: int) -> np.ndarray:
        """Prompts of all rows, right-padded with the pad token (as `encode_batch` does), then idle
        rows up to `width`: copies of the first prompt (windowed attention refuses a shorter row)."""
        longest = max(len(row.prompt) for row in rows)
        ids = np.full((width, longest), self.pad_id, dtype=np.int32)
        for i, row in enumerate(rows):
            ids[i, : len(row.prompt)] = row.prompt
        ids[len(rows) :, : len(rows[0].prompt)] = rows[0].prompt
        return ids if width > 1 else ids[0]

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


def generator_min_length(genai: dict) -> int:
    """The shortest `max_length` onnxruntime-genai's Generator takes for the model (`genai`: its
    genai_config): a windowed key/value cache must hold its whole window (it refuses a batch whose
    prompt and max_tokens are shorter, "KV cache capacity ... must be at least local_window_size")."""
    window = int(genai["model"]["decoder"].get("sliding_window", {}).get("window_size", 0))
    return min(int(genai["model"]["context_length"]), window + 8) if window else 0


def smallest_invariant_batch(model: og.Model, special_ids: frozenset[int], genai: dict) -> int:
    """The fewest rows a Generator must run for a row's logits to be those it gets in any wider
    batch: 2 where one row takes other kernels (onnxruntime's MatMulNBits on AVX2 CPUs), else 1.
    Found by running one decode step of a short probe prompt (no pad or end-of-text token, which
    the Generator masks) alone and beside a copy of itself; `genai` is the model's genai_config."""
    probe = [token for token in range(3, 200, 7) if token not in special_ids][:5]
    max_length = max(16, generator_min_length(genai))

    def decode_step_logits(batch_size: int) -> np.ndarray:
        params = og.GeneratorParams(model)
        params.set_search_options(batch_size=batch_size, max_length=max_length, do_sample=False)
        generator = og.Generator(model, params)
        prompt = np.array([probe] * batch_size, dtype=np.int32)
        generator.append_tokens(prompt if batch_size > 1 else prompt[0])
        generator.generate_next_token()
        return np.array(generator.get_logits()[0, -1], dtype=np.float32)

    return 1 if np.array_equal(decode_step_logits(1), decode_step_logits(2)) else 2
