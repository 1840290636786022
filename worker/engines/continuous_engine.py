"""Continuous batching on CPU: rows join the running batch at the next step and leave when done.

One thread per model owns an OnnxDecoder whose cache has `max_rows` slots. Each request becomes
rows (one per prompt and choice), queued until a slot is free. Every turn of the loop:
cancelled rows leave at once; rows still reading their prompts read up to `prefill_chunk`
tokens of them, oldest first (so a long prompt is read in chunks and never stalls running rows
for long), and a row whose prompt is read sends its first token at once (its own Redis write, not
held for the rest of the chunk); then one batched step advances every row that is generating, its
tokens in one write. Each row keeps its own sampling options, seed,
stop strings and max tokens; a finished row frees its slot for the next waiting row (interactive
rows before batch lines' rows, unless one of those has waited BACKGROUND_AGING_S).

Rows that ask for logprobs get them from the logits of their own step (worker/engines/token_logprobs.py);
a row that asks for its prompt's reads the prompt with logits for every position, and without the
prefix cache (whose positions would have no logits).

A row with a grammar (structured output, tool calls) samples only among the tokens its grammar
allows next (worker/engines/token_grammar.py); its logprobs stay those of the raw logits, and its
neighbours in the batch are untouched.

A row's answer does not depend on what runs beside it: its prompt is read in the same runs
whatever the crowd (PREFILL_BLOCK), its sampler has its own seed, and a decode step computes each
row's logits alike at any width of at least `min_width` rows (2 where onnxruntime has a kernel of
its own for a single row; a lone row then decodes beside an idle slot).

A job submitted again while it runs (its message delivered again: the broker's lease ran out,
or the message was requeued) joins the running request rather than decoding twice: it ends with
that request's outcome, so its delivery stays unacknowledged until the job is really done.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from worker.engines.generation_request import GenerationRequest, Row, complete
from worker.engines.sampling import RowSampler, allow_only
from worker.engines.token_grammar import GrammarTokenizer, RowGrammar
from worker.engines.token_logprobs import TokenLogprobs
from worker.errors import model_unloaded
from worker.onnx.onnx_decoder import OnnxDecoder
from worker.onnx.prefix_cache import PrefixCache
from worker.runtime.drain import HandedBack
from worker.runtime.event_publisher import coalesced_events

log = logging.getLogger(__name__)

# Prompts are read in runs of this many tokens; the prefix cache reuses whole runs.
PREFILL_BLOCK = 32
# A batch line's row waiting this long for a slot goes before interactive rows (no starvation).
BACKGROUND_AGING_S = 5.0


@dataclass
class _RowState:
    row: Row
    sampler: RowSampler
    order: int  # admission order: the oldest prefilling row goes first
    queued_at: float = field(default_factory=time.monotonic)
    filled: int = 0  # prompt tokens in the cache
    reused: int = 0  # of which copied from the prefix cache
    next_token: int = 0  # sampled, fed at the next step
    prompt_logprobs: list = field(default_factory=list)  # of the prompt read so far, when asked
    grammar: RowGrammar | None = None  # the tokens it may choose, when constrained

    @property
    def prefilling(self) -> bool:
        return self.filled < len(self.row.prompt)


@dataclass
class _Tracked:
    request: GenerationRequest
    rows: list[_RowState]
    peak: int = 0  # most rows in flight together while this request ran
    started: bool = False
    done: set[int] = field(default_factory=set)
    # Later submits of the same job while it runs: they end as `request` ends.
    attached: list[GenerationRequest] = field(default_factory=list)

    def cancel_requested(self) -> bool:
        """Whether any of its submits was cancelled (then all of them are)."""
        requests = [self.request, *self.attached]
        if not any(r.cancelled.is_set() for r in requests):
            return False
        for r in requests:
            r.cancelled.set()
        return True

    def complete(self, batch_size: int, cached_tokens: int) -> None:
        """Build the result from the finished rows (its submits then get it with `share_result`)."""
        complete(self.request, [s.row for s in self.rows], batch_size, cached_tokens)

    def share_result(self) -> None:
        """Hand the result to the later submits (none can join any more)."""
        for other in self.attached:
            other.result = self.request.result
            other.finished.set()

    def fail(self, error: BaseException) -> None:
        for r in (self.request, *self.attached):
            if not r.finished.is_set():
                r.fail(error)


class ContinuousBatchEngine:
    """Same interface as StaticBatchEngine (`submit`, `idle`, `stop`), with continuous batching."""

    supports_logprobs = True

    def __init__(
        self,
        decoder: OnnxDecoder,
        tokenizer,
        eos_ids: frozenset[int],
        pad_id: int,
        search_defaults: dict,
        prefill_chunk: int,
        name: str,
        prefixes: PrefixCache | None = None,
        grammar_tokenizer: Callable[[], GrammarTokenizer] | None = None,
        min_width: int = 1,
    ) -> None:
        self.decoder = decoder
        # Fewest rows a decode step runs (padded with idle slots): see OnnxDecoder.smallest_invariant_width.
        self.min_width = min(min_width, decoder.cache.slots)
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.search_defaults = search_defaults
        self.prefill_chunk = prefill_chunk
        self.name = name
        self.prefixes = prefixes
        self._grammar_tokenizer = grammar_tokenizer
        self._grammar_tokens: GrammarTokenizer | None = None  # built at the first constrained request
        self._token_logprobs: TokenLogprobs | None = None  # built at the first request for logprobs
        self._table_lock = threading.Lock()
        self.slots: list[_RowState | None] = [None] * decoder.cache.slots
        self._pending: deque[_RowState] = deque()
        self._tracked: dict[str, _Tracked] = {}
        # Requests whose rows all ended this step, until their result is built after it: a submit of
        # the same job meanwhile joins them rather than decoding the job again.
        self._completing: dict[str, _Tracked] = {}
        self._order = itertools.count()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._draining = False
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest) -> None:
        if request.logprobs is not None:
            self._logprobs_table()  # built here, in the job's thread, rather than stalling every row's step
        rows = [
            _RowState(
                Row(request, index, self.tokenizer.create_stream(), self.eos_ids),
                RowSampler(request.sampling, self.search_defaults, index, request.prompts[index // request.n]),
                next(self._order),
                grammar=self._grammar_tokens_for_rows().row(request.grammar) if request.grammar else None,
            )
            for index in range(request.rows)
        ]
        with self._wakeup:
            if self._stopping:
                raise model_unloaded(self.name)
            running = self._tracked.get(request.job_id) or self._completing.get(request.job_id)
            if running is not None:
                # Replacing its tracking would orphan the running rows (their request never ends).
                log.warning(
                    "job submitted again while it runs; it joins the running one", extra={"job_id": request.job_id}
                )
                if request.cancelled.is_set():
                    running.request.cancelled.set()
                running.attached.append(request)
                return
            if self._draining:
                raise HandedBack(request.job_id)
            self._tracked[request.job_id] = _Tracked(request, rows)
            self._pending.extend(rows)
            self._wakeup.notify()

    @property
    def idle(self) -> bool:
        with self._wakeup:
            return not self._tracked

    def hand_back_waiting(self) -> None:
        """The worker is stopping: requests without a slot yet fail with HandedBack, and so do new ones."""
        with self._wakeup:
            self._draining = True
            for tracked in list(self._tracked.values()):
                if not tracked.started:
                    self._drop(tracked)
                    tracked.fail(HandedBack(tracked.request.job_id))

    def stats(self) -> dict:
        """Rows decoding now and the key/value cache's use, for the heartbeat (read without the lock)."""
        in_use = sum(slot is not None for slot in list(self.slots))
        return {
            "rows_in_use": in_use,
            "kv_slots": self.decoder.cache.slots,
            "kv_slots_in_use": in_use,
            "kv_bytes": sum(buffer.nbytes for buffer in list(self.decoder.cache.buffers.values())),
            "prefix_cache_hits": self.prefixes.hits if self.prefixes else 0,
            "prefix_cache_hit_tokens": self.prefixes.hit_tokens if self.prefixes else 0,
        }

    def stop(self, cancel_running: bool = False) -> None:
        """Stop: requests not started fail (model unloaded); started ones finish, or are cancelled."""
        with self._wakeup:
            self._stopping = True
            for tracked in list(self._tracked.values()):
                if not tracked.started:
                    self._drop(tracked)
                    tracked.fail(model_unloaded(self.name))
                elif cancel_running:
                    tracked.request.cancelled.set()  # (its attached submits follow at the next step)
            self._wakeup.notify()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._tracked and not self._stopping:
                    self._wakeup.wait()
                if not self._tracked:
                    return  # stopping, nothing left
                self._admit()
            try:
                # A decode step's events go out together (one Redis write for all its rows); a row's
                # first token goes out as soon as its prompt is read, before the next prompt's reading
                # and the decode step.
                self._in_one_write(self._leave_cancelled)
                self._prefill_next()
                self._in_one_write(self._step)
            except Exception as error:  # the engine outlives a failed step; its requests fail
                log.exception("decode step failed", extra={"jobs": list(self._tracked)})
                self._fail_all(error)
            if not any(self.slots):
                self.decoder.reset_cache()

    def _in_one_write(self, *parts: Callable[[], None]) -> None:
        """Run `parts`, queueing their events as one group; requests they finished complete after
        that, so a job's terminal event (queued by its runner once woken) follows its last tokens."""
        try:
            with coalesced_events():
                for part in parts:
                    part()
        finally:
            with self._wakeup:
                finished = list(self._completing.values())
            for tracked in finished:
                self._complete(tracked)

    def _complete(self, tracked: _Tracked) -> None:
        """Build the result of a request whose rows all ended, for it and every submit of its job since."""
        error = None
        try:
            cached = sum(s.reused for s in tracked.rows[:: tracked.request.n])  # once per prompt, as counted
            tracked.complete(max(tracked.peak, 1), cached)
        except Exception as failure:  # the rows' ending could not be turned into a result
            log.exception("request could not be completed", extra={"job_id": tracked.request.job_id})
            error = failure
        with self._wakeup:  # from here on, a submit of the job starts it anew
            self._completing.pop(tracked.request.job_id, None)
        if error is None:
            tracked.share_result()
        else:
            tracked.fail(error)

    def _admit(self) -> None:
        """Waiting rows take free slots, lowest first (so steps cover as few slots as possible)."""
        for index, slot in enumerate(self.slots):
            if slot is None and self._pending:
                state = self._next_waiting()
                self.slots[index] = state
                self._tracked[state.row.request.job_id].started = True
        in_flight = sum(slot is not None for slot in self.slots)
        for tracked in self._tracked.values():
            if any(s is not None and s.row.request is tracked.request for s in self.slots):
                tracked.peak = max(tracked.peak, in_flight)

    def _next_waiting(self) -> _RowState:
        """The waiting row to admit: the oldest interactive one before batch lines' rows, unless a
        batch row has waited BACKGROUND_AGING_S (then it goes first: batches never starve)."""
        now = time.monotonic()
        chosen = self._pending[0]
        for state in self._pending:
            if not state.row.request.background or now - state.queued_at > BACKGROUND_AGING_S:
                chosen = state
                break
        self._pending.remove(chosen)
        return chosen

    def _leave_cancelled(self) -> None:
        with self._wakeup:
            cancelled = [t for t in self._tracked.values() if t.cancel_requested()]
        for tracked in cancelled:
            for state in tracked.rows:
                state.row.finish("cancelled")
                self._row_done(state)

    def _prefill_next(self) -> None:
        """Read up to `prefill_chunk` prompt tokens, oldest rows first (several short prompts, or
        part of a long one), so decoding rows wait at most that long for their next step.

        Prompts are always read in runs of PREFILL_BLOCK tokens from the start (the last run may be
        shorter), whatever the budget and whatever the prefix cache held: the same prompt then
        always meets the same computations, so answers never depend on what ran beside them.
        """
        budget = max(self.prefill_chunk, PREFILL_BLOCK)
        waiting = sorted((s.order, i) for i, s in enumerate(self.slots) if s is not None and s.prefilling)
        for _, index in waiting:
            state = self.slots[index]
            prompt = state.row.prompt
            exact = self.prefixes is not None and self.decoder.exact_prefix(len(prompt))
            scored = state.row.request.prompt_logprobs  # logits of every prompt position wanted
            if state.filled == 0 and exact and not scored:
                state.filled = state.reused = self.prefixes.restore(prompt, self.decoder.cache, index)
            while state.prefilling and budget > 0:
                end = min(len(prompt), (state.filled // PREFILL_BLOCK + 1) * PREFILL_BLOCK)
                if end - state.filled > budget:
                    return
                chunk = prompt[state.filled : end]
                logits = self.decoder.prefill(index, chunk, state.filled, scored, len(prompt))
                if scored:
                    self._score_prompt(state, logits, end)
                    logits = logits[-1]
                budget -= end - state.filled
                state.filled = end
            if state.prefilling:
                return
            if exact:
                self.prefixes.remember(prompt, self.decoder.cache, index)
            token = state.sampler.pick(self._allowed(index, state, logits))
            self._in_one_write(partial(self._first_token, index, state, token, logits))

    def _first_token(self, index: int, state: _RowState, token: int, logits: np.ndarray) -> None:
        """A row whose prompt is read: its prompt's logprobs (if asked for), then its first token."""
        if state.row.request.prompt_logprobs:
            state.row.send_prompt_logprobs(state.prompt_logprobs)
        self._accept(index, state, token, logits)

    def _score_prompt(self, state: _RowState, logits: np.ndarray, end: int) -> None:
        """Logprobs of the prompt tokens after positions filled..end-1 (whose logits these are)."""
        prompt, table = state.row.prompt, self._logprobs_table()
        if state.filled == 0:
            state.prompt_logprobs = [table.first(prompt[0])]
        following = prompt[state.filled + 1 : end + 1]
        state.prompt_logprobs += table.following(logits[: len(following)], following, state.row.request.logprobs)

    def _grammar_tokens_for_rows(self) -> GrammarTokenizer:
        """The vocabulary as llguidance sees it, built in the job's thread at the first constrained request."""
        with self._table_lock:
            if self._grammar_tokens is None:
                self._grammar_tokens = self._grammar_tokenizer()
            return self._grammar_tokens

    def _logprobs_table(self) -> TokenLogprobs:
        """The token table for logprobs; built at the first request for them (in `submit`), so the
        step loop only reads it and never waits on the lock (held meanwhile by another job's thread
        building the grammar tokenizer, which takes a while on a large vocabulary)."""
        table = self._token_logprobs
        if table is not None:
            return table
        with self._table_lock:
            if self._token_logprobs is None:
                self._token_logprobs = TokenLogprobs(self.tokenizer.token_bytes(self.decoder.vocab_size))
            return self._token_logprobs

    def _step(self) -> None:
        generating = [i for i, s in enumerate(self.slots) if s is not None and not s.prefilling]
        if not generating:
            return
        # Slots up to the last generating row, and at least `min_width` of them, so a row alone takes
        # the same kernels as in a crowd (idle and prefilling slots in the width are written where
        # they are overwritten later; the decoder puts back what a prefilling slot's rings held).
        width = max(generating[-1] + 1, self.min_width)
        tokens = np.full(width, self.pad_id, dtype=np.int64)
        lengths = np.zeros(width, dtype=np.int64)
        for index in range(width):
            state = self.slots[index]
            if state is not None:
                lengths[index] = state.filled + state.row.generated - (0 if state.prefilling else 1)
                tokens[index] = state.next_token
        prefilling = [i for i in range(width) if self.slots[i] is not None and self.slots[i].prefilling]
        raw = logits = self.decoder.decode(tokens, lengths, prefilling)
        constrained = [i for i in generating if self.slots[i].grammar is not None]
        if constrained:
            logits = logits.copy()
            for index in constrained:
                logits[index] = self._allowed(index, self.slots[index], logits[index])
        greedy = [i for i in generating if self.slots[i].sampler.plain]
        picks = dict(zip(greedy, np.argmax(logits[greedy], axis=1).tolist(), strict=True)) if greedy else {}
        for index in generating:
            state = self.slots[index]
            token = picks[index] if index in picks else state.sampler.pick(logits[index])
            self._accept(index, state, token, raw[index])

    def _allowed(self, index: int, state: _RowState, logits: np.ndarray) -> np.ndarray:
        """The row's logits with what its grammar forbids next at -inf (unchanged when unconstrained)."""
        return logits if state.grammar is None else allow_only(logits, state.grammar.allowed(index))

    def _accept(self, index: int, state: _RowState, token: int, logits: np.ndarray) -> None:
        """Hand the row its next token (and its logprobs, from the step's `logits`, if the row asks);
        a row that finished leaves its slot."""
        k = state.row.request.logprobs
        state.sampler.observe(token)
        closes = False
        if state.grammar is not None and token not in self.eos_ids:
            state.grammar.advance(token)
            closes = state.grammar.complete  # nothing may follow: end now rather than sample end-of-text
        state.row.accept(token, None if k is None else self._logprobs_table().entry(logits, token, k), closes)
        cached = state.filled + state.row.generated  # once the token is fed at the next step
        if not state.row.finish_reason and cached > self.decoder.context_length:
            state.row.finish("length")
        if state.row.finish_reason:
            self._row_done(state)
        else:
            state.next_token = token

    def _row_done(self, state: _RowState) -> None:
        for index, slot in enumerate(self.slots):
            if slot is state:
                self.slots[index] = None
        request = state.row.request
        with self._wakeup:
            if state in self._pending:
                self._pending.remove(state)
            tracked = self._tracked.get(request.job_id)
            if tracked is None:
                return
            tracked.done.add(state.row.index)
            if len(tracked.done) < len(tracked.rows):
                return
            del self._tracked[request.job_id]
            self._completing[request.job_id] = tracked

    def _drop(self, tracked: _Tracked) -> None:
        """Forget a request's rows (lock held)."""
        for state in tracked.rows:
            if state in self._pending:
                self._pending.remove(state)
        self.slots = [s if s is None or s.row.request is not tracked.request else None for s in self.slots]
        self._tracked.pop(tracked.request.job_id, None)

    def _fail_all(self, error: BaseException) -> None:
        with self._wakeup:
            for tracked in list(self._tracked.values()):
                self._drop(tracked)
                tracked.fail(error)
