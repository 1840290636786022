"""The AWQ checkpoint writer packs int4 weights as AutoAWQ's GEMM kernels do."""

import numpy as np

from cli.awq_checkpoint import dequantize, pack, quantize, unpack


def test_eight_columns_share_a_word_interleaved_even_columns_in_the_low_nibbles():
    word = pack(np.arange(8, dtype=np.uint32).reshape(1, 8))
    assert word.shape == (1, 1)
    assert int(word.view(np.uint32)[0, 0]) == 0x75316420  # nibbles, low to high: 0 2 4 6 1 3 5 7


def test_unpack_returns_the_packed_columns_in_their_order():
    values = np.random.default_rng(0).integers(0, 16, size=(3, 32)).astype(np.uint32)
    assert np.array_equal(unpack(pack(values)), values)


def test_a_quantized_layer_stands_for_its_weight_within_half_a_step_per_group():
    weight = np.random.default_rng(1).normal(0, 0.02, size=(64, 256)).astype(np.float32)  # (out, in)
    qweight, qzeros, scales = quantize(weight, 128)
    assert qweight.shape == (256, 8) and qzeros.shape == (2, 8) and scales.shape == (2, 64)
    assert qweight.dtype == qzeros.dtype == np.int32 and scales.dtype == np.float16
    error = np.abs(dequantize(qweight, qzeros, scales, 128) - weight)
    step = np.repeat(scales.astype(np.float32), 128, axis=0).T
    assert np.all(error <= step / 2 + 1e-6)
