"""How a decoder's memory is split under the worker's budget (LADLE_MODEL_MEMORY_MB).

A loaded decoder holds its weights, a key/value cache of `slots` rows of `kv_tokens` positions
each (one row per sequence decoding; the engine grows a row up to that capacity), and a prefix
cache of `prefix_tokens` positions. Each position costs 2 (keys and values) x layers x kv_heads
x head_size x the cache element's size; a layer with a windowed cache (sliding-window attention)
holds a fixed number of positions per row instead, whatever the row's length, so a row costs its
full layers per position plus its rings. With a budget, what is left after the weights is given
first to one row of the full context (so the longest prompt the model takes is served), then to
more rows, then to the prefix cache; the settings (LADLE_MAX_BATCH, LADLE_PREFIX_CACHE_TOKENS,
the model's context length) stay upper bounds. Without a budget the plan is those bounds.

Pure arithmetic: no onnxruntime, no files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

MB = 2**20
# The smallest useful cache: one row of this many positions (or the whole context, if shorter).
MIN_TOKENS = 256
# Bytes of one cache element by the cache's dtype.
ELEMENT_SIZES = {"float16": 2, "fp16": 2, "bfloat16": 2, "float32": 4, "fp32": 4, "float": 4}


@dataclass(frozen=True)
class KvShape:
    """What sizes a decoder's key/value cache: from its genai_config and the cache's dtype."""

    layers: int
    kv_heads: int
    head_size: int
    element_size: int
    context_length: int
    # The positions each windowed layer's cache holds per row (its ring: window plus slack), if any.
    ring_positions: tuple[int, ...] = ()

    @property
    def layer_bytes_per_token(self) -> int:
        return 2 * self.kv_heads * self.head_size * self.element_size

    @property
    def bytes_per_token(self) -> int:
        """A position of every layer (what the prefix cache keeps of each position)."""
        return self.layers * self.layer_bytes_per_token

    @property
    def full_bytes_per_token(self) -> int:
        """A position of the layers whose cache grows with the row."""
        return (self.layers - len(self.ring_positions)) * self.layer_bytes_per_token

    @property
    def ring_bytes(self) -> int:
        """A row's windowed layers, whatever its length."""
        return sum(self.ring_positions) * self.layer_bytes_per_token

    def slot_bytes(self, tokens: int) -> int:
        """A row of `tokens` positions."""
        return tokens * self.full_bytes_per_token + self.ring_bytes


def kv_shape(genai: dict, cache_dtype: str, ring_positions: tuple[int, ...] = ()) -> KvShape:
    """The cache shape a genai_config.json describes, with elements of `cache_dtype` (fp16, fp32...)
    and windowed layers holding `ring_positions` each."""
    model = genai["model"]
    decoder = model["decoder"]
    if cache_dtype not in ELEMENT_SIZES:
        raise ValueError(f"unknown key/value cache dtype {cache_dtype!r}")
    shape = KvShape(
        layers=int(decoder["num_hidden_layers"]),
        kv_heads=int(decoder["num_key_value_heads"]),
        head_size=int(decoder["head_size"]),
        element_size=ELEMENT_SIZES[cache_dtype],
        context_length=int(model["context_length"]),
        ring_positions=tuple(ring_positions),
    )
    if (
        min(shape.layers, shape.kv_heads, shape.head_size, shape.context_length) <= 0
        or len(ring_positions) > shape.layers
    ):
        raise ValueError(f"a key/value cache cannot be sized from {shape}")
    return shape


@dataclass(frozen=True)
class MemoryPlan:
    """A loaded model's memory: weights plus `slots` x `kv_tokens` cache positions plus the prefix cache."""

    weights_bytes: int
    bytes_per_token: int  # a slot's position, in the layers whose cache grows with the row
    slots: int
    kv_tokens: int  # positions each slot can hold: the longest prompt + completion served
    prefix_tokens: int
    budget_bytes: int  # what the plan was made to fit (0: no budget)
    ring_bytes: int = 0  # a slot's windowed layers, whatever its length
    ring_bytes_per_token: int = 0  # the windowed layers' share of a prefix cache position

    @property
    def kv_cache_bytes(self) -> int:
        return self.slots * (self.kv_tokens * self.bytes_per_token + self.ring_bytes)

    @property
    def prefix_cache_bytes(self) -> int:
        return self.prefix_tokens * (self.bytes_per_token + self.ring_bytes_per_token)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.prefix_cache_bytes

    def describe(self) -> dict:
        """The plan for logs and the heartbeat (sizes in MB, rounded)."""
        return {
            **{k: v for k, v in asdict(self).items() if not k.endswith("_bytes")},
            "weights_mb": _mb(self.weights_bytes),
            "kv_cache_mb": _mb(self.kv_cache_bytes),
            "prefix_cache_mb": _mb(self.prefix_cache_bytes),
            "total_mb": _mb(self.total_bytes),
            "budget_mb": _mb(self.budget_bytes) if self.budget_bytes else None,
        }


class DoesNotFit(Exception):
    """Not even the smallest plan (weights + one slot of MIN_TOKENS positions) fits the memory given."""

    def __init__(self, needed_bytes: int, available_bytes: int) -> None:
        super().__init__(f"needs {_mb(needed_bytes)} MB, {_mb(available_bytes)} MB available")
        self.needed_bytes = needed_bytes
        self.available_bytes = available_bytes


def minimum_bytes(weights_bytes: int, shape: KvShape | None) -> int:
    """The least a model can be loaded in: its weights and one slot of MIN_TOKENS positions."""
    if shape is None:  # an embedding model: weights only
        return weights_bytes
    return weights_bytes + shape.slot_bytes(min(MIN_TOKENS, shape.context_length))


def plan_memory(
    shape: KvShape, weights_bytes: int, available_bytes: int, max_slots: int, max_prefix_tokens: int
) -> MemoryPlan:
    """The largest plan within `available_bytes` (0: no limit) and the settings' bounds; raises DoesNotFit."""
    context = shape.context_length
    per_token, rings = shape.full_bytes_per_token, shape.ring_bytes
    ring_per_token = shape.bytes_per_token - per_token
    max_slots = max(1, max_slots)
    if available_bytes <= 0:
        return MemoryPlan(
            weights_bytes, per_token, max_slots, context, max(0, max_prefix_tokens), 0, rings, ring_per_token
        )
    needed = minimum_bytes(weights_bytes, shape)
    if needed > available_bytes:
        raise DoesNotFit(needed, available_bytes)
    room = available_bytes - weights_bytes  # for the caches
    kv_tokens = min(context, (room - rings) // per_token) if per_token else context
    slots = min(max_slots, room // shape.slot_bytes(kv_tokens))
    prefix = min(max(0, max_prefix_tokens), (room - slots * shape.slot_bytes(kv_tokens)) // shape.bytes_per_token)
    return MemoryPlan(weights_bytes, per_token, slots, kv_tokens, prefix, available_bytes, rings, ring_per_token)


def _mb(count: int) -> float:
    return round(count / MB, 1)
