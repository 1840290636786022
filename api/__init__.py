"""Ladle's HTTP edge: a Flask app that turns requests into jobs (no onnxruntime here)."""
