-- Run once by the postgres image on an empty volume (docker-entrypoint-initdb.d): Airflow's metadata
-- (and the Celery result backend), the audit store, and one target database per development region,
-- so the regions never share a ledger. tests/unit/test_deploy.py checks every database
-- docker-compose.yaml names is created here.
CREATE DATABASE airflow;
CREATE DATABASE polymigrate_audit;
CREATE DATABASE development_western_europe;
CREATE DATABASE development_north_africa;
