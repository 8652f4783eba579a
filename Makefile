# Two entry points: `make run` (the product, locally) and `make test` (the whole suite).
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: run test lint soak setup clean chromium

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .   # the `mlops` command line (mlops_cli/) into .venv/bin
	touch $(STAMP)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

# The native number readers (native/numbers.rs -> shared/_native/; shared/native_numbers.py): rustc alone,
# Debian's package when the machine has none. Without them the app reads the same bodies more slowly.
NATIVE := shared/_native/libmlops_numbers.so

$(NATIVE): native/numbers.rs native/build.py
	@if command -v rustc >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends rustc; \
	else sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends rustc; fi
	python3 native/build.py

setup: $(STAMP) node_modules/.package-lock.json $(NATIVE)

run: setup
	$(PY) -m devhost --with-azurite --examples

test: setup lint chromium
	$(PY) -m pytest

# The model-based lifecycle test with many more random interleavings than `make test` runs.
soak: setup
	HYPOTHESIS_PROFILE=soak $(PY) -m pytest tests/unit/test_lifecycle_stateful.py -p no:cacheprovider --timeout=3600

# The model pages' browser test (tests/e2e/test_pages_browser.py) drives Chromium: Debian's package,
# or any Chrome named by CHROMIUM=<path> (GitHub's runners: /usr/bin/google-chrome).
chromium:
	@if { [ -n "$$CHROMIUM" ] && [ -x "$$CHROMIUM" ]; } || command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; \
	else sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends chromium; fi

# checkov has its own venv: it pins packaging<24, pytest needs packaging>=24 (requirements-checkov.txt).
CHECKOV_STAMP := .venv-checkov/.installed

$(CHECKOV_STAMP): requirements-checkov.txt
	python3 -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet --upgrade pip
	.venv-checkov/bin/python -m pip install --quiet -r requirements-checkov.txt
	touch $(CHECKOV_STAMP)

# Offline: no platform key, no policy download, no version check; a file it cannot parse fails.
CHECKOV := env -u BC_API_KEY CKV_PARSE_ERROR_FAIL=true CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE \
	CKV_GITHUB_CONFIG_FETCH_DATA=false .venv-checkov/bin/checkov --skip-download --compact --quiet

lint: setup $(CHECKOV_STAMP)
	$(PY) -m ruff check shared functions devhost mlops_cli function_app.py tests bench native
	$(PY) -m mypy
	$(CHECKOV) -d infra --framework bicep
	$(CHECKOV) -d .github/workflows --framework github_actions

clean:
	rm -rf .venv .venv-checkov node_modules .azurite .run shared/_native
