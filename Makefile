# ionraman: set-up, main job, tests. `make run` and `make test` are the two
# commands in the README; both (re)create the environment only when needed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ionraman-installed

.PHONY: setup run lint test test-all bench clean

setup: $(STAMP)

# Debian packages the project needs are installed here (idempotently) once the
# features that use them land; the Python environment follows constraints.txt,
# which pins torch to the local CPU build.
$(STAMP): pyproject.toml constraints.txt scripts/setup_system.sh
	bash scripts/setup_system.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: setup
	$(VENV)/bin/ionraman screen --preset demo -o runs/demo

# lint: pyflakes and bugbear rules (pyproject.toml [tool.ruff]); part of the test target
lint: setup
	$(VENV)/bin/ruff check -q src tests benchmarks scripts

test: lint
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

bench: setup
	$(PY) benchmarks/md_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
