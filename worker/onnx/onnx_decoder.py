"""A decoder-only model from onnxruntime-genai's builder, run step by step with onnxruntime.

Ladle drives the model itself on CPU (onnxruntime-genai's Generator cannot add or drop rows of a
running batch): a `decode` step advances any set of rows by one token each, and `prefill` fills a
row's cache with a chunk of its prompt. Inputs and outputs are bound to preallocated buffers
(IOBinding), so no cache is copied between steps.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from worker.onnx.decoder_graph import FIRST_POSITION, last_position_graph
from worker.onnx.kv_cache import KvCache

log = logging.getLogger(__name__)

_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


class OnnxDecoder:
    def __init__(self, folder: Path, genai: dict, slots: int, intra_op_threads: int = 0) -> None:
        model = genai["model"]
        decoder = model["decoder"]
        options = ort.SessionOptions()
        if intra_op_threads > 0:
            options.intra_op_num_threads = intra_op_threads
        outputs = decoder["outputs"]
        self._logits_name = outputs["logits"]
        graph = last_position_graph(folder / decoder["filename"], self._logits_name)
        if graph is None:
            source: str | bytes = str(folder / decoder["filename"])
        else:  # made from bytes: its external weights are found in the model's folder
            source = graph
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(folder))
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        # Logits of the last input position only (edited graph), or of every position.
        self.last_position_only = graph is not None
        inputs = {i.name: i for i in self.session.get_inputs()}
        names = decoder["inputs"]
        self._ids_name, self._mask_name = names["input_ids"], names["attention_mask"]
        self._ids_type = _NUMPY_TYPES[inputs[self._ids_name].type]
        self._mask_type = _NUMPY_TYPES[inputs[self._mask_name].type]
        layers = range(decoder["num_hidden_layers"])
        self._present = {}
        for past, present in (
            (names["past_key_names"], outputs["present_key_names"]),
            (names["past_value_names"], outputs["present_value_names"]),
        ):
            self._present.update({past % i: present % i for i in layers})
        cache_type = _NUMPY_TYPES[inputs[names["past_key_names"] % 0].type]
        self.vocab_size = int(model["vocab_size"])
        self.context_length = int(model["context_length"])
        self.cache = KvCache(
            list(self._present),
            slots,
            decoder["num_key_value_heads"],
            decoder["head_size"],
            cache_type,
            initial_capacity=256,
            limit=self.context_length,
        )
        self._logits = np.zeros((slots, 1, self.vocab_size), dtype=np.float32)
        self._bindings: dict[str, tuple[tuple, ort.IOBinding]] = {}
        self._last_only = np.asarray([-1], dtype=np.int64)  # FIRST_POSITION of decode steps

    def reset_cache(self) -> None:
        """Shrink the cache back (when no row is in flight) and drop bindings of the old buffers."""
        self._bindings.clear()
        self.cache.reset()

    def decode(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Feed `tokens[r]` to rows 0..len-1, whose caches hold `lengths[r]` tokens; logits [rows, vocab].

        Rows not in flight take any token and length 0: their entries are overwritten later.
        """
        rows = len(tokens)
        total = int(lengths.max()) + 1
        self.cache.ensure(total)
        mask = (np.arange(total)[None, :] <= lengths[:, None]).astype(self._mask_type)
        logits = self._logits[:rows]
        self._run("decode", (0, rows), tokens.reshape(rows, 1).astype(self._ids_type), mask, logits)
        return logits[:, 0]

    def prefill(self, row: int, tokens: list[int], start: int, every_position: bool = False) -> np.ndarray:
        """Put `tokens` (the prompt from position `start`) into `row`'s cache; logits of the last one,
        or with `every_position` of each one ([tokens, vocab]: row i scores the token after tokens[i])."""
        total = start + len(tokens)
        self.cache.ensure(total)
        positions = len(tokens) if every_position or not self.last_position_only else 1
        logits = np.empty((1, positions, self.vocab_size), dtype=np.float32)
        ids = np.asarray([tokens], dtype=self._ids_type)
        first = np.asarray([0 if every_position else -1], dtype=np.int64)
        self._run("prefill", (row, row + 1), ids, np.ones((1, total), dtype=self._mask_type), logits, first)
        return logits[0] if every_position else logits[0, -1]

    def _run(
        self,
        kind: str,
        rows: tuple[int, int],
        ids: np.ndarray,
        mask: np.ndarray,
        logits: np.ndarray,
        first: np.ndarray | None = None,
    ) -> None:
        binding = self._binding(kind, rows)
        binding.bind_cpu_input(self._ids_name, ids)
        binding.bind_cpu_input(self._mask_name, mask)
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
