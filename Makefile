# The two commands a newcomer needs: `make demo` (a real DAG run on the embedded default) and
# `make test`. Both create .venv on first use; `make test` also installs and starts every engine
# (scripts/engines.sh: PostgreSQL, Redis, FerretDB, OpenSearch, Flyway, Chromium) on loopback.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install bytecode test demo demo-stop bench clean engines engines-down cluster cluster-down

$(BIN)/polymigrate: requirements.txt constraints.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	touch $@

install: $(BIN)/polymigrate

# polymigrate is installed editable, so pip compiled none of it; where PYTHONDONTWRITEBYTECODE is set
# (as on these machines) every process that imports it (each Airflow task, each DAG parse, each CLI
# run) would compile it again from source: 0.14 s of a 200-DAG parse, 0.06 s of each task's. compileall
# writes the caches anyway, and only for files changed since (issue 24, P4/P6; docs/airflow.md).
bytecode: install
	$(BIN)/python -m compileall -q -j 0 include plugins dags scripts > /dev/null

engines:
	bash scripts/engines.sh up

engines-down:
	bash scripts/engines.sh down

# a production-shaped Airflow on loopback: API server, scheduler, DAG processor, triggerer, two Celery
# workers with their own hostnames and homes (scripts/cluster.sh; docs/deploy.md#make-cluster)
cluster: install bytecode engines
	bash scripts/cluster.sh up

cluster-down:
	bash scripts/cluster.sh down

# Three pytest-xdist workers on two cores: the suite mostly waits on servers and Airflow start-ups.
# --dist loadfile keeps a module's tests (and the Airflow a module shares) on one worker;
# --no-loadscope-reorder keeps conftest's order (the longest modules first) instead of xdist's own
# (modules with the most tests first), which started the demo's and the cluster's modules last.
test: install bytecode engines
	. .engines/env && $(BIN)/pytest -q -p no:cacheprovider -n 3 --dist loadfile --no-loadscope-reorder --durations=25 tests

demo: install bytecode
	$(BIN)/python scripts/demo.py

# stops a demo running in the background (it stops Airflow, PostgreSQL, Redis and the engines it started)
demo-stop:
	$(BIN)/python scripts/demo.py --stop

bench: install bytecode engines
	. .engines/env && for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .demo .airflow-test .engines .cluster .bench-cluster
