# Two commands do all the set-up: `make demo` and `make test` (each refreshes .venv first).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.2.495
export JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export MPLBACKEND := Agg

.PHONY: help venv demo test lint typecheck unit synth bench clean

help:
	@echo "make demo   - run the whole pipeline locally on the embedded synthetic data (no AWS)"
	@echo "make test   - ruff, mypy and every test (CDK synth, cdk-nag, cfn-lint, checkov, moto)"
	@echo "make synth  - write the CloudFormation templates to cdk.out/"
	@echo "make bench  - run the benchmarks under benchmarks/"

# The stamps make `make` reinstall exactly when a requirement file changed.
$(VENV)/.stamp-python: requirements-ml.txt requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# checkov pins its own versions of boto3 and friends, so it lives in a venv of its own.
$(CHECKOV_VENV)/.stamp-checkov: Makefile
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $@

node_modules/.stamp-node: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

venv: $(VENV)/.stamp-python

demo: $(VENV)/.stamp-python
	$(PY) -m ml run-local --output demo-output

lint: $(VENV)/.stamp-python
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.stamp-python
	$(VENV)/bin/mypy

unit: $(VENV)/.stamp-python $(CHECKOV_VENV)/.stamp-checkov node_modules/.stamp-node
	CHECKOV_BIN=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov PATH=$(CURDIR)/$(VENV)/bin:$(CURDIR)/node_modules/.bin:$$PATH \
		$(PY) -m pytest

test: lint typecheck unit

synth: $(VENV)/.stamp-python node_modules/.stamp-node
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH npx cdk synth --quiet

bench: $(VENV)/.stamp-python
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) benchmarks/serve_throughput.py
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) benchmarks/local_run.py

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules cdk.out demo-output .pytest_cache .mypy_cache .ruff_cache
