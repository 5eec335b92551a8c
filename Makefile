# mefn: the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mefn-installed
DEMO_DIR ?= demo_output
# CI=true also runs the tests marked `slow`.
ifeq ($(CI),true)
PYTEST_MARK :=
else
PYTEST_MARK := -m "not slow"
endif

.PHONY: venv demo notebook test test-all lint typecheck format clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@# a new .venv with torch needs about 2.5 GB: say so plainly rather than fail inside pip
	@test -x $(PY) || $(PYTHON) -c "import shutil, sys; free = shutil.disk_usage('.').free; \
	sys.exit(0 if free > 3e9 else f'make: setting up .venv needs about 3 GB free on this disk, found {free / 1e6:.0f} MB; free some space and run make again')"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@# torch first, from the CPU wheel: an open `torch` requirement would pull a multi-GB CUDA build.
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	@$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	@$(VENV)/bin/mefn demo --out $(DEMO_DIR)

lint: $(STAMP)
	$(VENV)/bin/ruff check mefn pipelines tests
	$(VENV)/bin/ruff format --check mefn pipelines tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: lint typecheck
	$(VENV)/bin/pytest $(PYTEST_MARK) -q

test-all: lint typecheck
	$(VENV)/bin/pytest -q

format: $(STAMP)
	$(VENV)/bin/ruff format mefn pipelines tests
	$(VENV)/bin/ruff check --fix mefn pipelines tests

# The review notebook opened in JupyterLab on the demo's outputs (`make demo` first when they
# are missing); JupyterLab is the optional extra `notebook`, installed into .venv on first use.
NOTEBOOK := notebooks/review_uncertainty.ipynb
notebook: $(STAMP)
	@$(PY) -c "import jupyterlab" 2>/dev/null || $(PY) -m pip install --quiet -e ".[notebook]"
	@test -f $(DEMO_DIR)/segmentation/demo_mask.nii.gz || $(MAKE) demo
	MEFN_REVIEW_CASE=$(abspath $(DEMO_DIR))/input/demo_0000.nii.gz \
	MEFN_REVIEW_OUTPUTS=$(abspath $(DEMO_DIR))/segmentation \
	MEFN_REVIEW_REFERENCE=$(abspath $(DEMO_DIR))/input/demo_reference_mask.nii.gz \
	$(VENV)/bin/jupyter lab $(NOTEBOOK)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
