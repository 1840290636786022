"""Penalties and biases on one row's logits, as OpenAI, vLLM and transformers define them.

Applied in vLLM's order, before temperature and the sampling filters, to greedy rows too:
`logit_bias` is added first; then `repetition_penalty` divides the positive logits (multiplies the
negative ones) of every token seen in the prompt or the output; then each token that occurs c > 0
times in the output loses c * frequency_penalty + presence_penalty.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from contracts.jobs import SamplingParams


class TokenPenalties:
    """The adjustments one row's sampling options ask for, and the output they count."""

    def __init__(self, sampling: SamplingParams, prompt: list[int]) -> None:
        self.frequency = sampling.frequency_penalty or 0.0
        self.presence = sampling.presence_penalty or 0.0
        self.repetition = sampling.repetition_penalty or 1.0
        bias = sampling.logit_bias or {}
        self.bias_ids = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))
        self.bias_values = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))
        self.prompt_ids = np.unique(np.asarray(prompt, dtype=np.int64)) if self.repetition != 1 else None
        self.output: Counter[int] = Counter()

    def observe(self, token: int) -> None:
        """Count a token the row generated."""
        self.output[token] += 1

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """A copy of `logits` ([vocab]) with the adjustments made."""
        adjusted = logits.astype(np.float32, copy=True)
        if len(self.bias_ids):
            adjusted[self.bias_ids] += self.bias_values
        generated = np.fromiter(self.output.keys(), dtype=np.int64, count=len(self.output))
        if self.repetition != 1:
            seen = np.union1d(self.prompt_ids, generated)
            values = adjusted[seen]
            adjusted[seen] = np.where(values > 0, values / self.repetition, values * self.repetition)
        if len(generated) and (self.frequency or self.presence):
            counts = np.fromiter(self.output.values(), dtype=np.float32, count=len(self.output))
            adjusted[generated] -= counts * self.frequency + self.presence
        return adjusted
