# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test lint install install-test bench clean chromium

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## demo: install, then run the server, console and the simulated fleet on SQLite
demo: install
	$(VENV)/bin/proctor demo

## chromium: the console tests drive Debian's Chromium (never a downloaded browser)
chromium:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || \
	  { echo "installing Debian's chromium for the console tests"; \
	    apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }

## test: install with the test extras and run the whole suite (SQLite and PostgreSQL)
test: install-test chromium
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy src/proctor
	$(PY) -m pytest -q

lint: install-test
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy src/proctor

## bench: the ingest, policy, alerts and console benchmarks (SQLite and PostgreSQL); print tables
bench: install-test
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/policy.py
	$(PY) benchmarks/alerts.py
	$(PY) benchmarks/console.py

clean:
	rm -rf $(VENV) .proctor .pytest_cache .ruff_cache
