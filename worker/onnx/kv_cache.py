"""The key/value cache of a decoder, one row (slot) per sequence in flight.

Each layer's keys and values live in one buffer [slots, kv_heads, capacity, head_size], bound
as both the `past` input and the `present` output of a step: onnxruntime's GroupQueryAttention
reads each row's length from the attention mask and writes that row's new entries right after
its own, so rows of different lengths share one batched step, a row can join or leave between
steps, and a prompt can be filled in chunks. Capacity grows (doubling, up to the context) when
a row needs it and returns to its initial size when no row is in flight.
"""

from __future__ import annotations

import numpy as np


class KvCache:
    def __init__(
        self,
        names: list[str],
        slots: int,
        kv_heads: int,
        head_size: int,
        dtype: np.dtype,
        initial_capacity: int,
        limit: int,
    ) -> None:
        self.names = names
        self.slots = slots
        self.shape = (kv_heads, head_size)
        self.dtype = dtype
        self.initial_capacity = min(initial_capacity, limit)
        self.limit = limit
        self.buffers: dict[str, np.ndarray] = {}
        # Counts reallocations: a binding of older buffers is stale.
        self.generation = 0
        self.reset()

    @property
    def capacity(self) -> int:
        return next(iter(self.buffers.values())).shape[2]

    def reset(self) -> None:
        """Back to the initial capacity (frees the memory a long sequence made it take).

        Entries past a row's length are never read (the mask bounds them), so buffers of the
        initial size are kept as they are rather than cleared.
        """
        if self.buffers and self.capacity == self.initial_capacity:
            return
        self.buffers = {}  # free the grown buffers before allocating the small ones
        self.buffers = {name: self._allocate(self.initial_capacity) for name in self.names}
        self.generation += 1

    def ensure(self, length: int) -> None:
        """Make room for rows of `length` tokens; keeps what the rows hold."""
        if length <= self.capacity:
            return
        if length > self.limit:
            raise ValueError(f"{length} tokens exceed the context of {self.limit}")
        capacity = min(self.limit, max(length, 2 * self.capacity))
        for name, old in self.buffers.items():
            grown = self._allocate(capacity)
            grown[:, :, : old.shape[2]] = old
            self.buffers[name] = grown
        self.generation += 1

    def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Views of rows [start, stop) of every buffer (contiguous, so onnxruntime writes in place)."""
        return {name: buffer[start:stop] for name, buffer in self.buffers.items()}

    def _allocate(self, capacity: int) -> np.ndarray:
        kv_heads, head_size = self.shape
        return np.zeros((self.slots, kv_heads, capacity, head_size), dtype=self.dtype)
