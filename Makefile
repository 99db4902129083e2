# Two commands for users (README): `make paper` runs the main job, `make test` runs the tests.
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On a machine without CUDA the CPU build is installed first from PyTorch's CPU wheel index, so pip
# never pulls a multi-GB CUDA build; where that index cannot be reached, the plain pin (which a
# machine with a local CPU wheel resolves to it). With CUDA (nvidia-smi present) a plain `torch` is
# installed, or bring your own torch (an installed one is kept).
TORCH ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# SIZE: smoke | quick | paper (default: paper with CUDA, quick without). DEVICE: cpu | cuda | auto.
SIZE ?= auto
DEVICE ?= auto

.PHONY: install test paper report data bench clean-venv

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch already installed: keeping it"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch; \
	else $(PY) -m pip install -q --retries 1 --timeout 20 --index-url "$(TORCH_CPU_INDEX)" "$(TORCH)" \
	  || { echo "PyTorch's CPU index unreachable: installing $(TORCH) from the default index"; \
	       $(PY) -m pip install -q "$(TORCH)"; }; fi
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m ruff check --select F,E9 fmrec_lib tests tools notebooks
	$(PY) -m pytest

paper: install
	$(PY) -m fmrec_lib suite --size $(SIZE) --device $(DEVICE)

# The results as a static HTML site (build/report/index.html), built offline from the executed notebooks.
report: install
	$(PY) tools/build_report.py --executed notebooks/executed --out build/report

data: install
	$(PY) -m fmrec_lib data

DATASET ?= ml-100k
bench: install
	$(PY) -m fmrec_lib bench --dataset $(DATASET) --device $(DEVICE)

clean-venv:
	rm -rf $(VENV)
