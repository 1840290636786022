"""The decoder graph as Ladle runs it: the LM head only for the last position of the input.

onnxruntime-genai's builder applies the LM head to every input position, so reading a prompt
chunk computes [tokens, vocab] logits of which only the last row is used (for SmolLM2 the head
is about a fifth of the model's work). Ladle edits the graph in memory, before the session is
made: a Slice keeps the last position of the final hidden states in front of the LM head. A
decode step has one position per row, so it is unchanged; the files on disk are not touched.

The Slice's start is an input of the graph: -1 keeps the last position; 0 keeps every position,
whose logits a request for the prompt's logprobs needs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

_HEAD_OPS = {"MatMul", "MatMulNBits"}
# The input choosing the first position whose logits are computed: [-1] (the last) or [0] (all).
FIRST_POSITION = "ladle/last/start"


def last_position_graph(path: Path, logits_name: str) -> bytes | None:
    """The graph at `path` with `logits_name` computed for the last position only (external
    weights stay where they are); None when the LM head is not the single MatMul it expects."""
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    heads = [node for node in graph.node if logits_name in node.output]
    output = next((o for o in graph.output if o.name == logits_name), None)
    if len(heads) != 1 or heads[0].op_type not in _HEAD_OPS or output is None:
        log.info("LM head not recognised; logits for every position", extra={"model": str(path)})
        return None
    head = heads[0]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([np.iinfo(np.int64).max], dtype=np.int64), "ladle/last/end"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "ladle/last/axis"),
        ]
    )
    last = helper.make_node(
        "Slice",
        [head.input[0], FIRST_POSITION, "ladle/last/end", "ladle/last/axis"],
        ["ladle/last/hidden"],
        name="/ladle/last_position",
    )
    graph.node.insert(list(graph.node).index(head), last)
    head.input[0] = "ladle/last/hidden"
    graph.input.append(helper.make_tensor_value_info(FIRST_POSITION, onnx.TensorProto.INT64, [1]))
    positions = output.type.tensor_type.shape.dim[1]
    positions.Clear()
    positions.dim_param = "ladle_positions"
    return model.SerializeToString()
