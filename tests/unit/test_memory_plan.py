"""The memory plan: bytes per cached token from a genai_config, and the split of a budget."""

from __future__ import annotations

import pytest

from worker.models.memory_plan import MB, DoesNotFit, KvShape, kv_shape, minimum_bytes, plan_memory

# SmolLM2-135M as onnxruntime-genai's builder describes it (30 layers, 3 key/value heads of 64).
SMOLLM2_CONFIG = {
    "model": {
        "context_length": 8192,
        "decoder": {"num_hidden_layers": 30, "num_key_value_heads": 3, "head_size": 64, "num_attention_heads": 9},
    }
}
SMALL = KvShape(layers=2, kv_heads=2, head_size=16, element_size=4, context_length=8192)  # 512 bytes a token


def test_bytes_per_token_counts_keys_and_values_of_every_layer():
    assert kv_shape(SMOLLM2_CONFIG, "float32").bytes_per_token == 2 * 30 * 3 * 64 * 4  # 46,080
    assert kv_shape(SMOLLM2_CONFIG, "float16").bytes_per_token == 2 * 30 * 3 * 64 * 2


def test_an_unknown_cache_dtype_is_refused():
    with pytest.raises(ValueError):
        kv_shape(SMOLLM2_CONFIG, "int3")


def test_without_a_budget_the_plan_is_the_settings():
    plan = plan_memory(SMALL, weights_bytes=10 * MB, available_bytes=0, max_slots=8, max_prefix_tokens=512)
    assert (plan.slots, plan.kv_tokens, plan.prefix_tokens) == (8, 8192, 512)
    assert plan.total_bytes == 10 * MB + (8 * 8192 + 512) * 512


def test_a_budget_gives_the_full_context_first_then_slots_then_the_prefix_cache():
    # 10 MB of weights + 10 MB left = 20,480 tokens: two slots of 8192, 4,096 tokens over.
    plan = plan_memory(SMALL, weights_bytes=10 * MB, available_bytes=20 * MB, max_slots=8, max_prefix_tokens=512)
    assert (plan.slots, plan.kv_tokens, plan.prefix_tokens) == (2, 8192, 512)
    assert plan.total_bytes <= 20 * MB


def test_a_tight_budget_shortens_the_one_slot():
    # SmolLM2 (85 MB of weights) in 100 MB: 15 MB of cache is 341 tokens of 46,080 bytes.
    shape = kv_shape(SMOLLM2_CONFIG, "float32")
    plan = plan_memory(shape, weights_bytes=85 * MB, available_bytes=100 * MB, max_slots=8, max_prefix_tokens=512)
    assert (plan.slots, plan.kv_tokens, plan.prefix_tokens) == (1, 341, 0)
    assert plan.total_bytes <= 100 * MB


def test_the_minimum_is_the_weights_and_one_slot_of_256_tokens():
    assert minimum_bytes(10 * MB, SMALL) == 10 * MB + 256 * 512
    assert minimum_bytes(10 * MB, None) == 10 * MB  # an embedding model has no cache


def test_below_the_minimum_the_model_does_not_fit():
    with pytest.raises(DoesNotFit) as refused:
        plan_memory(SMALL, weights_bytes=10 * MB, available_bytes=10 * MB + 1000, max_slots=8, max_prefix_tokens=512)
    assert refused.value.needed_bytes == 10 * MB + 256 * 512


def test_the_plan_describes_itself_in_megabytes():
    plan = plan_memory(SMALL, weights_bytes=10 * MB, available_bytes=20 * MB, max_slots=8, max_prefix_tokens=512)
    described = plan.describe()
    assert described["weights_mb"] == 10.0 and described["kv_cache_mb"] == 8.0 and described["budget_mb"] == 20.0
    assert described["slots"] == 2 and described["kv_tokens"] == 8192 and described["bytes_per_token"] == 512


def test_a_config_with_a_zero_size_is_not_sized():
    decoder = {"num_hidden_layers": 2, "num_key_value_heads": 1, "head_size": 8}
    config = {"model": {"context_length": 0, "decoder": decoder}}
    with pytest.raises(ValueError):
        kv_shape(config, "float32")


# SMALL's two layers, the first a windowed cache of 64 positions a row: 256 bytes a position grows a
# row, 16 KiB of ring each row holds whatever its length; a prefix cache position keeps both layers.
WINDOWED = KvShape(layers=2, kv_heads=2, head_size=16, element_size=4, context_length=8192, ring_positions=(64,))


def test_a_windowed_layer_costs_its_ring_per_row_not_a_position_per_token():
    assert (WINDOWED.full_bytes_per_token, WINDOWED.ring_bytes, WINDOWED.bytes_per_token) == (256, 64 * 256, 512)
    assert WINDOWED.slot_bytes(8192) == 8192 * 256 + 64 * 256
    plan = plan_memory(WINDOWED, weights_bytes=10 * MB, available_bytes=0, max_slots=8, max_prefix_tokens=512)
    assert plan.total_bytes == 10 * MB + 8 * (8192 * 256 + 64 * 256) + 512 * 512
    assert plan.describe()["kv_cache_mb"] == round(8 * (8192 * 256 + 64 * 256) / MB, 1)


def test_a_budget_holds_more_rows_of_a_windowed_model():
    # 10 MB of cache: rows of 8192 positions cost 2 MB + 16 KiB here (4 MB without the window).
    windowed = plan_memory(WINDOWED, weights_bytes=10 * MB, available_bytes=20 * MB, max_slots=8, max_prefix_tokens=0)
    full = plan_memory(SMALL, weights_bytes=10 * MB, available_bytes=20 * MB, max_slots=8, max_prefix_tokens=0)
    assert (windowed.slots, windowed.kv_tokens, full.slots) == (4, 8192, 2)
    assert windowed.total_bytes <= 20 * MB


def test_a_model_whose_every_layer_is_windowed_holds_its_whole_context_in_its_rings():
    rings = KvShape(layers=2, kv_heads=2, head_size=16, element_size=4, context_length=8192, ring_positions=(64, 64))
    plan = plan_memory(rings, weights_bytes=10 * MB, available_bytes=11 * MB, max_slots=8, max_prefix_tokens=0)
    assert (plan.slots, plan.kv_tokens) == (8, 8192) and plan.total_bytes <= 11 * MB
    assert minimum_bytes(10 * MB, rings) == 10 * MB + 2 * 64 * 256
