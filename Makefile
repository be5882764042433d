# Two commands on a fresh machine: `make demo` (the main job, offline, embedded sample) and
# `make test`. Both install what they need first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMP := .make/setup.stamp

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	@mkdir -p .make
	@# torch first, pinned to the CPU build these machines carry (any other torch pulls CUDA wheels).
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m dispart.cli demo --out runs/demo-$$(date +%Y%m%d-%H%M%S)

test: $(STAMP)
	$(PYTHON) -m pytest -q

lint: $(STAMP)
	$(PYTHON) -m ruff check dispart tests benchmarks tools

bench: $(STAMP)
	$(PYTHON) benchmarks/throughput.py

clean:
	rm -rf .make runs .pytest_cache
