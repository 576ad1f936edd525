# Developer entry points. Every target sets up what it needs first (scripts/setup.sh is
# idempotent and fast once done), so `make demo` and `make test` work on a fresh machine.

VENV ?= .venv
PY := $(VENV)/bin/python
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="tests/widgets -x"`.
PYTEST_ARGS ?=
LINT_PATHS := $(wildcard src tests benchmarks)
# The viewer tests need a real X server with OpenGL: Xvfb with a 24-bit screen.
XVFB := xvfb-run -a -s "-screen 0 1280x1024x24"

.PHONY: setup demo test lint format clean

setup:
	@VENV=$(VENV) bash scripts/setup.sh

demo: setup
	$(VENV)/bin/napari-addunet demo --output demo-output --overwrite

test: setup
	@if command -v xvfb-run >/dev/null 2>&1; then \
		echo '$(XVFB) $(PY) -m pytest $(PYTEST_ARGS)'; \
		$(XVFB) $(PY) -m pytest $(PYTEST_ARGS); \
	else \
		echo "xvfb-run not found: running pytest on the current display"; \
		$(PY) -m pytest $(PYTEST_ARGS); \
	fi

lint: setup
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

format: setup
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

clean:
	rm -rf build dist demo-output .pytest_cache .ruff_cache .hypothesis .setup-stamp
