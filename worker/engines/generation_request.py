"""One chat request inside the engine: its rows (one per choice) and how it reports back."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from contracts.events import Choice, DeltaEvent, GenerationResult, PromptTokensDetails, TokenLogprob, Usage
from contracts.jobs import SamplingParams
from worker.engines.logprob_alignment import LogprobAligner
from worker.engines.stop_strings import StopStringFilter


@dataclass
class GenerationRequest:
    """A prepared request: its prompts' tokens and limits, plus a callback for its events.

    Each prompt yields `n` rows; the row for copy `i` of prompt `p` is choice `p * n + i`.
    """

    job_id: str
    prompts: list[list[int]]
    n: int
    max_tokens: int
    stop: list[str]
    sampling: SamplingParams
    emit: Callable[[DeltaEvent], None]
    # Logprobs of each output token with this many alternatives (None: none); of the prompt's too.
    logprobs: int | None = None
    prompt_logprobs: bool = False
    # A batch line: interactive requests waiting for a slot go first.
    background: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    truncated: list[bool] = field(default_factory=list)
    result: GenerationResult | None = None
    error: BaseException | None = None

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.n

    def batch_key(self) -> tuple:
        """Requests with equal keys may share one decode loop (one set of search options).

        A seeded request decodes alone, so the same seed always gives the same text.
        """
        s = self.sampling
        return (s.temperature, s.top_p, s.top_k, self.job_id if s.seed is not None else None)

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.finished.set()


class Row:
    """One sequence being generated: decodes tokens, applies stop strings and limits."""

    def __init__(self, request: GenerationRequest, index: int, stream, eos_ids: frozenset[int]) -> None:
        self.request = request
        self.index = index
        self.prompt = request.prompts[index // request.n]
        self.truncated = bool(request.truncated) and request.truncated[index // request.n]
        self.stream = stream
        self.eos_ids = eos_ids
        self.stops = StopStringFilter(request.stop)
        self.text: list[str] = []
        self.generated = 0
        self.finish_reason: str | None = None
        # Logprobs, when asked: sent with the text they belong to (an end-of-text token has none).
        self.aligner = LogprobAligner() if request.logprobs is not None else None
        self.logprobs: list[TokenLogprob] = []
        self.prompt_logprobs: list[TokenLogprob] | None = None

    def accept(self, token: int, logprob: TokenLogprob | None = None) -> None:
        """Take the next token of this row (ignored once the row finished), with its logprob entry
        when the request asked for them."""
        if self.finish_reason:
            return
        self.generated += 1
        if token in self.eos_ids:
            self.finish("stop")
            return
        text = self.stream.decode(token)
        if self.aligner is not None and logprob is not None:
            self.aligner.add(logprob, len(text))
        released = self.stops.feed(text)
        self._send(released)
        if self.stops.stopped:
            self.finish("stop")
        elif self.generated >= self.request.max_tokens:
            self.finish("length")

    def finish(self, reason: str) -> None:
        if self.finish_reason:
            return
        if self.truncated and reason != "cancelled":
            reason = "length"  # its prompt lost tokens to fit the context
        self.finish_reason = reason
        tail = "" if reason == "cancelled" or self.stops.stopped else self.stops.flush()
        self._send(tail, reason)

    def send_prompt_logprobs(self, entries: list[TokenLogprob]) -> None:
        """The prompt's logprobs (read in full), sent before the first token's text."""
        self.prompt_logprobs = entries
        self.request.emit(DeltaEvent(index=self.index, text="", prompt_logprobs=entries))

    def _send(self, text: str, finish_reason: str | None = None) -> None:
        if text:
            self.text.append(text)
        entries = None
        if self.aligner is not None and finish_reason != "cancelled":
            entries = self.aligner.finish(len(text)) if finish_reason else self.aligner.release(len(text))
            self.logprobs.extend(entries)
        if text or finish_reason or entries:
            self.request.emit(DeltaEvent(index=self.index, text=text, finish_reason=finish_reason, logprobs=entries))


def complete(request: GenerationRequest, rows: list[Row], batch_size: int, cached_tokens: int = 0) -> None:
    """Build the request's result from its finished rows and wake whoever waits for it."""
    generated = sum(r.generated for r in rows)
    prompt = sum(len(p) for p in request.prompts)
    request.result = GenerationResult(
        choices=[
            Choice(
                index=r.index,
                text="".join(r.text),
                finish_reason=r.finish_reason,
                logprobs=r.logprobs if r.aligner is not None else None,
                prompt_logprobs=r.prompt_logprobs,
            )
            for r in rows
        ],
        usage=Usage(
            prompt_tokens=prompt,
            completion_tokens=generated,
            total_tokens=prompt + generated,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens),
        ),
        batch_size=batch_size,
    )
    request.finished.set()
