"""The decoder graph as Ladle runs it: the LM head only for the last position of the input, and
LongRoPE's rotary caches chosen per row.

onnxruntime-genai's builder applies the LM head to every input position, so reading a prompt
chunk computes [tokens, vocab] logits of which only the last row is used (for SmolLM2 the head
is about a fifth of the model's work). Ladle edits the graph in memory, before the session is
made: a Slice keeps the last position of the final hidden states in front of the LM head. A
decode step has one position per row, so it is unchanged; the files on disk are not touched.
The Slice's start is an input of the graph: -1 keeps the last position; 0 keeps every position,
whose logits a request for the prompt's logprobs needs.

LongRoPE (Phi-3 128k, Phi-3.5, Phi-4-mini): the builder's graph picks the short or the long
rotary cache for the whole batch by the attention mask's width (long past the original context).
onnxruntime-genai runs one sequence, or sequences of equal length, so the width is the
sequence's own length; in Ladle's batch it is the longest row's, which would rotate a short
row with the long factors. The edit makes the choice per position instead: positions below the
original context take the short cache, the others the long one (a decode step's new position is
past the original context exactly when its sequence is), unless the input `ladle/long_rope` is
true, which gives the long cache to every position: onnxruntime-genai reads a prompt longer than
the original context wholly with the long factors, and so does Ladle.

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


LONG_ROPE_INPUT = "ladle/long_rope"


def cache_dtype(path: Path, past_name: str) -> str:
    """The element type of the graph input `past_name` (a key/value cache input): "float16", "float32"...

    Reads the graph without its external weights; "float32" when the input is not found."""
    model = onnx.load(str(path), load_external_data=False)
    found = next((i for i in model.graph.input if i.name == past_name), None)
    if found is None:
        return "float32"
    return helper.tensor_dtype_to_np_dtype(found.type.tensor_type.elem_type).name


def windowed_caches(path: Path) -> dict[str, int]:
    """The past key and value inputs of attention layers whose cache is a window of positions
    (GroupQueryAttention's `sliding_window_cache`), each with its window (`local_window_size`).

    Reads the graph without its external weights."""
    model = onnx.load(str(path), load_external_data=False)
    windows = {}
    for node in model.graph.node:
        if node.op_type != "GroupQueryAttention":
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attributes.get("sliding_window_cache", 0) and attributes.get("local_window_size", -1) > 0:
            windows.update({past: int(attributes["local_window_size"]) for past in node.input[3:5] if past})
    return windows


def edited_graph(path: Path, logits_name: str) -> tuple[bytes | None, bool, int | None]:
    """The graph at `path` as Ladle runs it (None when unchanged; external weights stay where they
    are), whether logits are for the last position only, and LongRoPE's original context (None
    when the graph has no choice of rotary caches)."""
    model = onnx.load(str(path), load_external_data=False)
    last_only = _last_position(model, logits_name)
    threshold = _per_row_long_rope(model)
    edited = last_only or threshold is not None
    return (model.SerializeToString() if edited else None), last_only, threshold


def _last_position(model: onnx.ModelProto, logits_name: str) -> bool:
    """`logits_name` computed for the last position only; False when the LM head is not the
    single MatMul it expects."""
    graph = model.graph
    heads = [node for node in graph.node if logits_name in node.output]
    output = next((o for o in graph.output if o.name == logits_name), None)
    if len(heads) != 1 or heads[0].op_type not in _HEAD_OPS or output is None:
        log.info("LM head not recognised; logits for every position", extra={"model": graph.name})
        return False
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
    return True


def _constant_value(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for initializer in graph.initializer:
        if initializer.name == name:
            return numpy_helper.to_array(initializer)
    for node in graph.node:
        if node.op_type == "Constant" and name in node.output:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _per_row_long_rope(model: onnx.ModelProto) -> int | None:
    """Edit the builder's choice of rotary caches (`If` over Greater(mask width, original context))
    into a per-position one; returns the original context, or None when there is no such choice."""
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    choice = next(
        (
            n
            for n in graph.node
            if n.op_type == "If"
            and "rope" in n.name
            and len(n.output) == 2
            and getattr(producers.get(n.input[0]), "op_type", None) == "Greater"
        ),
        None,
    )
    if choice is None:
        return None
    threshold = _constant_value(graph, producers[choice.input[0]].input[1])
    then_branch = next(a.g for a in choice.attribute if a.name == "then_branch")
    if threshold is None or len(then_branch.output) != 2:
        return None
    threshold = int(threshold.reshape(-1)[0])
    # The long caches again, from a copy of the `then` branch under a condition that is always true.
    long_branch = onnx.GraphProto()
    long_branch.CopyFrom(then_branch)
    long_branch.name = "ladle_long_rope_branch"
    renamed = {out.name: f"ladle/rope/{out.name}" for out in long_branch.output}
    for node in long_branch.node:
        node.output[:] = [renamed.get(o, o) for o in node.output]
    for out in long_branch.output:
        out.name = renamed[out.name]
    always = "ladle/rope/always"
    longs = ["ladle/rope/long_cos", "ladle/rope/long_sin"]
    chosen = [f"ladle/rope/chosen_{i}" for i in range(2)]
    outputs = list(choice.output)
    choice.output[:] = chosen
    choice.input[0] = LONG_ROPE_INPUT
    graph.input.append(helper.make_tensor_value_info(LONG_ROPE_INPUT, onnx.TensorProto.BOOL, []))
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(True), always),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "ladle/rope/zero"),
            numpy_helper.from_array(np.array([threshold], dtype=np.int64), "ladle/rope/threshold"),
            numpy_helper.from_array(np.array([np.iinfo(np.int64).max], dtype=np.int64), "ladle/rope/end"),
        ]
    )
    nodes = [
        helper.make_node(
            "If", [always], longs, name="/ladle/rope/long", then_branch=long_branch, else_branch=long_branch
        )
    ]
    for i, output in enumerate(outputs):
        nodes += [
            helper.make_node(
                "Slice",
                [chosen[i], "ladle/rope/zero", "ladle/rope/threshold", "ladle/rope/zero"],
                [f"ladle/rope/head_{i}"],
            ),
            helper.make_node(
                "Slice",
                [longs[i], "ladle/rope/threshold", "ladle/rope/end", "ladle/rope/zero"],
                [f"ladle/rope/tail_{i}"],
            ),
            helper.make_node("Concat", [f"ladle/rope/head_{i}", f"ladle/rope/tail_{i}"], [output], axis=0),
        ]
    at = list(graph.node).index(choice) + 1
    for offset, node in enumerate(nodes):
        graph.node.insert(at + offset, node)
    return threshold
