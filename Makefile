# shiftnpu: `make demo` runs the main job, `make test` runs every test. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup iverilog clean bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo ">> installing shiftnpu and its dependencies into $(VENV) (first time: 1-3 minutes)"
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[train,dev]"
	@touch $(STAMP)

# Icarus Verilog comes from the system. Install it when we can (root + apt), otherwise explain.
# ccache (optional) lets every Verilator build reuse the compiled simulator runtime.
iverilog:
	@if ! command -v ccache >/dev/null 2>&1 && [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get install -y -qq ccache >/dev/null 2>&1 || \
		(apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq ccache >/dev/null 2>&1) || true; \
	fi
	@if command -v iverilog >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo ">> installing Icarus Verilog (apt-get install iverilog)"; \
		(apt-get install -y -qq iverilog >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq iverilog >/dev/null 2>&1)) \
		|| echo "!! could not install iverilog; Icarus tests will be skipped"; \
	else \
		echo "!! Icarus Verilog not found. Install it with: sudo apt-get install iverilog"; \
		echo "!! Running the Verilator tests alone."; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) iverilog
	$(VENV)/bin/ruff check .
	@if command -v iverilog >/dev/null 2>&1; then \
		$(PY) -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS); \
	else \
		$(PY) -m pytest -q -n 2 --dist loadfile -m "not icarus" $(PYTEST_ARGS); \
	fi

demo: $(STAMP)
	$(VENV)/bin/shiftnpu demo

bench: $(STAMP)
	$(PY) bench/area.py

clean:
	rm -rf build out .pytest_cache
