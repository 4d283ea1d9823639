# Everything a fresh Debian/Ubuntu machine needs is installed by these targets.
#   make demo   set up, then run the main job
#   make test   set up, then lint, type-check and run the whole test suite
#   make bench  set up, then run the benchmarks

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APT_PACKAGES := tesseract-ocr tesseract-ocr-eng
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench lint system-deps clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "flowctl needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: $(STAMP) system-deps
	$(BIN)/flowctl validate pipelines/
	$(BIN)/flowctl run pipelines/offline-invoice.yaml

lint: $(STAMP)
	$(BIN)/ruff check flowctl tests benchmarks
	$(BIN)/ruff format --check flowctl tests benchmarks
	$(BIN)/mypy

test: $(STAMP) system-deps lint
	$(BIN)/pytest -q

bench: $(STAMP) system-deps
	cd benchmarks && ../$(BIN)/python bench_validate.py
	cd benchmarks && ../$(BIN)/python bench_orchestrator.py
	cd benchmarks && ../$(BIN)/python compare/prefect_chain.py

clean:
	rm -rf $(VENV) benchmarks/.work .flowctl
