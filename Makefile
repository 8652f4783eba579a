# Two entry points: `make run` (the product, locally) and `make test` (the whole suite).
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: run test lint soak setup clean

$(STAMP): requirements.txt requirements-dev.txt
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

setup: $(STAMP) node_modules/.package-lock.json

run: setup
	$(PY) -m devhost --with-azurite --examples

test: setup lint
	$(PY) -m pytest

# The model-based lifecycle test with many more random interleavings than `make test` runs.
soak: setup
	HYPOTHESIS_PROFILE=soak $(PY) -m pytest tests/unit/test_lifecycle_stateful.py -p no:cacheprovider --timeout=3600

lint: setup
	$(PY) -m ruff check shared functions devhost function_app.py tests
	$(PY) -m mypy

clean:
	rm -rf .venv node_modules .azurite .run
