"""A decoder-only model from onnxruntime-genai's builder, run step by step with onnxruntime.

Ladle drives the model itself on CPU (onnxruntime-genai's Generator cannot add or drop rows of a
running batch): a `decode` step advances any set of rows by one token each, and `prefill` fills a
row's cache with a chunk of its prompt. Inputs and outputs are bound to preallocated buffers
(IOBinding), so no cache is copied between steps.

The graph's inputs and types are read from the session, not assumed: a `position_ids` input
(graphs whose rotary embedding is outside attention) is fed each row's positions, and fp16
logits are cast to fp32 for sampling.

Sliding-window layers whose graph keeps a windowed cache (onnxruntime-genai's builder's default:
GroupQueryAttention's `sliding_window_cache`) get a ring of the capacity onnxruntime-genai gives
them (worker/onnx/kv_cache.py Ring); the other layers of the model keep their full caches.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from worker.onnx.decoder_graph import FIRST_POSITION, LONG_ROPE_INPUT, edited_graph, windowed_caches
from worker.onnx.kv_cache import KvCache, Ring

log = logging.getLogger(__name__)

_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


# genai_config's names of per-layer states besides keys and values (LFM2's convolutions, gated
# delta nets' recurrences): a cache this loop does not keep.
_STATE_INPUTS = {"past_conv_names": "convolution", "past_recurrent_names": "recurrent"}

# Positions onnxruntime-genai keeps in a windowed cache beyond the window on CPU, unless
# genai_config's cache_slack says otherwise (src/models/windowed_kv_cache.cpp).
_RING_SLACK = 16


class UnsupportedGraph(Exception):
    """A decoder graph this step loop cannot drive (the message says why); onnxruntime-genai's
    Generator runs it instead."""


def unsupported_layout(genai: dict) -> str | None:
    """Why the model's genai_config describes something other than a plain decoder with a
    key/value cache per layer, full or windowed (None when it does not)."""
    model = genai["model"]
    decoder = model.get("decoder", {})
    others = sorted(set(model) & {"embedding", "vision", "speech", "audio", "encoder"})
    if others:
        return f"components besides the decoder ({', '.join(others)})"
    sliding = decoder.get("sliding_window", {})
    if sliding.get("slide_key_value_cache") or sliding.get("slide_inputs"):
        return "a key/value cache slid by onnxruntime-genai (genai_config sliding_window)"
    if "pipeline" in decoder:
        return "a pipeline of decoder graphs"
    states = sorted(set(decoder.get("inputs", {})) & set(_STATE_INPUTS))
    if states:
        kinds = ", ".join(f"{_STATE_INPUTS[s]} ({s})" for s in states)
        return f"a hybrid of attention and recurrent layers: per-layer {kinds} states in genai_config"
    if not {"past_key_names", "past_value_names"} <= set(decoder.get("inputs", {})):
        return "no per-layer past key/value inputs"
    return None


def ring_capacity(genai: dict, window: int) -> int:
    """The positions onnxruntime-genai's CPU cache keeps per row for a layer of `window`: the
    window, plus the larger of the slack (genai_config cache_slack, else _RING_SLACK) and a
    prefill chunk less one. (onnxruntime-genai gives no more than a sequence's max_length, and
    fails below the window; a ring never fuller than that gives the same answers.)"""
    configured = int(genai["model"]["decoder"].get("sliding_window", {}).get("cache_slack", 0))
    chunk = int(genai.get("search", {}).get("chunk_size") or 0)
    return window + max(chunk - 1, configured if configured > 0 else _RING_SLACK)


class OnnxDecoder:
    def __init__(
        self, folder: Path, genai: dict, slots: int, intra_op_threads: int = 0, context_limit: int | None = None
    ) -> None:
        """`slots` sequences of at most `context_limit` tokens each (default: the model's context,
        else what the memory plan allows); raises UnsupportedGraph for a graph it cannot drive."""
        reason = unsupported_layout(genai)
        if reason is not None:
            raise UnsupportedGraph(reason)
        model = genai["model"]
        decoder = model["decoder"]
        options = ort.SessionOptions()
        if intra_op_threads > 0:
            options.intra_op_num_threads = intra_op_threads
        outputs = decoder["outputs"]
        self._logits_name = outputs["logits"]
        graph, last_only, self.long_rope_threshold = edited_graph(folder / decoder["filename"], self._logits_name)
        if graph is None:
            source: str | bytes = str(folder / decoder["filename"])
        else:  # made from bytes: its external weights are found in the model's folder
            source = graph
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(folder))
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        # Logits of the last input position only (edited graph), or of every position.
        self.last_position_only = last_only
        inputs = {i.name: i for i in self.session.get_inputs()}
        names = decoder["inputs"]
        self._ids_name, self._mask_name = names["input_ids"], names["attention_mask"]
        self._ids_type = _NUMPY_TYPES[inputs[self._ids_name].type]
        self._mask_type = _NUMPY_TYPES[inputs[self._mask_name].type]
        self._positions_name = names.get("position_ids")
        if self._positions_name not in inputs:
            self._positions_name = None
        logits_output = next(o for o in self.session.get_outputs() if o.name == self._logits_name)
        self._logits_type = _NUMPY_TYPES[logits_output.type]
        layers = range(decoder["num_hidden_layers"])
        self._present = {}
        for past, present in (
            (names["past_key_names"], outputs["present_key_names"]),
            (names["past_value_names"], outputs["present_value_names"]),
        ):
            self._present.update({past % i: present % i for i in layers})
        known = {self._ids_name, self._mask_name, self._positions_name, LONG_ROPE_INPUT, FIRST_POSITION}
        known |= set(self._present)
        unknown = sorted(set(inputs) - known)
        if unknown:  # recurrent or convolution states, ...: inputs this loop has nothing to feed
            raise UnsupportedGraph(f"graph inputs it does not feed: {', '.join(unknown)}")
        cache_type = _NUMPY_TYPES[inputs[names["past_key_names"] % 0].type]
        self.vocab_size = int(model["vocab_size"])
        self.context_length = min(int(model["context_length"]), context_limit or int(model["context_length"]))
        windows = windowed_caches(folder / decoder["filename"])
        self.cache = KvCache(
            list(self._present),
            slots,
            decoder["num_key_value_heads"],
            decoder["head_size"],
            cache_type,
            initial_capacity=256,
            limit=self.context_length,
            rings={past: Ring(w, ring_capacity(genai, w)) for past, w in windows.items()},
        )
        self._logits = np.zeros((slots, 1, self.vocab_size), dtype=self._logits_type)
        self._bindings: dict[str, tuple[tuple, ort.IOBinding]] = {}
        self._last_only = np.asarray([-1], dtype=np.int64)  # FIRST_POSITION of decode steps

    def smallest_invariant_width(self) -> int:
        """The fewest rows a decode step must have for each row's logits to be the same whatever the
        step's width: 2 where one row takes other kernels than two (onnxruntime's MatMulNBits on
        AVX2 runs a one-row kernel of its own, which rounds differently), else 1.

        Found by running it: a short probe prompt in slots 0 and 1, decoded at widths 1, 2 and 3.
        Widths of two rows and more agree to the bit wherever Ladle has run (every row's arithmetic
        is its own); should they not, a warning says so, as answers then depend on the crowd.
        """
        if self.cache.slots < 2:
            return 1  # one row at a time: there is no crowd to differ from
        probe = [(7 * i + 3) % self.vocab_size for i in range(1, 6)]
        for row in range(min(3, self.cache.slots)):
            self.prefill(row, probe, 0)
        logits = {}
        for width in range(1, min(3, self.cache.slots) + 1):
            tokens = np.full(width, probe[0], dtype=np.int64)
            logits[width] = self.decode(tokens, np.full(width, len(probe), dtype=np.int64))[0].copy()
        self.reset_cache()
        if 3 in logits and not np.array_equal(logits[2], logits[3]):
            log.warning("decode steps of 2 and 3 rows round differently: answers may depend on the batch")
        return 1 if np.array_equal(logits[1], logits[2]) else 2

    def reset_cache(self) -> None:
        """Shrink the cache back (when no row is in flight) and drop bindings of the old buffers."""
        self._bindings.clear()
        self.cache.reset()

    def decode(self, tokens: np.ndarray, lengths: np.ndarray, placeholders: Sequence[int] = ()) -> np.ndarray:
        """Feed `tokens[r]` to rows 0..len-1, whose caches hold `lengths[r]` tokens; logits [rows, vocab].

        Rows not in flight take any token and length 0: their entries are overwritten later. So do
        `placeholders` (rows still reading their prompts) at their own length; what a ring of
        theirs holds is put back as it was.
        """
        rows = len(tokens)
        total = int(lengths.max()) + 1
        self.cache.ensure(total)
        held = self.cache.moved_by_a_step({row: int(lengths[row]) for row in placeholders})
        mask = (np.arange(total)[None, :] <= lengths[:, None]).astype(self._mask_type)
        logits = self._logits[:rows]
        ids = tokens.reshape(rows, 1).astype(self._ids_type)
        self._run("decode", (0, rows), ids, mask, logits, lengths.reshape(rows, 1), False)
        self.cache.put_back(held)
        return logits[:, 0].astype(np.float32, copy=False)

    def exact_prefix(self, prompt_length: int) -> bool:
        """Whether cache entries of a prompt's prefix are those of any prompt starting alike (not so
        for LongRoPE prompts past the original context: read wholly with the long factors)."""
        return self.long_rope_threshold is None or prompt_length <= self.long_rope_threshold

    def prefill(
        self, row: int, tokens: list[int], start: int, every_position: bool = False, prompt_length: int = 0
    ) -> np.ndarray:
        """Put `tokens` (the prompt of `prompt_length` tokens, from position `start`) into `row`'s
        cache; logits of the last one, or with `every_position` of each one ([tokens, vocab]: row i
        scores the token after tokens[i])."""
        total = start + len(tokens)
        self.cache.ensure(total)
        positions = len(tokens) if every_position or not self.last_position_only else 1
        logits = np.empty((1, positions, self.vocab_size), dtype=self._logits_type)
        ids = np.asarray([tokens], dtype=self._ids_type)
        first = np.asarray([0 if every_position else -1], dtype=np.int64)
        mask = np.ones((1, total), dtype=self._mask_type)
        where = np.arange(start, total)[None, :]
        long_rope = not self.exact_prefix(prompt_length)
        self._run("prefill", (row, row + 1), ids, mask, logits, where, long_rope, first)
        self.cache.took_in(row, start, total)
        logits = logits.astype(np.float32, copy=False)
        return logits[0] if every_position else logits[0, -1]

    def _run(
        self,
        kind: str,
        rows: tuple[int, int],
        ids: np.ndarray,
        mask: np.ndarray,
        logits: np.ndarray,
        positions: np.ndarray,
        long_rope: bool,
        first: np.ndarray | None = None,
    ) -> None:
        binding = self._binding(kind, rows)
        binding.bind_cpu_input(self._ids_name, ids)
        binding.bind_cpu_input(self._mask_name, mask)
        if self._positions_name is not None:
            binding.bind_cpu_input(self._positions_name, np.ascontiguousarray(positions, dtype=np.int64))
        if self.long_rope_threshold is not None:
            binding.bind_cpu_input(LONG_ROPE_INPUT, np.array(long_rope))
        if first is not None and self.last_position_only:
            binding.bind_cpu_input(FIRST_POSITION, first)
        binding.bind_ortvalue_output(self._logits_name, ort.OrtValue.ortvalue_from_numpy(logits))
        self.session.run_with_iobinding(binding)

    def _binding(self, kind: str, rows: tuple[int, int]) -> ort.IOBinding:
        """A binding of the cache rows [start, stop) as past and present, kept while they stay the
        same buffers (binding 60 tensors costs about as much as 4% of a one-row step)."""
        key = (rows, self.cache.generation)
        cached = self._bindings.get(kind)
        if cached is not None and cached[0] == key:
            return cached[1]
        binding = self.session.io_binding()
        if self.last_position_only:  # decode steps keep this; each prefill binds its own
            binding.bind_cpu_input(FIRST_POSITION, self._last_only)
        for past, buffer in self.cache.rows(*rows).items():
            value = ort.OrtValue.ortvalue_from_numpy(buffer)
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(self._present[past], value)
        self._bindings[kind] = (key, binding)
        return binding
