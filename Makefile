# The two commands a newcomer needs: `make demo` (a real DAG run on the embedded default) and
# `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test demo bench clean

$(BIN)/polymigrate: requirements.txt constraints.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	touch $@

install: $(BIN)/polymigrate

test: install
	$(BIN)/pytest -q -p no:cacheprovider tests

demo: install
	$(BIN)/python scripts/demo.py

bench: install
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .demo .airflow-test
