# polymigrate on the official Airflow image: every component of a deployment (api-server, scheduler,
# dag-processor, triggerer, Celery or Kubernetes workers) runs this one image, so what a task needs
# (the package, its data, Node for .js migrations, the DAG file and the specs) is on every host.
#   docker build -t polymigrate-airflow:local .
# The wheel stage builds from the sources alone; the image installs it with the same extras and the
# same constraints as tests/integration/test_wheel.py, which reads the extras from its pip install line.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11

FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY include ./include
COPY plugins ./plugins
RUN pip wheel --no-deps --no-cache-dir -w /dist .

# migrate-mongo 14 and the driver want Node 20+, newer than Debian's package: the official Node image
FROM node:22-bookworm-slim AS node
COPY scripts/engines/node/package.json scripts/engines/node/package-lock.json /opt/polymigrate-node/
RUN cd /opt/polymigrate-node && npm ci --omit=dev --no-audit --no-fund

FROM ${AIRFLOW_IMAGE}

# Node runs MongoDB .js (migrate-mongo format) migrations with the official driver: the binary and the
# exact npm packages `make engines` tests with (package-lock.json) come from the node stage, kept
# outside the DAGs folder so the DAG processor never walks node_modules.
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /opt/polymigrate-node /opt/polymigrate-node
ENV POLYMIGRATE_NODE_MODULES=/opt/polymigrate-node/node_modules

USER airflow
# The constraints pin apache-airflow==3.3.2 and its providers, so this install never moves the image's
# Airflow; it adds the drivers, great_expectations and the providers the image lacks.
COPY --chown=airflow:root constraints.txt /opt/polymigrate/constraints.txt
COPY --from=wheel /dist/ /opt/polymigrate/dist/
RUN wheel=$(ls /opt/polymigrate/dist/polymigrate-*.whl) \
 && pip install --no-cache-dir "${wheel}[airflow,postgresql,mongodb,redis,elasticsearch,expectations]" \
        -c /opt/polymigrate/constraints.txt

# The DAG file builds every DAG from the specs at POLYMIGRATE_SPECS. Both are baked in, so a worker
# needs no shared volume; a deployment that syncs its own specs (git-sync) points POLYMIGRATE_SPECS there.
COPY --chown=airflow:root dags/polymigrate_dags.py /opt/airflow/dags/polymigrate_dags.py
COPY --chown=airflow:root migration_specs /opt/polymigrate/migration_specs
ENV POLYMIGRATE_SPECS=/opt/polymigrate/migration_specs
