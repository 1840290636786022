"""Log probabilities of tokens from a step's logits, in the shape OpenAI returns them.

They are the log-softmax of the model's logits as the step produced them: before temperature,
top-k and top-p (vLLM's default `raw_logprobs`; OpenAI's values do not change with temperature
either). So a greedy token's logprob is the highest at its position, and the values say what the
model thinks, not how the request chose to sample from it.
"""

from __future__ import annotations

import numpy as np

from contracts.events import TokenLogprob, TopLogprob
from worker.models.token_bytes import token_text

# What a token the model gives no chance at all (a logit of -inf) reports: JSON has no -inf, and
# OpenAI reports such tokens with this value too.
FLOOR = -9999.0


def log_normalizer(logits: np.ndarray) -> float:
    """log(sum(exp(logits))), so a token's logprob is its logit minus this (no array of logprobs made)."""
    top = float(np.max(logits))
    return top + float(np.log(np.sum(np.exp(logits - top))))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log probabilities of one row of logits."""
    return logits.astype(np.float64) - log_normalizer(logits)


def top_tokens(logits: np.ndarray, k: int) -> np.ndarray:
    """The ids of the `k` most likely tokens, most likely first (ties: lower id first)."""
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    k = min(k, len(logits))
    candidates = np.argpartition(logits, len(logits) - k)[len(logits) - k :]
    return candidates[np.lexsort((candidates, -logits[candidates]))]


class TokenLogprobs:
    """Builds logprob entries for a vocabulary whose tokens stand for `table[id]` bytes."""

    def __init__(self, table: list[bytes]) -> None:
        self.table = table
        self.texts = [token_text(data) for data in table]

    def entry(self, logits: np.ndarray, token: int, k: int) -> TokenLogprob:
        """`token`'s entry at a position with these logits, with the `k` most likely tokens there."""
        normalizer = log_normalizer(logits)
        top = [
            # Built from known-good values without validation: this runs for every token asked.
            TopLogprob.model_construct(
                token=self.texts[t], logprob=max(float(logits[t]) - normalizer, FLOOR), bytes=list(self.table[t])
            )
            for t in top_tokens(logits, k).tolist()
        ]
        return TokenLogprob.model_construct(
            token=self.texts[token],
            logprob=max(float(logits[token]) - normalizer, FLOOR),
            bytes=list(self.table[token]),
            top_logprobs=top,
        )

    def first(self, token: int) -> TokenLogprob:
        """The entry of a prompt's first token: nothing before it, so no logprob."""
        return TokenLogprob.model_construct(
            token=self.texts[token], logprob=None, bytes=list(self.table[token]), top_logprobs=None
        )

    def following(self, logits: np.ndarray, tokens: list[int], k: int) -> list[TokenLogprob]:
        """Entries of prompt tokens: `logits[i]` is the position right before `tokens[i]`."""
        return [self.entry(row, token, k) for row, token in zip(logits, tokens, strict=True)]
