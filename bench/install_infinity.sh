#!/usr/bin/env bash
# Install infinity-emb (a Python embedding server with dynamic batching) in its own virtualenv, as
# the peer of bench/embeddings_throughput.py. Its optimum engine serves the same int8 ONNX folder
# Ladle serves. Prints the venv's `infinity_emb` path; reruns reuse the venv.
#
#   bash bench/install_infinity.sh
#   PYTHON=python3.11 bash bench/install_infinity.sh   # then: python bench/embeddings_throughput.py
set -euo pipefail
VENV="${INFINITY_VENV:-$HOME/.cache/ladle-bench/infinity}"
BINARY="$VENV/bin/infinity_emb"
if [ ! -x "$BINARY" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
  # optimum needs torch: a CPU build first (TORCH_SPEC, e.g. a local wheel), or pip resolves the
  # multi-GB CUDA build as infinity-emb's dependency.
  "$VENV/bin/python" -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}" >&2
  # Tested with optimum 2.1, onnxruntime 1.32, transformers 4.57 (what this pin resolves to).
  "$VENV/bin/python" -m pip install --quiet "infinity-emb[server,optimum]==0.0.78" >&2
fi
echo "$BINARY"
