"""The key/value cache (slots that grow and shrink) and the prefix cache over it, on small buffers."""

import numpy as np
import pytest

from worker.onnx.kv_cache import KvCache
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
