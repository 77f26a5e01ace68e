# The two Quickstart commands, `make demo` and `make test`, each build .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test test-gpu lint bench compare figures clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[demo]'
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.base
	$(VENV)/bin/minitransformer demo

test: $(VENV)/.dev
	$(VENV)/bin/ruff check minitransformer tests examples benchmarks
	$(PY) -m pytest -n 2 -q

test-gpu: $(VENV)/.dev
	$(PY) scripts/gpu_check.py

bench: $(VENV)/.base
	$(PY) -m benchmarks.engine_bench
	$(PY) -m benchmarks.transformer_bench
	$(PY) -m benchmarks.transformer_bench --default-malloc
	$(PY) -m benchmarks.graph_bench
	$(PY) benchmarks/attention_cost.py
	$(PY) -m benchmarks.nanogpt_bench

# Every committed figure under docs/ (needs Graphviz's `dot` for the graph drawings).
figures: $(VENV)/.base
	$(PY) scripts/make_figures.py

compare: $(VENV)/.base
	$(VENV)/bin/minitransformer compare

clean:
	rm -rf $(VENV) build *.egg-info runs .pytest_cache
