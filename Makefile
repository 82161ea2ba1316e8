# One command per habit, the same locally and in CI.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test lint bench lock services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# The venv is rebuilt when the dependency set changes; constraints.txt pins every version.
$(VENV)/.installed-ml: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e '.[ml]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e '.[dev]'
	touch $@ $(VENV)/.installed-ml

demo: $(VENV)/.installed-ml
	$(BIN)/keel demo

services:
	@bash scripts/ensure-services.sh

test: $(VENV)/.installed-dev services
	$(BIN)/pytest -n 2 --dist loadgroup -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed-dev services
	bash bench/run.sh

# Re-pin after changing dependencies: resolves '.[dev]' in a scratch venv and writes constraints.txt.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q -e '.[dev]'
	echo '# Pinned versions of every dependency (make lock regenerates this file).' > constraints.txt
	.lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^keel' >> constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
