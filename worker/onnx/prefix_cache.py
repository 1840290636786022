"""Prompt prefix caching: the key/value entries of recently read prompts, reused by new prompts
that start with the same tokens (a chat template's system prompt, a shared instruction, the
earlier turns of a conversation).

Entries of a causal model's first L positions depend only on its first L tokens, so copying
them into a new row's cache slot is exact; the row then reads only the rest of its prompt.
Entries are kept least recently used first, up to `max_tokens` positions in all.

A windowed layer (worker/onnx/kv_cache.py Ring) keeps only a prompt's last positions: the cache
follows a prompt it may remember, copying each run its rings take in, so that any prefix of it
can be restored. (Where a ring's window is shorter than a run, only the positions the ring still
holds are kept, and shorter prefixes whose positions it dropped are read again.)
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from worker.onnx.kv_cache import Held, KvCache


class PrefixCache:
    """Reuses whole blocks of `block` positions: the engine reads every prompt in runs of that
    size from its start, so restored entries are exactly what reading the prompt would give."""

    def __init__(self, max_tokens: int, block: int) -> None:
        self.max_tokens = max_tokens
        self.block = block
        self._entries: OrderedDict[tuple[int, ...], Held] = OrderedDict()
        self._tokens = 0
        # Prompts that found a cached prefix, and the positions copied (the heartbeat shows both).
        self.hits = 0
        self.hit_tokens = 0

    def restore(self, prompt: list[int], cache: KvCache, row: int) -> int:
        """Copy the longest cached prefix of `prompt` in whole blocks, short of its last token (read
        to get the next token's logits), into `row`; returns how many positions it filled."""
        follow = self.block <= len(prompt) <= self.max_tokens  # it may be remembered: keep its rings' runs
        key, length = self._longest(prompt, cache)
        if key is None:
            if follow:
                cache.follow(row)
            else:
                cache.unfollow(row)
            return 0
        cache.restore(row, self._entries[key], length, follow)
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
        self._entries[key] = cache.held(row, len(key))
        self._tokens += len(key)
        while self._tokens > self.max_tokens:
            evicted, _ = self._entries.popitem(last=False)
            self._tokens -= len(evicted)

    def _longest(self, prompt: list[int], cache: KvCache) -> tuple[tuple[int, ...] | None, int]:
        """The remembered prompt giving the most whole blocks of `prompt` (short of its last token)
        that `cache` can take, and how many positions."""
        tokens = np.asarray(prompt)
        best, best_length = None, 0
        for key in self._entries:
            n = min(len(key), len(tokens) - 1)
            differs = np.flatnonzero(np.asarray(key[:n]) != tokens[:n])
            length = (int(differs[0]) if len(differs) else n) // self.block * self.block
            if length > best_length and cache.can_restore(self._entries[key], length):
                best, best_length = key, length
        return best, best_length
