"""One chat request inside the engine: its rows (one per choice) and how it reports back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from contracts.events import (
    Choice,
    CompletionTokensDetails,
    DeltaEvent,
    GenerationResult,
    PromptTokensDetails,
    TokenLogprob,
    ToolCallDelta,
    Usage,
)
from contracts.jobs import SamplingParams, ToolCallMode
from worker.engines.harmony_reasoning import HarmonyReader, HarmonyTokens
from worker.engines.logprob_alignment import LogprobAligner
from worker.engines.reasoning import ReasoningParser, ThinkingStart
from worker.engines.stop_strings import StopStringFilter
from worker.engines.tool_calls import ToolCallParser


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
    # Structured output: the llguidance grammar every row's output must fit, and how its text may
    # hold tool calls (None: it holds none).
    grammar: str | None = None
    tool_calls: ToolCallMode | None = None
    # A thinking model's chat: where its `<think>` reasoning starts, or a harmony model's structure
    # tokens (None: no reasoning is read out).
    thinking: ThinkingStart | HarmonyTokens | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    truncated: list[bool] = field(default_factory=list)
    result: GenerationResult | None = None
    error: BaseException | None = None
    first_token_at: float | None = None  # when any of its rows took its first token

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.n

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.finished.set()


def reasoning_reader(thinking: ThinkingStart | HarmonyTokens | None) -> ReasoningParser | HarmonyReader | None:
    """What reads a row's reasoning out: harmony's channels by token, `<think>` tags by text."""
    if isinstance(thinking, HarmonyTokens):
        return HarmonyReader(thinking)
    return ReasoningParser(thinking) if thinking else None


class Row:
    """One sequence being generated: decodes tokens, applies stop strings and limits."""

    def __init__(self, request: GenerationRequest, index: int, stream, eos_ids: frozenset[int]) -> None:
        self.request = request
        self.index = index
        self.prompt = request.prompts[index // request.n]
        self.truncated = bool(request.truncated) and request.truncated[index // request.n]
        self.stream = stream
        self.eos_ids = eos_ids
        # Stop strings apply to free text only: never inside a grammar's JSON or a tool call (nor
        # in an auto answer whose alternative to calls is JSON: the API sends no stop strings then).
        free_text = request.grammar is None or request.tool_calls == "auto"
        self.stops = StopStringFilter(request.stop if free_text else [])
        self.tools = ToolCallParser(forced=request.tool_calls != "auto") if request.tool_calls else None
        # Reasoning comes first: the answer after it is what tool calls, stop strings and logprobs see.
        self.reasoning = reasoning_reader(request.thinking)
        self.reasoning_text: list[str] = []
        self.text: list[str] = []
        self.generated = 0
        self.finish_reason: str | None = None
        # Logprobs, when asked: sent with the text they belong to (an end-of-text token has none).
        self.aligner = LogprobAligner() if request.logprobs is not None else None
        self.logprobs: list[TokenLogprob] = []
        self.prompt_logprobs: list[TokenLogprob] | None = None

    def accept(self, token: int, logprob: TokenLogprob | None = None, closes: bool = False) -> None:
        """Take the next token of this row (ignored once the row finished), with its logprob entry
        when the request asked for them; `closes`: the row's grammar admits nothing after it, so
        the row ends with it."""
        if self.finish_reason:
            return
        self.generated += 1
        if self.request.first_token_at is None:
            self.request.first_token_at = time.time()
        if token in self.eos_ids:
            self.finish("stop")
            return
        text = self.stream.decode(token)
        reasoning = ""
        if self.reasoning is not None:
            reasoning, text = self.reasoning.feed_token(token, text)
        # Logprobs are the answer's: a token all of whose text is reasoning (or dropped) has none.
        if self.aligner is not None and logprob is not None and (self.reasoning is None or text):
            self.aligner.add(logprob, len(text))
        calls: list[ToolCallDelta] = []
        if self.tools is not None:
            text, calls = self.tools.feed(text)
        released = self.stops.feed(text)
        if self.tools is not None and self.tools.in_call:
            released += self.stops.flush()  # what was held for a stop string was content after all
        self._send(released, tool_calls=calls, reasoning=reasoning)
        if self.stops.stopped or closes:
            self.finish("stop")
        elif self.generated >= self.request.max_tokens:
            self.finish("length")

    def finish(self, reason: str) -> None:
        if self.finish_reason:
            return
        if self.truncated and reason != "cancelled":
            reason = "length"  # its prompt lost tokens to fit the context
        if reason == "stop" and self.tools is not None and self.tools.calls:
            # OpenAI ends a call of the function the request named with "stop".
            reason = "stop" if self.request.tool_calls == "named" else "tool_calls"
        self.finish_reason = reason
        tail, reasoning = "", ""
        if reason != "cancelled" and not self.stops.stopped:
            answer = ""
            if self.reasoning is not None:
                reasoning, answer = self.reasoning.finish()
            if self.tools is not None:
                answer = self.tools.feed(answer)[0] + self.tools.finish()
            tail = self.stops.feed(answer) + self.stops.flush()
        self._send(tail, reason, reasoning=reasoning)

    def send_prompt_logprobs(self, entries: list[TokenLogprob]) -> None:
        """The prompt's logprobs (read in full), sent before the first token's text."""
        self.prompt_logprobs = entries
        self.request.emit(DeltaEvent(index=self.index, text="", prompt_logprobs=entries))

    def _send(
        self, text: str, finish_reason: str | None = None, tool_calls: list[ToolCallDelta] = (), reasoning: str = ""
    ) -> None:
        if text:
            self.text.append(text)
        if reasoning:
            self.reasoning_text.append(reasoning)
        entries = None
        if self.aligner is not None and finish_reason != "cancelled":
            # Once the calls began, the content is over (the grammar allows only calls from there).
            content_over = finish_reason is not None or (self.tools is not None and self.tools.in_call)
            entries = self.aligner.finish(len(text)) if content_over else self.aligner.release(len(text))
            self.logprobs.extend(entries)
        if text or finish_reason or entries or tool_calls or reasoning:
            calls = list(tool_calls) or None
            self.request.emit(
                DeltaEvent(
                    index=self.index,
                    text=text,
                    finish_reason=finish_reason,
                    logprobs=entries,
                    tool_calls=calls,
                    reasoning=reasoning or None,
                )
            )

    @property
    def reasoned(self) -> str | None:
        """The row's reasoning, when its output thought."""
        return "".join(self.reasoning_text) if self.reasoning is not None and self.reasoning.thought else None


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
                tool_calls=r.tools.calls if r.tools is not None else None,
                began_calls=r.tools is not None and (r.tools.in_call or r.tools.forced),
                cut_call=r.tools.unfinished if r.tools is not None and r.finish_reason == "length" else None,
                stop_sequence=r.stops.matched if r.finish_reason == "stop" else None,
                reasoning=r.reasoned,
            )
            for r in rows
        ],
        usage=Usage(
            prompt_tokens=prompt,
            completion_tokens=generated,
            total_tokens=prompt + generated,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens),
            completion_tokens_details=CompletionTokensDetails(
                reasoning_tokens=sum(r.reasoning.reasoning_tokens for r in rows)
            )
            if request.thinking
            else None,
        ),
        batch_size=batch_size,
        first_token_at=request.first_token_at,
    )
    request.finished.set()
