#!/usr/bin/env bash
# A production-shaped Airflow 3.3 on loopback, as its own docs deploy it: API server, scheduler,
# DAG processor, triggerer and two Celery workers, each worker with its own hostname, AIRFLOW_HOME,
# log folder and copy of the DAG file and spec tree (nothing a task needs lives only where the
# scheduler runs). Metadata and Celery results in the engines' PostgreSQL (database
# polymigrate_cluster), the broker in the engines' Redis (its own database number).
#
#   scripts/cluster.sh up              fresh metadata, start every component, wait until it answers
#   scripts/cluster.sh down            stop exactly what `up` started (by recorded process groups)
#   scripts/cluster.sh status          one line per component
#   scripts/cluster.sh kill NAME [SIG] signal one component's whole process group (default KILL)
#   scripts/cluster.sh start NAME…     start components again, with the environment `up` gave them, and wait
#                                      until they answer as `up` waits (a worker: until it logs "ready." again)
#   scripts/cluster.sh reset-targets   empty every target database again (PostgreSQL and Redis)
#
# Needs `make engines` first (PostgreSQL and Redis; FerretDB and OpenSearch are used when up).
# POLYMIGRATE_SPECS chooses the spec tree (default migration_specs/); AIRFLOW_CONN_* in the
# caller's environment win over the connections generated for it (scripts/cluster_connections.py).
# POLYMIGRATE_CLUSTER_DIR (default .cluster/) and POLYMIGRATE_CLUSTER_DB_PREFIX let a test run one
# beside it. Every `up` starts from nothing: its metadata, broker and target databases are emptied.
# Writes .cluster/env: AIRFLOW_URL and the users (admin, approvers ann and bob, compliance reviewer cora) with their
# passwords; .cluster/connections.env: the targets. The settings every component shares are
# deploy/airflow.env, the same file docker-compose.yaml and the Helm values use.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
C=${POLYMIGRATE_CLUSTER_DIR:-$ROOT/.cluster}   # a test runs its own cluster in a folder of its own
RUN="$C/run"
BIN="$ROOT/.venv/bin"
AIRFLOW="$BIN/airflow"
# tests/unit/test_deploy.py checks docker-compose.yaml runs the same components with the same commands
COMPONENTS="api-server scheduler dag-processor triggerer worker"
WORKERS="worker-1 worker-2"
BROKER_DB=${POLYMIGRATE_CLUSTER_BROKER_DB:-31}
TARGET_REDIS_DBS=${POLYMIGRATE_CLUSTER_REDIS_DBS:-16 30}   # first and last Redis database number for targets (the tests flush 15)
# PostgreSQL databases: PREFIX_airflow (metadata, Celery results), PREFIX_audit, PREFIX_<env>_<region>
PREFIX=${POLYMIGRATE_CLUSTER_DB_PREFIX:-polymigrate_cluster}
METADATA_DB=${PREFIX}_airflow

T0=$(date +%s)
say() { printf '[cluster %3ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }
free_port() { "$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
alive() { [ -f "$RUN/$1.pid" ] && pgrep -s "$(cat "$RUN/$1.pid")" >/dev/null; }
names() { echo api-server scheduler dag-processor triggerer $WORKERS; }

engines_env() {
  [ -f "$ROOT/.engines/env" ] || die "no .engines/env: run \`make engines\` first"
  # shellcheck disable=SC1091
  . "$ROOT/.engines/env"
  [ -x "$AIRFLOW" ] || die "no $AIRFLOW: run \`make install\` first"
  PG_URL=${POLYMIGRATE_TEST_PG:?}; REDIS_URL=${POLYMIGRATE_TEST_REDIS:?}
  PG_HOST=$("$BIN/python" -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(p.hostname, p.port or 5432, p.username or "postgres")' "$PG_URL")
  read -r PG_H PG_P PG_U <<<"$PG_HOST"
  "$POLYMIGRATE_PG_BIN/pg_isready" -q -h "$PG_H" -p "$PG_P" || die "PostgreSQL does not answer at $PG_H:$PG_P: run \`make engines\`"
  redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 || die "Redis does not answer at $REDIS_URL: run \`make engines\`"
}

answers() { # answers URL: something listens at the URL's host and port
  [ -n "$1" ] || return 1
  local hp; hp=$("$BIN/python" -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(p.hostname, p.port)' "$1")
  (exec 3<>"/dev/tcp/${hp% *}/${hp#* }") 2>/dev/null
}
psql_admin() { "$POLYMIGRATE_PG_BIN/psql" -qAtX -v ON_ERROR_STOP=1 -h "$PG_H" -p "$PG_P" -U "$PG_U" -d postgres "$@"; }
recreate_db() { # drop any earlier cluster's database (its sessions first) and create it empty
  psql_admin -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$1'" >/dev/null
  psql_admin -c "DROP DATABASE IF EXISTS \"$1\"" -c "CREATE DATABASE \"$1\"" >/dev/null
}

# The environment of one component, written once by `up` so `start NAME` restarts it identically.
write_component_env() { # write_component_env NAME HOME
  local name=$1 home=$2
  mkdir -p "$home/logs"
  {
    echo "# $name: written by scripts/cluster.sh up"
    cat "$C/common.env"
    echo "export AIRFLOW_HOME='$home'"
    echo "export AIRFLOW__LOGGING__BASE_LOG_FOLDER='$home/logs'"
    echo "export AIRFLOW__CORE__DAGS_FOLDER='$home/dags'"
    echo "export POLYMIGRATE_SPECS='$home/migration_specs'"
    # each worker serves its own logs; two on one machine cannot share Airflow's port 8793
    echo "export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=$(free_port)"
  } > "$C/$name.env"
}

# Each home gets its own copy of the DAG file and the spec tree, as each host of a real deployment
# has them from its image: a worker reads nothing from the scheduler's disk.
copy_code() { # copy_code HOME
  rm -rf "$1/dags" "$1/migration_specs"
  mkdir -p "$1/dags"
  cp "$ROOT/dags/polymigrate_dags.py" "$1/dags/"
  cp -R "$SPECS" "$1/migration_specs"
}

command_of() { # command_of NAME: the command line the component runs
  case $1 in
    api-server) echo "$AIRFLOW api-server" ;;
    scheduler|dag-processor|triggerer) echo "$AIRFLOW $1" ;;
    worker-*) echo "$AIRFLOW celery worker --celery-hostname $1@%h" ;;
    *) die "unknown component '$1' (one of: $(names))" ;;
  esac
}

start_component() { # start_component NAME: detached, in its own process group (pid = pgid)
  local name=$1 cmd; cmd=$(command_of "$name")
  [ -f "$C/$name.env" ] || die "$name was never set up: run \`scripts/cluster.sh up\`"
  if alive "$name"; then say "$name already running (pid $(cat "$RUN/$name.pid"))"; return 0; fi
  local hostname_cmd=""
  if [[ $name == worker-* ]]; then
    # A host name of its own (a UTS namespace), so task instances show which worker ran them, as
    # on separate hosts. Unprivileged users map themselves to root in a user namespace for it.
    local ns=(unshare --uts); [ "$(id -u)" = 0 ] || ns=(unshare --map-root-user --uts)
    if "${ns[@]}" true 2>/dev/null; then hostname_cmd="${ns[*]} "; else say "$name: no UTS namespace here; it keeps this machine's host name"; fi
  fi
  # setsid: its own process group, so kill/down reach every process it forks (Celery's pool,
  # the task supervisors and their task processes) and nothing else.
  setsid bash -c "
    . '$C/$name.env'
    ${hostname_cmd:+exec $hostname_cmd}bash -c '${hostname_cmd:+hostname polymigrate-$name; }exec $cmd'
  " >>"$C/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
  say "$name: started (pid $!, log $C/logs/$name.log)"
}

stop_component() { # stop_component NAME [SIGNAL]: TERM (or SIGNAL) to the group, then KILL
  local name=$1 sig=${2:-TERM} pid
  [ -f "$RUN/$name.pid" ] || return 0
  pid=$(cat "$RUN/$name.pid")
  # the session, not only the group: a process that made a group of its own (a task's supervisor
  # may) dies with its host all the same
  if [ "$sig" = TERM ]; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do pgrep -s "$pid" >/dev/null || break; sleep 0.5; done
  fi
  pkill -KILL -s "$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do pgrep -s "$pid" >/dev/null || break; sleep 0.25; done
  rm -f "$RUN/$name.pid"
}

wait_for() { # wait_for SECONDS WHAT CMD…
  local end=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "$what did not come up in time (logs: $C/logs/)"
    sleep 1
  done
}

reset_targets() { # the targets' databases emptied (the bench runs one release again)
  local db n
  for db in $(sed -n 's/^# database //p' "$C/connections.env"); do recreate_db "$db"; done
  for n in $(seq $TARGET_REDIS_DBS); do redis-cli -u "$REDIS_URL" -n "$n" flushdb >/dev/null; done
}

healthy() { # every component the API server tracks reports healthy
  curl -fsS "$AIRFLOW_URL/api/v2/monitor/health" | "$BIN/python" -c '
import json, sys
h = json.load(sys.stdin)
sys.exit(0 if all(h.get(k, {}).get("status") == "healthy" for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")) else 1)'
}
ready_lines() { grep -c "ready\." "$C/logs/$1.log" 2>/dev/null || true; }  # Celery logs "… ready." at each start
worker_ready() { local n; n=$(ready_lines "$1"); [ "${n:-0}" -gt "${2:-0}" ]; }  # worker_ready NAME [READY_LINES_BEFORE]

start_and_wait() { # start_and_wait NAME…: what is stopped started at once, then each waited for as `up` does
  local n; declare -A before=()
  for n in "$@"; do
    command_of "$n" >/dev/null
    if alive "$n"; then say "$n already running (pid $(cat "$RUN/$n.pid"))"; continue; fi
    before[$n]=$(ready_lines "$n"); before[$n]=${before[$n]:-0}
    start_component "$n"
  done
  # shellcheck disable=SC1091
  . "$C/env"  # AIRFLOW_URL, for `healthy`
  for n in "${!before[@]}"; do
    case $n in
      worker-*) wait_for 180 "$n" worker_ready "$n" "${before[$n]}" ;;
      *) wait_for 240 "the API server and its scheduler, triggerer and DAG processor" healthy ;;
    esac
  done
}

up() {
  engines_env
  SPECS=$(cd "${POLYMIGRATE_SPECS:-$ROOT/migration_specs}" && pwd)
  if [ -d "$RUN" ]; then for n in $(names); do stop_component "$n"; done; fi
  rm -rf "$C"; mkdir -p "$RUN" "$C/logs"
  chmod 700 "$C"  # the JWT secret and the passwords live here
  say "up: $COMPONENTS (workers: $WORKERS); specs: $SPECS"
  # Celery workers of another cluster still on this broker db would take this cluster's tasks and fail
  # them ("finished with state failed, but the task instance's state attribute is queued")
  local others
  others=$(redis-cli -u "$REDIS_URL" client list | grep -c " db=$BROKER_DB " || true)
  [ "$others" -eq 0 ] || die "$others client(s) still connected to the broker (db $BROKER_DB of $REDIS_URL): another cluster's workers would take this one's tasks; stop it (\`make cluster-down\` with its POLYMIGRATE_CLUSTER_DIR) or set POLYMIGRATE_CLUSTER_BROKER_DB"
  recreate_db "$METADATA_DB"
  redis-cli -u "$REDIS_URL" -n "$BROKER_DB" flushdb >/dev/null

  local port; port=${POLYMIGRATE_CLUSTER_PORT:-$(free_port)}
  AIRFLOW_URL="http://127.0.0.1:$port"
  local secret pw_admin pw_ann pw_bob pw_cora
  secret=$("$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(32))')
  pw_admin=$("$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(12))')
  pw_ann=$("$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(12))')
  pw_bob=$("$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(12))')
  pw_cora=$("$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(12))')
  printf '{"admin": "%s", "ann": "%s", "bob": "%s", "cora": "%s"}\n' "$pw_admin" "$pw_ann" "$pw_bob" "$pw_cora" > "$C/passwords.json"
  local metadata="postgresql+psycopg2://$PG_U@$PG_H:$PG_P/$METADATA_DB"

  # The connections: generated per environment and region, the caller's AIRFLOW_CONN_* winning.
  local mongo="" search=""
  answers "${MONGO_URI:-}" && mongo=$MONGO_URI
  answers "${OPENSEARCH_URL:-}" && search=$OPENSEARCH_URL
  "$BIN/python" "$ROOT/scripts/cluster_connections.py" "$SPECS" "$PREFIX" "$PG_URL" "$REDIS_URL" $TARGET_REDIS_DBS "$mongo" "$search" \
    > "$C/connections.env" || die "cannot generate the connections for $SPECS"
  # every `up` starts from empty targets: a cluster is for trying and testing, never for keeping data
  reset_targets

  {
    echo "# shared by every component (deploy/airflow.env, then what this machine decides)"
    sed -n 's/^\(AIRFLOW__[A-Z_]*=.*\)$/export \1/p' "$ROOT/deploy/airflow.env"
    echo "export PATH='$BIN:$PATH'"
    echo "export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN='$metadata'"
    echo "export AIRFLOW__CELERY__BROKER_URL='${REDIS_URL%/}/$BROKER_DB'"
    echo "export AIRFLOW__CELERY__RESULT_BACKEND='db+postgresql://$PG_U@$PG_H:$PG_P/$METADATA_DB'"
    # Airflow 3: every process signs and checks execution-API tokens with one secret, and reaches
    # the execution API at one URL (apache/airflow#48061)
    echo "export AIRFLOW__API_AUTH__JWT_SECRET='$secret'"
    echo "export AIRFLOW__API__SECRET_KEY='$secret'"
    echo "export AIRFLOW__CORE__EXECUTION_API_SERVER_URL='$AIRFLOW_URL/execution/'"
    echo "export AIRFLOW__API__BASE_URL='$AIRFLOW_URL'"
    echo "export AIRFLOW__API__HOST=127.0.0.1"
    echo "export AIRFLOW__API__PORT=$port"
    echo "export AIRFLOW__API__WORKERS=1"
    echo "export AIRFLOW__CORE__PARALLELISM=16"
    echo "export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS='admin:admin,ann:admin,bob:admin,cora:admin'"
    echo "export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE='$C/passwords.json'"
    echo "export AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=$(free_port)"
    echo "export AIRFLOW__LOGGING__LOGGING_LEVEL=INFO"
    [ -n "${POLYMIGRATE_NODE_MODULES:-}" ] && echo "export POLYMIGRATE_NODE_MODULES='$POLYMIGRATE_NODE_MODULES'"
    grep '^export ' "$C/connections.env"
  } > "$C/common.env"

  copy_code "$C/control"
  for n in api-server scheduler dag-processor triggerer; do write_component_env "$n" "$C/control"; done
  for w in $WORKERS; do copy_code "$C/$w"; write_component_env "$w" "$C/$w"; done

  say "airflow db migrate ($METADATA_DB)"
  ( . "$C/api-server.env"; "$AIRFLOW" db migrate ) >"$C/logs/db-migrate.log" 2>&1 \
    || { tail -20 "$C/logs/db-migrate.log"; die "airflow db migrate failed"; }
  for n in $(names); do start_component "$n"; done
  wait_for 240 "the API server and its scheduler, triggerer and DAG processor" healthy
  for w in $WORKERS; do wait_for 180 "$w" worker_ready "$w"; done

  cat > "$C/env" <<EOF
# written by scripts/cluster.sh up: where the cluster answers and who may log in
export AIRFLOW_URL='$AIRFLOW_URL'
export AIRFLOW_ADMIN_USER=admin AIRFLOW_ADMIN_PASSWORD='$pw_admin'
export AIRFLOW_APPROVER1_USER=ann AIRFLOW_APPROVER1_PASSWORD='$pw_ann'
export AIRFLOW_APPROVER2_USER=bob AIRFLOW_APPROVER2_PASSWORD='$pw_bob'
export AIRFLOW_COMPLIANCE_USER=cora AIRFLOW_COMPLIANCE_PASSWORD='$pw_cora'
export POLYMIGRATE_CLUSTER_HOME='$C'
EOF
  chmod 600 "$C/env" "$C/passwords.json" "$C"/*.env
  say "ready in $(( $(date +%s) - T0 )) s: $AIRFLOW_URL (users and passwords: $C/env)"
}

down() {
  [ -d "$RUN" ] || { say "nothing to stop"; return 0; }
  # all at once: each waits up to 30 s for its own warm shutdown (a Celery worker's, the API
  # server's ~10 s on a loaded machine); one after another they took 22-24 s in the e2e tests
  for n in $(names); do
    if alive "$n"; then say "$n: stopping"; fi
    stop_component "$n" &
  done
  wait
  say "stopped"
}

status() {
  local n
  for n in $(names); do
    if alive "$n"; then echo "$n: running (pid $(cat "$RUN/$n.pid"))"; else echo "$n: stopped"; fi
  done
  [ -f "$C/env" ] && grep AIRFLOW_URL "$C/env" || true
}

cmd=${1:-up}; shift || true
case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  kill) [ $# -ge 1 ] || die "usage: scripts/cluster.sh kill NAME [SIGNAL]"
        alive "$1" || die "$1 is not running"
        sig=${2:-KILL}
        say "$1: SIG$sig to process group $(cat "$RUN/$1.pid")"
        case $sig in
          TERM|KILL) stop_component "$1" "$sig" ;;   # gone, with its pid file, when this returns
          *) kill "-$sig" -- "-$(cat "$RUN/$1.pid")" ;;  # STOP, CONT…: it stays recorded
        esac ;;
  reset-targets) engines_env; reset_targets; say "targets emptied" ;;
  start) [ $# -ge 1 ] || die "usage: scripts/cluster.sh start NAME…"; engines_env; start_and_wait "$@" ;;
  *) die "usage: scripts/cluster.sh up | down | status | kill NAME [SIGNAL] | start NAME… | reset-targets" ;;
esac
