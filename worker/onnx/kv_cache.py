"""The key/value cache of a decoder, one row (slot) per sequence in flight.

Each layer's keys and values live in one buffer [slots, kv_heads, capacity, head_size], bound
as both the `past` input and the `present` output of a step: onnxruntime's GroupQueryAttention
reads each row's length from the attention mask and writes that row's new entries right after
its own, so rows of different lengths share one batched step, a row can join or leave between
steps, and a prompt can be filled in chunks. Capacity grows (doubling, up to the context) when
a row needs it and returns to its initial size when no row is in flight.

A sliding-window layer whose graph keeps a windowed cache (GroupQueryAttention's
`sliding_window_cache`, onnxruntime-genai's builder's default) has a buffer of fixed capacity
instead, a Ring: the kernel drops a row's oldest entries itself as the row grows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A row's entries by layer: the first position they are of, and the entries from there.
Held = dict[str, tuple[int, np.ndarray]]


@dataclass(frozen=True)
class Ring:
    """A windowed layer's cache as GroupQueryAttention keeps it: `capacity` positions per row, for
    attention over the last `window` positions. A row of T tokens holds positions [first(T), T)
    at offsets 0, 1, ...; a step that would pass the capacity first moves the last window - 1
    positions to the front, so the first position held is a multiple of capacity - window + 1:
    a function of T alone, whatever the steps that led there."""

    window: int
    capacity: int

    def first(self, length: int) -> int:
        """The first position a row of `length` tokens holds."""
        if length <= self.capacity:
            return 0
        shift = self.capacity - self.window + 1
        return -(-(length - self.capacity) // shift) * shift


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
        rings: dict[str, Ring] | None = None,
    ) -> None:
        """`rings`: the layers (of `names`) whose cache is windowed."""
        self.names = names
        self.slots = slots
        self.shape = (kv_heads, head_size)
        self.dtype = dtype
        self.initial_capacity = min(initial_capacity, limit)
        self.limit = limit
        self.rings = rings or {}
        self.buffers: dict[str, np.ndarray] = {name: self._allocate(ring.capacity) for name, ring in self.rings.items()}
        self.capacity = 0  # of the growing buffers (every layer's but the rings')
        # Rows keeping copies of what their rings take in (`follow`): row -> ring -> runs of entries.
        self._trails: dict[int, dict[str, list[np.ndarray]]] = {}
        # Counts reallocations: a binding of older buffers is stale.
        self.generation = 0
        self.reset()

    def reset(self) -> None:
        """Back to the initial capacity (frees the memory a long sequence made it take).

        Entries past a row's length are never read (the mask bounds them), so buffers of the
        initial size are kept as they are rather than cleared; so are the rings.
        """
        self._trails.clear()
        if self.capacity == self.initial_capacity:
            return
        growing = [name for name in self.names if name not in self.rings]
        for name in growing:  # free the grown buffers before allocating the small ones
            self.buffers.pop(name, None)
        self.buffers.update({name: self._allocate(self.initial_capacity) for name in growing})
        self.capacity = self.initial_capacity
        self.generation += 1

    def ensure(self, length: int) -> None:
        """Make room for rows of `length` tokens; keeps what the rows hold."""
        if length <= self.capacity:
            return
        if length > self.limit:
            raise ValueError(f"{length} tokens exceed the context of {self.limit}")
        capacity = min(self.limit, max(length, 2 * self.capacity))
        for name, old in self.buffers.items():
            if name in self.rings:
                continue
            grown = self._allocate(capacity)
            grown[:, :, : old.shape[2]] = old
            self.buffers[name] = grown
        self.capacity = capacity
        self.generation += 1

    def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Views of rows [start, stop) of every buffer (contiguous, so onnxruntime writes in place)."""
        return {name: buffer[start:stop] for name, buffer in self.buffers.items()}

    def follow(self, row: int) -> None:
        """Keep copies of the positions `row`'s rings take in from its first (the prompt it reads
        may be remembered whole: see `held`)."""
        if self.rings:
            self._trails[row] = {name: [] for name in self.rings}

    def unfollow(self, row: int) -> None:
        self._trails.pop(row, None)

    def took_in(self, row: int, start: int, stop: int) -> None:
        """`row` has just read positions [start, stop): copies of its rings' entries if followed,
        while its rings hold whole runs (their window is at least a run)."""
        trail = self._trails.get(row)
        if trail is None:
            return
        for name, runs in trail.items():
            first = self.rings[name].first(stop)
            if first > start or sum(run.shape[1] for run in runs) != start:
                del self._trails[row]
                return
            runs.append(self.buffers[name][row, :, start - first : stop - first].copy())

    def held(self, row: int, length: int) -> Held:
        """Copies of the entries of `row`, a sequence of `length` tokens, by layer: the first
        position and the entries from there (a ring's last positions, or all of them if followed)."""
        trail = self._trails.pop(row, {})
        held = {}
        for name, buffer in self.buffers.items():
            runs = trail.get(name, [])
            if sum(run.shape[1] for run in runs) >= length:
                held[name] = (0, np.concatenate(runs, axis=1)[:, :length])
            else:
                first = self._first(name, length)
                held[name] = (first, buffer[row, :, : length - first].copy())
        return held

    def can_restore(self, held: Held, length: int) -> bool:
        """Whether entries `held` include those of the first `length` tokens of their sequence (not
        so when a ring has dropped positions a ring of `length` tokens holds)."""
        return all(held[name][0] <= ring.first(length) for name, ring in self.rings.items())

    def restore(self, row: int, held: Held, length: int, follow: bool = False) -> None:
        """Make `row` a sequence of the first `length` tokens of the sequence whose entries were
        `held` (see `can_restore`); with `follow`, as `follow` from there if the entries allow."""
        self.ensure(length)
        self.unfollow(row)
        for name, (held_first, kept) in held.items():
            first = self._first(name, length)
            self.buffers[name][row, :, : length - first] = kept[:, first - held_first : length - held_first]
        if follow and all(held[name][0] == 0 for name in self.rings):
            self._trails[row] = {name: [held[name][1][:, :length]] for name in self.rings}

    def moved_by_a_step(self, lengths: dict[int, int]) -> dict[tuple[str, int], np.ndarray]:
        """Copies of the ring entries of rows (row -> tokens it holds) that a step adding one
        position would move: a step that feeds them a placeholder puts them back after it."""
        return {
            (name, row): self.buffers[name][row].copy()
            for name, ring in self.rings.items()
            for row, length in lengths.items()
            if ring.first(length + 1) != ring.first(length)
        }

    def put_back(self, copies: dict[tuple[str, int], np.ndarray]) -> None:
        for (name, row), entries in copies.items():
            self.buffers[name][row] = entries

    def _first(self, name: str, length: int) -> int:
        ring = self.rings.get(name)
        return 0 if ring is None else ring.first(length)

    def _allocate(self, capacity: int) -> np.ndarray:
        kv_heads, head_size = self.shape
        return np.zeros((self.slots, kv_heads, capacity, head_size), dtype=self.dtype)
