# Two commands do all the set-up on a fresh machine:
#   make demo   installs into .venv, trains BC -> PPO on the small profile, evaluates ID/OOD
#   make test   installs into .venv and runs the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast reproduce sweep bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/compgym demo

# The whole suite on every core (pytest-xdist).  tests/conftest.py collects the one long test (the
# BC acceptance run, about 9 minutes) first, so one worker starts it at once.
test: $(STAMP)
	$(PY) -m pytest -n auto --dist loadgroup

# Everything not marked slow, on every core (pytest-xdist): about a minute on 2 cores.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" -n auto

# These two refresh the committed results; `compgym reproduce` / `compgym bench` alone write
# under runs/ (untracked), so a smoke run never dirties the work tree.
reproduce: $(STAMP)
	$(VENV)/bin/compgym reproduce --out benchmarks/results

bench: $(STAMP)
	$(VENV)/bin/compgym bench --json benchmarks/results/throughput.json

clean:
	rm -rf $(VENV) runs results

sweep: $(STAMP)
	$(VENV)/bin/compgym sweep
