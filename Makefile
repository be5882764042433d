# Two commands on a fresh machine: `make demo` (the main job, offline, embedded sample) and
# `make test`. Both install what they need first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# import-linter's `lint-imports`, run by this Python (the package has no `python -m` entry)
LINT_IMPORTS := $(PYTHON) -c "import sys; from importlinter.cli import lint_imports_command; \
	sys.argv = ['lint-imports', '--no-cache']; sys.exit(lint_imports_command())"
STAMP := .make/setup.stamp

.PHONY: setup demo test lint bench clean chromium

$(STAMP): pyproject.toml
	@mkdir -p .make
	@# torch first, pinned to the CPU build these machines carry (any other torch pulls CUDA wheels).
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m dispart.cli demo --out runs/demo-$$(date +%Y%m%d-%H%M%S)

# Headless Chromium for the browser tests (tests/browser.py): Debian's package, installed only when
# /usr/bin/chromium is missing (as root, or through `sudo -n`). If it cannot be installed (no
# package source reachable) the tests still run: the browser tests skip, printing the last line
# of apt-get's output, kept in $(CHROMIUM_LOG); -rs shows every skip reason.
CHROMIUM ?= /usr/bin/chromium
CHROMIUM_LOG := .make/chromium-install.log
SUDO := $(shell [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null || echo "sudo -n")
APT ?= $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -qq -y -o Dpkg::Use-Pty=0 \
	-o Acquire::http::Timeout=30 -o Acquire::Retries=1

chromium:
	@mkdir -p .make && rm -f $(CHROMIUM_LOG)
	@test -x $(CHROMIUM) || { echo "installing chromium (apt-get) for the browser tests"; \
	  { $(APT) update && $(APT) install chromium; } > $(CHROMIUM_LOG).tmp 2>&1 \
	  && rm -f $(CHROMIUM_LOG).tmp || { mv $(CHROMIUM_LOG).tmp $(CHROMIUM_LOG); \
	  echo "could not install chromium, the browser tests will skip: $$(tail -n 1 $(CHROMIUM_LOG))"; }; }

# Import contracts first (the layers of docs/design.md, [tool.importlinter] in pyproject.toml;
# half a second), then the tests (tests/test_layers.py checks the contracts again, for bare pytest).
test: $(STAMP) chromium
	$(LINT_IMPORTS)
	$(PYTHON) -m pytest -q -rs

lint: $(STAMP)
	$(PYTHON) -m ruff check dispart tests benchmarks tools
	$(LINT_IMPORTS)

bench: $(STAMP)
	$(PYTHON) benchmarks/throughput.py

clean:
	rm -rf .make runs .pytest_cache
