# Two commands do everything on a fresh machine: `make run` and `make test`.
PY ?= python3
# see mtz_core/__init__.py: OpenMP threads that busy-wait starve torch on small machines
export OMP_WAIT_POLICY ?= PASSIVE
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-other-cpu lint format bench bench-smoke clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the project's metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/streamlit run streamlit_app.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The fast tests under another CPU's kernels (no AVX2/AVX-512): float results move in the last
# bits, so a test that passes only on the CPU that wrote a stored file fails here.
test-other-cpu: $(STAMP)
	ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 $(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

bench-smoke: $(STAMP)
	$(BIN)/python -m benchmarks.run_all --smoke

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
