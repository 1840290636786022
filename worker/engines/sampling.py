"""Choosing each row's next token from its logits, with that row's own options and seed.

The rules follow onnxruntime-genai's search options, which Ladle used before it drove models
itself: omitted options take the model's `search` defaults (genai_config.json); temperature 0 is
greedy; setting temperature, top_p, top_k or min_p samples (top-k, temperature, min-p, then top-p).
Penalties and logit biases (worker/engines/token_penalties.py) shape the logits first, greedy or not.
"""

from __future__ import annotations

import numpy as np

from contracts.jobs import SamplingParams
from worker.engines.token_penalties import TokenPenalties


class RowSampler:
    """Picks one row's tokens: its own options, its own seed, its own penalties over its own tokens."""

    def __init__(self, sampling: SamplingParams, defaults: dict, stream: int = 0, prompt: list[int] = ()) -> None:
        asked = (sampling.temperature, sampling.top_p, sampling.top_k, sampling.min_p)
        if sampling.temperature == 0:
            self.greedy = True
        elif any(value is not None for value in asked):
            self.greedy = False
        else:
            self.greedy = not defaults.get("do_sample", False)
        self.temperature = sampling.temperature or float(defaults.get("temperature", 1.0)) or 1.0
        self.top_p = sampling.top_p if sampling.top_p is not None else float(defaults.get("top_p", 1.0))
        self.top_k = sampling.top_k if sampling.top_k is not None else int(defaults.get("top_k", 0))
        self.min_p = sampling.min_p or 0.0
        self.penalties = TokenPenalties(sampling, list(prompt)) if sampling.shapes_logits else None
        # A seed gives a reproducible sequence per choice (`stream` tells a request's rows apart).
        # numpy takes non-negative seeds: a negative one maps to its unsigned 64-bit value.
        seed = None if sampling.seed is None else [sampling.seed % 2**64, stream]
        self.random = np.random.default_rng(seed)

    @property
    def plain(self) -> bool:
        """Greedy on the raw logits: the argmax of a whole step serves this row too."""
        return self.greedy and self.penalties is None

    def observe(self, token: int) -> None:
        """The row took `token` (penalties count the output)."""
        if self.penalties is not None:
            self.penalties.observe(token)

    def pick(self, logits: np.ndarray) -> int:
        if self.penalties is not None:
            logits = self.penalties.apply(logits)
        if self.greedy:
            return int(np.argmax(logits))
        k = self.top_k if 0 < self.top_k < len(logits) else len(logits)
        candidates = np.argpartition(logits, -k)[-k:] if k < len(logits) else np.arange(len(logits))
        raw = logits[candidates].astype(np.float64)
        order = np.argsort(-raw)
        candidates, raw = candidates[order], raw[order]
        # Shift before scaling: with a tiny temperature the scores reach -inf (probability 0), where
        # scaling first would overflow to inf and inf - inf is NaN.
        probabilities = np.exp((raw - raw[0]) / self.temperature)
        probabilities /= probabilities.sum()
        if self.min_p > 0:  # candidates are sorted: the first is the most likely
            keep = max(1, int(np.count_nonzero(probabilities >= self.min_p * probabilities[0])))
            candidates, probabilities = candidates[:keep], probabilities[:keep] / probabilities[:keep].sum()
        if self.top_p < 1.0:
            keep = max(1, int(np.searchsorted(np.cumsum(probabilities), self.top_p) + 1))
            candidates, probabilities = candidates[:keep], probabilities[:keep] / probabilities[:keep].sum()
        return int(candidates[self.random.choice(len(candidates), p=probabilities)])


def allow_only(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`logits` with every token outside `mask` (packed int32 words, bit i = token i) at -inf."""
    allowed = np.unpackbits(mask.view(np.uint8), bitorder="little")[: logits.shape[-1]].astype(bool)
    return np.where(allowed, logits, -np.inf).astype(logits.dtype, copy=False)
