#!/usr/bin/env bash
# scripts/stack.sh up|down|status — the local stack of real services recstream talks to.
#
# up:     installs (when missing) and starts MariaDB, PostgreSQL 15 + pgvector 0.8.0, kinesalite,
#         dynalite and the Versity S3 gateway on fixed loopback ports, then creates the databases,
#         buckets and Kinesis stream. Services already answering on their port are used as they are.
#         Also installs promtool (Debian's prometheus package; the server is not left running),
#         which the alert-rule tests in deploy/ use.
#         Idempotent: a second run finds everything up and returns within seconds.
# down:   stops only what `up` started (it records that under $STACK_DIR/started/).
# status: one line per service.
# stream NAME SHARDS: create a Kinesis stream on the local stack (the demo uses its own).
#
# Everything it installs, its logs, data and pid files live under $STACK_DIR (default .stack/,
# ignored by git). Ports and names default to config.yaml's values and can be overridden.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR=${RECSTREAM_STACK_DIR:-$ROOT/.stack}

MYSQL_PORT=${STACK_MYSQL_PORT:-3306}
PG_PORT=${STACK_PG_PORT:-5432}
KINESIS_PORT=${STACK_KINESIS_PORT:-4567}
DYNAMO_PORT=${STACK_DYNAMO_PORT:-4568}
S3_PORT=${STACK_S3_PORT:-7070}
PG_MAJOR=15

# Pinned tool versions.
KINESALITE_VERSION=3.3.3
DUCKDB_NODE_VERSION=1.5.6-r.1   # @duckdb/node-api: the reader of the Hive layout in the tests
DYNALITE_VERSION=4.0.0
VERSITYGW_VERSION=v1.8.0
PGVECTOR_VERSION=0.8.0

# Local-only credentials; production takes them from the environment / AWS credential chain.
DB_USER=recstream
DB_PASSWORD=${RECSTREAM_STACK_DB_PASSWORD:-recstream}
MYSQL_DB=classicmodels
PG_DB=recstream
AWS_KEY=${AWS_ACCESS_KEY_ID:-recstream}
AWS_SECRET=${AWS_SECRET_ACCESS_KEY:-recstream-local-secret}
REGION=${AWS_REGION:-us-east-1}
BUCKETS=${STACK_BUCKETS:-recstream-datalake recstream-artifacts recstream-recommendations}
STREAM=${STACK_STREAM:-recstream-user-activity}
SHARDS=${STACK_SHARDS:-4}

log() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port seconds
  local deadline=$((SECONDS + $3))
  until port_open "$2"; do
    [ $SECONDS -lt $deadline ] || die "$1 did not open 127.0.0.1:$2 within $3 s (see $STACK_DIR/logs/$1.log)"
    sleep 0.2
  done
}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=0
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $APT_UPDATED -eq 0 ]; then as_root apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

mark_started() { mkdir -p "$STACK_DIR/started"; touch "$STACK_DIR/started/$1"; }

# ---------------------------------------------------------------------------- MariaDB
mysql_root() {
  # Debian's root uses unix_socket auth; the go-svc image also accepts root over TCP.
  if mariadb -uroot -e 'SELECT 1' >/dev/null 2>&1; then mariadb -uroot "$@";
  else mariadb -uroot -h127.0.0.1 -P"$MYSQL_PORT" "$@"; fi
}

mysql_up() {
  if ! port_open "$MYSQL_PORT"; then
    apt_install mariadb-server mariadb-client
    log "starting MariaDB"
    as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --port="$MYSQL_PORT" --bind-address=127.0.0.1
    mark_started mariadb
    wait_port mariadb "$MYSQL_PORT" 60
  fi
  command -v mariadb >/dev/null || apt_install mariadb-client
  mysql_root <<SQL
CREATE DATABASE IF NOT EXISTS \`$MYSQL_DB\` CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'localhost';
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'127.0.0.1';
SQL
}

# ---------------------------------------------------------------------------- PostgreSQL + pgvector
pg_super() { as_root runuser -u postgres -- env PGOPTIONS="-c client_min_messages=warning" psql -v ON_ERROR_STOP=1 -qAt -p "$PG_PORT" "$@"; }

pgvector_installed() {
  local ctl=/usr/share/postgresql/$PG_MAJOR/extension/vector.control
  [ -f "$ctl" ] && grep -q "default_version = '$PGVECTOR_VERSION'" "$ctl" \
    && [ -f "/usr/lib/postgresql/$PG_MAJOR/lib/vector.so" ]
}

pgvector_build() {
  apt_install "postgresql-server-dev-$PG_MAJOR" build-essential dpkg-dev
  local src="$STACK_DIR/src/pgvector"
  mkdir -p "$src"
  if [ ! -f "$src/pgvector_${PGVECTOR_VERSION}.orig.tar.gz" ]; then
    # Debian bookworm ships no pgvector binary; trixie's *source* package carries 0.8.0.
    local lists="$STACK_DIR/apt"
    mkdir -p "$lists/lists/partial" "$lists/cache/archive/partial"
    local mirror
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
      | grep -E '^(deb |URIs:)' | grep -oE 'https?://[^ ]+' | grep -E '/debian/?$' | head -n1 || true)
    [ -n "$mirror" ] || die "cannot find a Debian mirror in the apt sources"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" > "$lists/trixie-src.list"
    local opts=(-o Dir::Etc::SourceList="$lists/trixie-src.list" -o Dir::Etc::SourceParts=/dev/null
                -o Dir::State::Lists="$lists/lists" -o Dir::Cache="$lists/cache"
                -o APT::Get::List-Cleanup=0)
    log "fetching pgvector $PGVECTOR_VERSION source package"
    apt-get "${opts[@]}" update -qq >/dev/null
    (cd "$src" && apt-get "${opts[@]}" source --download-only -qq "pgvector=${PGVECTOR_VERSION}-"'*' >/dev/null 2>&1 \
      || apt-get "${opts[@]}" source --download-only -qq pgvector >/dev/null)
    [ -f "$src/pgvector_${PGVECTOR_VERSION}.orig.tar.gz" ] || die "pgvector_${PGVECTOR_VERSION}.orig.tar.gz not found after apt-get source"
  fi
  rm -rf "$src/build" && mkdir -p "$src/build"
  tar -xzf "$src/pgvector_${PGVECTOR_VERSION}.orig.tar.gz" -C "$src/build" --strip-components=1
  log "building pgvector $PGVECTOR_VERSION"
  make -s -C "$src/build" PG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" >"$STACK_DIR/logs/pgvector-build.log" 2>&1
  as_root make -s -C "$src/build" PG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" install >>"$STACK_DIR/logs/pgvector-build.log" 2>&1
}

pg_up() {
  if ! port_open "$PG_PORT"; then
    apt_install "postgresql-$PG_MAJOR" postgresql-client
    log "starting PostgreSQL $PG_MAJOR"
    as_root pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" main start
    mark_started postgres
    wait_port postgres "$PG_PORT" 60
  fi
  pgvector_installed || pgvector_build
  pg_super -d postgres <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD';
  END IF;
END \$\$;
SQL
  if [ "$(pg_super -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
    pg_super -d postgres -c "CREATE DATABASE $PG_DB OWNER $DB_USER"
  fi
  # The extension needs a superuser once; the application role (like an RDS app role) then only
  # owns its own schema objects. See docs/model.md "Production (RDS for PostgreSQL) without superuser".
  pg_super -d "$PG_DB" -c "CREATE EXTENSION IF NOT EXISTS vector" -c "ALTER EXTENSION vector UPDATE" \
    -c "GRANT CREATE ON SCHEMA public TO $DB_USER" -c "GRANT CREATE ON DATABASE $PG_DB TO $DB_USER" >/dev/null
}

# ---------------------------------------------------------------------------- promtool
# `go test ./deploy/` checks and unit-tests deploy/prometheus/alerts.yaml with promtool, which
# Debian ships in the prometheus package. Only the tool is wanted: a Prometheus server that the
# package's maintainer scripts start is stopped and disabled again (one that ran before is left).
promtool_up() {
  command -v promtool >/dev/null && return 0
  local before pid
  before=$(pgrep -x prometheus || true)
  if [ $APT_UPDATED -eq 0 ]; then as_root apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  log "installing prometheus (for promtool; the server is not kept running)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ -d /run/systemd/system ]; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/prometheus ]; then
    as_root /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
  for pid in $(pgrep -x prometheus || true); do
    grep -qx "$pid" <<<"$before" && continue
    log "stopping the prometheus server (pid $pid) the package started"
    as_root kill "$pid" 2>/dev/null || true
  done
  command -v promtool >/dev/null || die "promtool is missing after installing the prometheus package"
}

# ---------------------------------------------------------------------------- AWS emulators
start_bg() { # name pidfile cmd...
  local name=$1; shift
  mkdir -p "$STACK_DIR/logs" "$STACK_DIR/run"
  nohup "$@" >"$STACK_DIR/logs/$name.log" 2>&1 &
  echo $! >"$STACK_DIR/run/$name.pid"
  mark_started "$name"
}

node_tools() {
  local dir="$STACK_DIR/node"
  if [ ! -x "$dir/node_modules/.bin/kinesalite" ] || [ ! -x "$dir/node_modules/.bin/dynalite" ] \
     || ! grep -q "\"version\": \"$KINESALITE_VERSION\"" "$dir/node_modules/kinesalite/package.json" 2>/dev/null; then
    command -v npm >/dev/null || apt_install nodejs npm
    mkdir -p "$dir"
    # --ignore-scripts: only the in-memory stores are used, so leveldown's native build (which
    # some npm versions run and which needs a download) is not needed.
    log "installing kinesalite@$KINESALITE_VERSION dynalite@$DYNALITE_VERSION"
    (cd "$dir" && [ -f package.json ] || echo '{"name":"recstream-stack","private":true}' >"$dir/package.json")
    npm install --prefix "$dir" --no-audit --no-fund --silent --ignore-scripts "kinesalite@$KINESALITE_VERSION" "dynalite@$DYNALITE_VERSION" >"$STACK_DIR/logs/npm.log" 2>&1 \
      || die "npm install failed (see $STACK_DIR/logs/npm.log)"
  fi
}

# DuckDB (its Node.js client; npm, not a server): an engine analysts use, as an independent
# reader of the worker's Hive layout in the tests (worker/hive_duckdb_test.go).
duckdb_up() {
  local dir="$STACK_DIR/duckdb"
  grep -q "\"version\": \"$DUCKDB_NODE_VERSION\"" "$dir/node_modules/@duckdb/node-api/package.json" 2>/dev/null && return 0
  command -v npm >/dev/null || apt_install nodejs npm
  mkdir -p "$dir"
  log "installing @duckdb/node-api@$DUCKDB_NODE_VERSION"
  [ -f "$dir/package.json" ] || echo '{"name":"recstream-duckdb","private":true}' >"$dir/package.json"
  npm install --prefix "$dir" --no-audit --no-fund --silent --ignore-scripts "@duckdb/node-api@$DUCKDB_NODE_VERSION" >"$STACK_DIR/logs/npm-duckdb.log" 2>&1 \
    || die "npm install @duckdb/node-api failed (see $STACK_DIR/logs/npm-duckdb.log)"
}

kinesis_up() {
  port_open "$KINESIS_PORT" && return 0
  node_tools
  log "starting kinesalite on 127.0.0.1:$KINESIS_PORT"
  start_bg kinesalite node -r "$ROOT/scripts/abort-guard.js" "$STACK_DIR/node/node_modules/kinesalite/cli.js" --host 127.0.0.1 --port "$KINESIS_PORT" --createStreamMs 50 --deleteStreamMs 50 --updateStreamMs 50 --shardLimit 500
  wait_port kinesalite "$KINESIS_PORT" 30
}

dynamo_up() {
  port_open "$DYNAMO_PORT" && return 0
  node_tools
  log "starting dynalite on 127.0.0.1:$DYNAMO_PORT"
  start_bg dynalite node -r "$ROOT/scripts/abort-guard.js" "$STACK_DIR/node/node_modules/dynalite/cli.js" --host 127.0.0.1 --port "$DYNAMO_PORT" --createTableMs 50 --deleteTableMs 50 --updateTableMs 50
  wait_port dynalite "$DYNAMO_PORT" 30
}

s3_up() {
  port_open "$S3_PORT" && return 0
  local bin="$STACK_DIR/bin/versitygw"
  if [ ! -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q "${VERSITYGW_VERSION#v}"; then
    log "building versitygw $VERSITYGW_VERSION (about a minute)"
    GOBIN="$STACK_DIR/bin" go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" >"$STACK_DIR/logs/versitygw-build.log" 2>&1 \
      || die "versitygw build failed (see $STACK_DIR/logs/versitygw-build.log)"
  fi
  mkdir -p "$STACK_DIR/s3/data" "$STACK_DIR/s3/meta"
  log "starting versitygw on 127.0.0.1:$S3_PORT"
  ROOT_ACCESS_KEY="$AWS_KEY" ROOT_SECRET_KEY="$AWS_SECRET" \
    start_bg versitygw "$bin" --port "127.0.0.1:$S3_PORT" posix --sidecar "$STACK_DIR/s3/meta" "$STACK_DIR/s3/data"
  wait_port versitygw "$S3_PORT" 30
}

# AWS JSON / REST calls through curl's SigV4 support: no AWS CLI needed.
aws_json() { # port service target body
  curl -sS -o /dev/stdout -w '\n%{http_code}' --aws-sigv4 "aws:amz:$REGION:$2" --user "$AWS_KEY:$AWS_SECRET" \
    -H "Content-Type: application/x-amz-json-1.1" -H "X-Amz-Target: $3" -d "$4" "http://127.0.0.1:$1/"
}

# ensure_stream NAME SHARDS: create the stream when missing and wait until it is ACTIVE.
ensure_stream() {
  local name=$1 shards=$2 out
  out=$(aws_json "$KINESIS_PORT" kinesis Kinesis_20131202.DescribeStreamSummary "{\"StreamName\":\"$name\"}")
  if [ "${out##*$'\n'}" != 200 ]; then
    out=$(aws_json "$KINESIS_PORT" kinesis Kinesis_20131202.CreateStream "{\"StreamName\":\"$name\",\"ShardCount\":$shards}")
    case "${out##*$'\n'}" in 200) log "created stream $name ($shards shards)";; *) die "create stream $name: $out";; esac
  fi
  local deadline=$((SECONDS + 30))
  until aws_json "$KINESIS_PORT" kinesis Kinesis_20131202.DescribeStreamSummary "{\"StreamName\":\"$name\"}" | grep -q '"StreamStatus":"ACTIVE"'; do
    [ $SECONDS -lt $deadline ] || die "stream $name not ACTIVE within 30 s"
    sleep 0.2
  done
}

resources_up() {
  local code
  for b in $BUCKETS; do
    code=$(curl -sS -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:$REGION:s3" --user "$AWS_KEY:$AWS_SECRET" \
      -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" -X PUT "http://127.0.0.1:$S3_PORT/$b")
    case $code in 200|409) ;; *) die "create bucket $b: HTTP $code";; esac
  done
  ensure_stream "$STREAM" "$SHARDS"
}

cmd_up() {
  mkdir -p "$STACK_DIR/logs"
  command -v curl >/dev/null || apt_install curl ca-certificates
  mysql_up
  pg_up
  kinesis_up
  dynamo_up
  s3_up
  resources_up
  promtool_up
  duckdb_up
  cmd_status
}

cmd_down() {
  for name in versitygw dynalite kinesalite; do
    [ -f "$STACK_DIR/started/$name" ] || continue
    if [ -f "$STACK_DIR/run/$name.pid" ]; then
      local pid; pid=$(cat "$STACK_DIR/run/$name.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$STACK_DIR/run/$name.pid"
    fi
    rm -f "$STACK_DIR/started/$name"; log "stopped $name"
  done
  if [ -f "$STACK_DIR/started/postgres" ]; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" main stop || true
    rm -f "$STACK_DIR/started/postgres"; log "stopped postgres"
  fi
  if [ -f "$STACK_DIR/started/mariadb" ]; then
    as_root start-stop-daemon --stop --oknodo --retry 30 --exec /usr/sbin/mariadbd || true
    rm -f "$STACK_DIR/started/mariadb"; log "stopped mariadb"
  fi
}

cmd_status() {
  local rc=0
  for svc in "mariadb $MYSQL_PORT" "postgres $PG_PORT" "kinesalite $KINESIS_PORT" "dynalite $DYNAMO_PORT" "versitygw $S3_PORT"; do
    set -- $svc
    if port_open "$2"; then printf '%-11s up    127.0.0.1:%s\n' "$1" "$2"; else printf '%-11s down  127.0.0.1:%s\n' "$1" "$2"; rc=1; fi
  done
  return $rc
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  stream) [ $# -eq 3 ] || { echo "usage: $0 stream NAME SHARDS" >&2; exit 2; }; ensure_stream "$2" "$3" ;;
  *) echo "usage: $0 up|down|status|stream NAME SHARDS" >&2; exit 2 ;;
esac
