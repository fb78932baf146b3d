# Remote Scorer — two commands on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
export REMOTE_SCORER_CACHE ?= $(CURDIR)/.cache/remote_scorer
PYTEST_ARGS ?=

.PHONY: setup chromium test test-fast demo lint bench learning-check

## setup: create or update the virtual environment from requirements.txt (VENV=... to put it elsewhere)
setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

## chromium: Debian's headless Chromium for the Playwright browser tests (playwright's own download
## does not work offline); without root or apt-get the browser tests skip and say why
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium is not installed: the browser tests will be skipped (apt-get install chromium)"

## test: the whole suite
test: setup chromium
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest $(PYTEST_ARGS)

## test-fast: everything but the tests marked slow
test-fast: setup
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

## demo: the app on its offline demo set and the tiny backbone, at http://127.0.0.1:7860
demo: setup
	HF_HUB_OFFLINE=1 $(PYTHON) app.py --demo

lint: setup
	$(PYTHON) -m ruff check .

bench: setup
	$(PYTHON) bench/bench_rank.py
	$(PYTHON) bench/bench_store.py
	$(PYTHON) bench/bench_train.py
	$(PYTHON) bench/bench_generate.py
	$(PYTHON) bench/bench_app.py

learning-check: setup
	$(PYTHON) bench/learning_check.py
