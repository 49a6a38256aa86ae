# The project's own virtual environment: every target creates/uses .venv, nothing is installed by hand.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean-demo

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## The main job on the embedded synthetic dataset, in ./demo_workdir
demo: $(STAMP)
	$(VENV)/bin/rbmnet_demo

## The test suite
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests

clean-demo:
	rm -rf demo_workdir
