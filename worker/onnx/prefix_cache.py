"""Prompt prefix caching: the key/value entries of recently read prompts, reused by new prompts
that start with the same tokens (a chat template's system prompt, a shared instruction, the
earlier turns of a conversation).

Entries of a causal model's first L positions depend only on its first L tokens, so copying
them into a new row's cache slot is exact; the row then reads only the rest of its prompt.
Entries are kept least recently used first, up to `max_tokens` positions in all.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from worker.onnx.kv_cache import KvCache


class PrefixCache:
    """Reuses whole blocks of `block` positions: the engine reads every prompt in runs of that
    size from its start, so restored entries are exactly what reading the prompt would give."""

    def __init__(self, max_tokens: int, block: int) -> None:
        self.max_tokens = max_tokens
        self.block = block
        self._entries: OrderedDict[tuple[int, ...], dict[str, np.ndarray]] = OrderedDict()
        self._tokens = 0
        # Prompts that found a cached prefix, and the positions copied (the heartbeat shows both).
        self.hits = 0
        self.hit_tokens = 0

    def restore(self, prompt: list[int], cache: KvCache, row: int) -> int:
        """Copy the longest cached prefix of `prompt` in whole blocks, short of its last token (read
        to get the next token's logits), into `row`; returns how many positions it filled."""
        key, length = self._longest(prompt)
        length = min(length, len(prompt) - 1) // self.block * self.block
        if key is None or length == 0:
            return 0
        cache.ensure(length)
        for name, entries in self._entries[key].items():
            cache.buffers[name][row, :, :length] = entries[:, :length]
        self._entries.move_to_end(key)
        self.hits += 1
        self.hit_tokens += length
        return length

    def remember(self, prompt: list[int], cache: KvCache, row: int) -> None:
        """Keep a copy of the entries `row` holds for `prompt` (read in full just now)."""
        key = tuple(prompt)
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        if len(key) < self.block or len(key) > self.max_tokens:
            return
        self._entries[key] = {name: buffer[row, :, : len(key)].copy() for name, buffer in cache.buffers.items()}
        self._tokens += len(key)
        while self._tokens > self.max_tokens:
            evicted, _ = self._entries.popitem(last=False)
            self._tokens -= len(evicted)

    def _longest(self, prompt: list[int]) -> tuple[tuple[int, ...] | None, int]:
        tokens = np.asarray(prompt)
        best, best_length = None, 0
        for key in self._entries:
            n = min(len(key), len(tokens))
            differs = np.flatnonzero(np.asarray(key[:n]) != tokens[:n])
            length = int(differs[0]) if len(differs) else n
            if length > best_length:
                best, best_length = key, length
        return best, best_length
