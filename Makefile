# The README's two commands: `make demo` and `make test`. Both bootstrap .venv/ on a fresh machine
# and are idempotent (the install step re-runs only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.visent-installed
# torch/torchvision are installed first at the versions this machine's pip constraint allows; the
# project itself only requires a range, so a user's own torch build is never replaced.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-slow bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/visent demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/token_stats.py

clean:
	rm -rf $(VENV) runs .pytest_cache
