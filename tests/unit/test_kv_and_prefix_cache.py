"""The key/value cache (slots that grow and shrink, rings of windowed layers) and the prefix cache
over it, on small buffers; the rings' layout checked against onnxruntime's attention kernel."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from worker.onnx.kv_cache import KvCache, Ring
from worker.onnx.onnx_decoder import ring_capacity
from worker.onnx.prefix_cache import PrefixCache

BLOCK = 4


def small_cache(initial: int = 8, limit: int = 64) -> KvCache:
    return KvCache(["key", "value"], 2, 1, 2, np.dtype(np.float32), initial_capacity=initial, limit=limit)


def read_prompt(cache: KvCache, row: int, prompt: list[int]) -> None:
    """Stand-in for reading a prompt: each position's entries are derived from its token."""
    cache.ensure(len(prompt))
    for name, buffer in cache.buffers.items():
        offset = 0.5 if name == "value" else 0.0
        buffer[row, :, : len(prompt)] = np.asarray(prompt, dtype=np.float32)[None, :, None] + offset


def test_ensure_grows_by_doubling_and_keeps_the_entries():
    cache = small_cache()
    read_prompt(cache, 0, [1, 2, 3])
    cache.ensure(9)
    assert cache.capacity == 16
    assert cache.buffers["key"][0, 0, :3, 0].tolist() == [1, 2, 3]


def test_ensure_never_passes_the_context():
    cache = small_cache(limit=12)
    cache.ensure(9)
    assert cache.capacity == 12
    with pytest.raises(ValueError):
        cache.ensure(13)


def test_reset_returns_to_the_initial_capacity():
    cache = small_cache()
    cache.ensure(30)
    cache.reset()
    assert cache.capacity == 8


def test_rows_are_views_that_write_into_the_cache():
    cache = small_cache()
    cache.rows(1, 2)["key"][:] = 7
    assert (cache.buffers["key"][1] == 7).all() and (cache.buffers["key"][0] == 0).all()


def test_a_prompt_starting_like_a_remembered_one_restores_whole_blocks():
    cache, prefixes = small_cache(), PrefixCache(max_tokens=64, block=BLOCK)
    first = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    read_prompt(cache, 0, first)
    prefixes.remember(first, cache, 0)
    restored = prefixes.restore([1, 2, 3, 4, 5, 6, 40, 41], cache, 1)
    assert restored == 4  # the 6 shared tokens hold one whole block
    assert np.array_equal(cache.buffers["value"][1, :, :4], cache.buffers["value"][0, :, :4])


def test_the_last_token_of_a_prompt_is_never_restored():
    cache, prefixes = small_cache(), PrefixCache(max_tokens=64, block=BLOCK)
    prompt = [1, 2, 3, 4, 5, 6, 7, 8]
    read_prompt(cache, 0, prompt)
    prefixes.remember(prompt, cache, 0)
    assert prefixes.restore(prompt, cache, 1) == 4  # 7 positions may be restored: one whole block


def test_a_prompt_with_nothing_in_common_restores_nothing():
    cache, prefixes = small_cache(), PrefixCache(max_tokens=64, block=BLOCK)
    read_prompt(cache, 0, [1, 2, 3, 4, 5])
    prefixes.remember([1, 2, 3, 4, 5], cache, 0)
    assert prefixes.restore([9, 9, 9, 9, 9], cache, 1) == 0


def test_prompts_shorter_than_a_block_are_not_remembered():
    cache, prefixes = small_cache(), PrefixCache(max_tokens=64, block=BLOCK)
    read_prompt(cache, 0, [1, 2, 3])
    prefixes.remember([1, 2, 3], cache, 0)
    assert prefixes.restore([1, 2, 3, 4, 5, 6], cache, 1) == 0


def test_the_least_recently_used_prompt_is_evicted_past_the_budget():
    cache, prefixes = small_cache(), PrefixCache(max_tokens=10, block=BLOCK)
    older, newer = [1, 2, 3, 4, 5], [6, 7, 8, 9, 10]
    for prompt in (older, newer):
        read_prompt(cache, 0, prompt)
        prefixes.remember(prompt, cache, 0)
    read_prompt(cache, 0, [11, 12, 13, 14, 15])
    prefixes.remember([11, 12, 13, 14, 15], cache, 0)
    assert prefixes.restore([*older, 99], cache, 1) == 0
    assert prefixes.restore([*newer, 99], cache, 1) == 4


# Windowed layers: a ring per row, laid out as onnxruntime's GroupQueryAttention keeps it.
RING = Ring(window=6, capacity=10)


def windowed_attention(ring: Ring) -> ort.InferenceSession:
    """One GroupQueryAttention node over a windowed cache, as the builder makes a sliding layer."""
    heads, head_size = 2, 8
    node = helper.make_node(
        "GroupQueryAttention",
        ["q", "k", "v", "past_key", "past_value", "seqlens_k", "total"],
        ["out", "present_key", "present_value"],
        domain="com.microsoft",
        num_heads=heads,
        kv_num_heads=1,
        local_window_size=ring.window,
        sliding_window_cache=1,
    )
    tensors = [
        helper.make_tensor_value_info("q", TensorProto.FLOAT, ["b", "s", heads * head_size]),
        helper.make_tensor_value_info("k", TensorProto.FLOAT, ["b", "s", head_size]),
        helper.make_tensor_value_info("v", TensorProto.FLOAT, ["b", "s", head_size]),
        helper.make_tensor_value_info("past_key", TensorProto.FLOAT, ["b", 1, "c", head_size]),
        helper.make_tensor_value_info("past_value", TensorProto.FLOAT, ["b", 1, "c", head_size]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["b"]),
        helper.make_tensor_value_info("total", TensorProto.INT32, []),
    ]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in node.output]
    graph = helper.make_graph([node], "windowed", tensors, outputs)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def read_in_steps(session: ort.InferenceSession, ring: Ring, steps: list[int]) -> tuple[np.ndarray, list[float]]:
    """Feed positions 0, 1, ... in steps of these sizes, each position's key and value being its
    number; the ring's keys after, and each position's output (the mean of the values it attends to)."""
    keys, values = (np.full((1, 1, ring.capacity, 8), -1.0, dtype=np.float32) for _ in range(2))
    read, outputs = 0, []
    for size in steps:
        positions = np.arange(read, read + size, dtype=np.float32)
        entries = np.zeros((1, size, 8), dtype=np.float32)
        entries[0, :, 0] = positions
        out = np.zeros((1, size, 16), dtype=np.float32)
        binding = session.io_binding()
        binding.bind_cpu_input("q", np.zeros((1, size, 16), dtype=np.float32))  # equal weights
        binding.bind_cpu_input("k", entries)
        binding.bind_cpu_input("v", entries)
        binding.bind_cpu_input("seqlens_k", np.array([read + size - 1], dtype=np.int32))
        binding.bind_cpu_input("total", np.array(read + size, dtype=np.int32))
        for name, buffer in (("key", keys), ("value", values)):
            shared = ort.OrtValue.ortvalue_from_numpy(buffer)
            binding.bind_ortvalue_input(f"past_{name}", shared)
            binding.bind_ortvalue_output(f"present_{name}", shared)
        binding.bind_ortvalue_output("out", ort.OrtValue.ortvalue_from_numpy(out))
        session.run_with_iobinding(binding)
        outputs += out[0, :, 0].tolist()
        read += size
    return keys[0, 0, :, 0], outputs


def test_a_ring_holds_the_positions_the_attention_kernel_keeps_whatever_the_steps():
    session = windowed_attention(RING)
    rng = np.random.default_rng(5)
    for _ in range(40):
        steps = rng.integers(1, 2 * RING.capacity, size=rng.integers(1, 5)).tolist()
        steps += [1] * int(rng.integers(0, 12))  # decode steps after the prompt
        keys, outputs = read_in_steps(session, RING, steps)
        length = sum(steps)
        first = RING.first(length)
        assert keys[: length - first].tolist() == list(range(first, length)), steps
        # Each position attends to the last `window` positions, itself included.
        assert np.allclose(outputs, [np.mean(np.arange(max(0, p - RING.window + 1), p + 1)) for p in range(length)])


def windowed_cache(initial: int = 8, limit: int = 64) -> KvCache:
    """A full layer ("key", "value") and a windowed one ("ring_key", "ring_value")."""
    names = ["key", "value", "ring_key", "ring_value"]
    rings = {"ring_key": RING, "ring_value": RING}
    return KvCache(names, 2, 1, 2, np.dtype(np.float32), initial_capacity=initial, limit=limit, rings=rings)


def read_windowed(cache: KvCache, row: int, prompt: list[int], run: int = BLOCK, restored: int = 0) -> None:
    """Stand-in for reading a prompt in runs (after `restored` positions): each position's entries
    are its token, the rings holding their last positions after each run as the kernel leaves them."""
    cache.ensure(len(prompt))
    for start in range(restored, len(prompt), run):
        stop = min(len(prompt), start + run)
        for name, buffer in cache.buffers.items():
            first = RING.first(stop) if name.startswith("ring") else 0
            buffer[row, :, : stop - first] = np.asarray(prompt[first:stop], dtype=np.float32)[None, :, None]
        cache.took_in(row, start, stop)


def test_a_ring_keeps_its_capacity_while_the_other_layers_grow_and_shrink():
    cache = windowed_cache()
    cache.ensure(30)
    assert cache.capacity == 30 and cache.buffers["key"].shape[2] == 30
    assert cache.buffers["ring_key"].shape[2] == RING.capacity
    cache.reset()
    assert cache.buffers["key"].shape[2] == 8 and cache.buffers["ring_key"].shape[2] == RING.capacity


def test_a_prompt_read_while_followed_restores_any_prefix_of_it():
    cache, prefixes = windowed_cache(), PrefixCache(max_tokens=64, block=BLOCK)
    prompt = list(range(300, 329))  # 29 tokens: past the capacity, the ring holds positions 20..28
    assert prefixes.restore(prompt, cache, 0) == 0  # nothing remembered yet: followed from its start
    read_windowed(cache, 0, prompt)
    prefixes.remember(prompt, cache, 0)
    assert prefixes.restore([*prompt[:13], 9], cache, 1) == 12  # a ring of 12 holds positions 5..11
    assert cache.buffers["ring_key"][1, 0, :7, 0].tolist() == prompt[5:12]
    assert cache.buffers["key"][1, 0, :12, 0].tolist() == prompt[:12]


def test_a_restored_prompt_is_followed_from_where_it_was_restored():
    cache, prefixes = windowed_cache(), PrefixCache(max_tokens=64, block=BLOCK)
    first = list(range(100, 113))
    prefixes.restore(first, cache, 0)
    read_windowed(cache, 0, first)
    prefixes.remember(first, cache, 0)
    second = [*first[:12], *range(500, 517)]  # 12 positions restored, 17 read after them
    assert prefixes.restore(second, cache, 1) == 12
    read_windowed(cache, 1, second, restored=12)
    prefixes.remember(second, cache, 1)
    assert prefixes.restore([*second[:21], 9], cache, 0) == 20
    assert cache.buffers["ring_key"][0, 0, : 20 - RING.first(20), 0].tolist() == second[RING.first(20) : 20]


def test_without_following_a_ring_gives_only_prefixes_whose_positions_it_still_holds():
    cache, prefixes = windowed_cache(), PrefixCache(max_tokens=64, block=BLOCK)
    prompt = list(range(200, 229))  # the ring holds positions 20..28
    read_windowed(cache, 0, prompt)  # not followed (its first run was not restored by the prefix cache)
    prefixes.remember(prompt, cache, 0)
    assert prefixes.restore([*prompt[:25], 9], cache, 1) == 0  # 24 positions: 15.. would be needed
    assert prefixes.restore([*prompt, 7], cache, 1) == 28  # a ring of 28 holds positions 20..27
    assert cache.buffers["ring_key"][1, 0, :8, 0].tolist() == prompt[20:28]
    assert cache.buffers["key"][1, 0, :28, 0].tolist() == prompt[:28]


def test_a_ring_whose_window_is_shorter_than_a_run_is_not_followed():
    cache = windowed_cache()
    cache.follow(0)
    prompt = list(range(29))
    read_windowed(cache, 0, prompt, run=8)  # after positions 8..15 the ring holds 10..15 only
    held = cache.held(0, len(prompt))
    assert held["ring_key"][0] == RING.first(29) and held["key"][0] == 0


def test_a_step_that_would_move_a_placeholder_rows_ring_puts_it_back():
    cache = windowed_cache()
    read_windowed(cache, 0, list(range(10)))  # a full ring: one more position moves it
    read_windowed(cache, 1, list(range(7)))
    held = cache.moved_by_a_step({0: 10, 1: 7})
    assert [row for _, row in held] == [0, 0]  # ring_key and ring_value of row 0
    cache.buffers["ring_key"][0] = -1
    cache.put_back(held)
    assert cache.buffers["ring_key"][0, 0, :, 0].tolist() == list(range(10))


def test_a_ring_has_the_capacity_onnxruntime_genai_gives_a_windowed_cache_on_cpu():
    def genai(cache_slack: int = 0, chunk_size: int | None = None) -> dict:
        decoder = {"sliding_window": {"window_size": 48, "cache_slack": cache_slack}}
        return {"model": {"decoder": decoder}, "search": {"chunk_size": chunk_size}}

    assert ring_capacity(genai(), 48) == 64  # the window and 16 positions
    assert ring_capacity(genai(cache_slack=32), 48) == 80
    assert ring_capacity(genai(cache_slack=-1), 48) == 64
    assert ring_capacity(genai(chunk_size=100), 48) == 147  # a prefill chunk fits beside the window
