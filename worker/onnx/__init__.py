"""ONNX Runtime decoding: the decoder session, graph edits, KV cache and prefix cache."""
