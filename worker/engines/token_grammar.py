"""Constrained decoding with llguidance: which tokens a row's grammar allows next (both engines).

A model's `GrammarTokenizer` (built once, from its tokenizer.json) serves every row; each
constrained row has its own `RowGrammar` (an llguidance matcher, never shared between threads).
Each step the row's mask of allowed tokens is computed, the sampler sees only those, and the
chosen token advances the matcher. llguidance never raises on a bad token or a grammar error: the
matcher enters an error state whose mask allows only end-of-sequence, so a row fails closed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import llguidance
import llguidance.numpy
import numpy as np

log = logging.getLogger(__name__)


class GrammarTokenizer:
    """The model's vocabulary as llguidance sees it, plus one mask buffer row per cache slot."""

    def __init__(self, tokenizer_json: Path, eos_ids: frozenset[int], vocab_size: int, slots: int) -> None:
        self.tokenizer = llguidance.LLTokenizer(
            tokenizer_json.read_text(), n_vocab=vocab_size, eos_token=sorted(eos_ids)
        )
        self.vocab_size = vocab_size
        self.masks = llguidance.numpy.allocate_token_bitmask(slots, vocab_size)

    def reserve(self, slots: int) -> None:
        """Room for at least `slots` rows' masks (a static batch may hold more rows than its limit)."""
        if len(self.masks) < slots:
            self.masks = llguidance.numpy.allocate_token_bitmask(slots, self.vocab_size)

    def row(self, grammar: str) -> RowGrammar:
        return RowGrammar(llguidance.LLMatcher(self.tokenizer, grammar, log_level=0), self)


class RowGrammar:
    """One row's matcher: `allowed` gives its mask of next tokens, `advance` feeds the chosen one."""

    def __init__(self, matcher: llguidance.LLMatcher, tokens: GrammarTokenizer) -> None:
        self.matcher = matcher
        self.tokens = tokens
        self.failed = False

    def allowed(self, slot: int) -> np.ndarray:
        """The packed mask (int32 words, bit i = token i) of tokens allowed next; written in the slot's buffer row."""
        llguidance.numpy.fill_next_token_bitmask(self.matcher, self.tokens.masks, slot)
        return self.tokens.masks[slot]

    def advance(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            self.failed = True
            log.error("grammar rejected a token it allowed", extra={"token": token, "error": self.matcher.get_error()})

    @property
    def complete(self) -> bool:
        """The grammar admits nothing more (the JSON value closed, the last call ended) or failed."""
        return self.failed or self.matcher.is_stopped() or self.matcher.is_error()
