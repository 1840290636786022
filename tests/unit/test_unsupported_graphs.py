"""Which genai_config layouts the continuous engine leaves to onnxruntime-genai's Generator."""

from worker.onnx.onnx_decoder import unsupported_layout

PLAIN = {
    "model": {
        "decoder": {
            "filename": "model.onnx",
            "inputs": {"input_ids": "input_ids", "past_key_names": "k.%d", "past_value_names": "v.%d"},
        }
    }
}


def with_decoder(**fields) -> dict:
    return {"model": {"decoder": {**PLAIN["model"]["decoder"], **fields}}}


def test_a_plain_decoder_is_driven():
    assert unsupported_layout(PLAIN) is None


def test_a_windowed_cache_is_driven():
    """GroupQueryAttention drops a windowed layer's old entries itself (worker/onnx/kv_cache.py Ring)."""
    windowed = {"window_size": 16, "slide_key_value_cache": False, "slide_inputs": False, "layers": [0]}
    assert unsupported_layout(with_decoder(sliding_window=windowed)) is None
    assert unsupported_layout(with_decoder(sliding_window={**windowed, "layers": []})) is None


def test_a_cache_slid_by_onnxruntime_genai_is_not():
    for slid in ("slide_key_value_cache", "slide_inputs"):
        reason = unsupported_layout(with_decoder(sliding_window={"window_size": 16, slid: True}))
        assert "slid by onnxruntime-genai" in reason and "sliding_window" in reason


def test_a_pipeline_or_a_model_without_past_inputs_is_not():
    assert "pipeline" in unsupported_layout(with_decoder(pipeline=[{}]))
    assert "past" in unsupported_layout(with_decoder(inputs={"input_ids": "input_ids"}))


def test_a_multimodal_model_is_not():
    assert "vision" in unsupported_layout({"model": {**PLAIN["model"], "vision": {}}})


def test_a_hybrid_of_attention_and_recurrent_layers_is_not():
    for state, kind in (("past_conv_names", "convolution"), ("past_recurrent_names", "recurrent")):
        inputs = {**PLAIN["model"]["decoder"]["inputs"], state: "past.%d.state"}
        reason = unsupported_layout(with_decoder(inputs=inputs))
        assert "hybrid" in reason and kind in reason and state in reason
