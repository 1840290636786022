#!/usr/bin/env bash
# Build llama.cpp's llama-server (the C++ OpenAI-compatible server with continuous batching)
# from the llama.cpp sources inside the llama-cpp-python sdist, for bench/chat_latency.py.
# About 15-25 minutes on 2 cores. Prints the binary's path; reruns reuse the build.
#
#   bash bench/build_llama_server.sh
#   PYTHON=.venv/bin/python bash bench/build_llama_server.sh   # then: make bench
set -euo pipefail
ROOT="${LLAMA_BUILD_DIR:-$HOME/.cache/ladle-bench/llama.cpp}"
BINARY="$ROOT/build/bin/llama-server"
if [ ! -x "$BINARY" ]; then
  mkdir -p "$ROOT" && cd "$ROOT"
  if [ ! -f CMakeLists.txt ]; then
    "${PYTHON:-python3}" -m pip download --quiet --no-deps --no-binary :all: --dest sdist llama-cpp-python >&2
    tar xzf sdist/llama_cpp_python-*.tar.gz --strip-components=3 --wildcards '*/vendor/llama.cpp/*'
  fi
  # The CPU's own vector extensions, named (not -march=native): a KVM guest may report AMX, which
  # a native build then uses and dies on with an illegal instruction.
  CPU_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
  if grep -qw avx512f /proc/cpuinfo; then CPU_FLAGS="$CPU_FLAGS -DGGML_AVX512=ON"; fi
  if grep -qw avx512_vnni /proc/cpuinfo; then CPU_FLAGS="$CPU_FLAGS -DGGML_AVX512_VNNI=ON"; fi
  # shellcheck disable=SC2086
  cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF $CPU_FLAGS >&2
  cmake --build build --target llama-server -j "$(nproc)" >&2
fi
echo "$BINARY"
