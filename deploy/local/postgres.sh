#!/usr/bin/env bash
# Local PostgreSQL for the stack, or the server DATABASE_URL names if that one answers.
# Usage: postgres.sh start|stop|status|restart|url
# Env: DATABASE_URL (used instead when it answers), STACK_DIR, PGPORT_LOCAL (15432),
# PG_START_TIMEOUT (60 s), PG_STOP_MODE (fast; immediate simulates a crash).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
STACK=${STACK_DIR:-$REPO/.stack}
STATE=$STACK/postgres
PORT=${PGPORT_LOCAL:-15432}
LOCAL_URL=postgresql://conference:conference@127.0.0.1:$PORT/conference
START_TIMEOUT=${PG_START_TIMEOUT:-60}

say() { echo "postgres: $*"; }
die() { echo "postgres: $*" >&2; exit 1; }

# The server refuses to run as root, so root runs it as the postgres OS user.
as_pg() {
  if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi
}

find_pgbin() {
  PGBIN=$(compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' | sort -V | tail -n 1 || true)
  if [[ -z $PGBIN ]]; then
    ((EUID == 0)) || die "no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)"
    say "installing Debian package postgresql"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    PGBIN=$(compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' | sort -V | tail -n 1) || die "install failed"
  fi
  PGBIN=$(dirname "$PGBIN")
}

# The data dir must be reachable by the postgres user, and the repo may sit under a dir it cannot
# traverse (e.g. /root). Widening a parent's permissions would touch dirs outside the repo, so fall
# back to a per-state-dir path under /var/tmp (kept across reboots, unlike /tmp) instead.
resolve_datadir() {
  PGDATA=$STATE/data
  if ((EUID == 0)) && ! runuser -u postgres -- test -x "$STACK"; then
    PGDATA=/var/tmp/conference-stack-$(sha256sum <<<"$STATE" | cut -c1-12)/data
  fi
  PGLOG=$(dirname "$PGDATA")/postgres.log
}

# A URL naming our own port is our cluster, so restart/stop still act on it when the caller has
# exported DATABASE_URL=$(postgres.sh url).
ours() { [[ $1 =~ @(127\.0\.0\.1|localhost):$PORT([/?]|$) ]]; }

external() {
  local url=${DATABASE_URL:-} psql
  [[ -n $url ]] && ! ours "$url" || return 1
  url=$(sed -E 's|^postgres(ql)?\+[a-z0-9]+://|postgresql://|' <<<"$url")  # SQLAlchemy-style URL
  psql=$(command -v psql || compgen -G '/usr/lib/postgresql/*/bin/psql' | tail -n 1 || true)
  if [[ -n $psql ]] && PGCONNECT_TIMEOUT=3 "$psql" -X -Atq -d "$url" -c 'select 1' >/dev/null 2>&1; then
    return 0
  fi
  echo "postgres: DATABASE_URL is set but not reachable; using the local cluster" >&2
  return 1
}

# The postmaster's pid if it is alive. Not `pg_ctl status`: it takes a killed postmaster that PID 1
# has not reaped yet (a zombie; some containers reap late) for a running server.
pm_pid() {
  local pid st
  pid=$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null) || return 1
  st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) && [[ -n $st && $st != [ZX] ]] || return 1
  echo "$pid"
}

# The server itself refuses to start while postmaster.pid names a live pid, and a zombie counts.
wait_reaped() {
  local pid end=$((SECONDS + 10))
  pid=$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null) || return 0
  while [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && ((SECONDS < end)); do
    sleep 0.1
  done
}

running() { pm_pid >/dev/null && "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; }

init_cluster() {
  local dir
  dir=$(dirname "$PGDATA")
  mkdir -p "$dir"
  if ((EUID == 0)); then
    chown postgres: "$dir"
    [[ $PGDATA == "$STATE/data" ]] || { mkdir -p "$STATE"; ln -sfn "$PGDATA" "$STATE/data"; }
  fi
  chmod 700 "$dir"
  [[ -f $PGDATA/PG_VERSION ]] && return 0
  as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  cat >>"$PGDATA/postgresql.conf" <<'EOF'

# conference local stack (deploy/local/postgres.sh); the port is passed on the command line.
listen_addresses = '127.0.0.1'
# TCP only: no dependency on /run/postgresql, which a fresh machine may lack.
unix_socket_directories = ''
max_connections = 200
shared_buffers = 128MB
# Tests check crash guarantees, so keep durability as in production.
fsync = on
synchronous_commit = on
full_page_writes = on
EOF
  say "initialised $PGDATA"
}

bootstrap_db() {
  "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres <<'SQL' >/dev/null
SELECT 'CREATE ROLE conference LOGIN CREATEDB PASSWORD ''conference'''
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'conference')\gexec
SELECT format('CREATE DATABASE %I OWNER conference', d)
  FROM unnest(ARRAY['conference', 'conference_test']) AS d
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = d)\gexec
SQL
}

cmd_start() {
  external && { say "using the reachable DATABASE_URL; nothing to start"; return 0; }
  find_pgbin
  mkdir -p "$STACK"
  resolve_datadir
  if running; then
    say "already running on 127.0.0.1:$PORT ($PGDATA)"
    return 0
  fi
  "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" && die "port $PORT is in use by another server"
  init_cluster
  wait_reaped
  # pg_ctl -w polls until the server accepts connections, or fails at the deadline.
  # 9>&-: the server must not inherit (and hold forever) the lock taken in lock().
  if ! as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -o "-p $PORT" -w -t "$START_TIMEOUT" start \
      >/dev/null 2>&1 9>&-; then
    tail -n 30 "$PGLOG" >&2 || true
    die "server failed to start or to become ready within ${START_TIMEOUT}s (log: $PGLOG)"
  fi
  bootstrap_db
  say "PostgreSQL $("$PGBIN/postgres" -V | awk '{print $3}') up on 127.0.0.1:$PORT ($PGDATA)"
}

cmd_stop() {
  external && { say "DATABASE_URL is an external server; not stopping it"; return 0; }
  find_pgbin
  resolve_datadir
  if ! pm_pid >/dev/null; then
    say "not running"
    return 0
  fi
  if ! as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m "${PG_STOP_MODE:-fast}" -w -t 60 stop >/dev/null; then
    pm_pid >/dev/null && die "server did not stop (log: $PGLOG)"
  fi
  say "stopped (${PG_STOP_MODE:-fast})"
}

cmd_status() {
  if external; then say "external DATABASE_URL answers"; return 0; fi
  find_pgbin
  resolve_datadir
  running || { say "not running"; return 1; }
  say "running on 127.0.0.1:$PORT ($PGDATA)"
}

cmd_url() {
  if [[ -n ${DATABASE_URL:-} ]] && { ours "$DATABASE_URL" || external; }; then
    echo "$DATABASE_URL"
  else
    echo "$LOCAL_URL"
  fi
}

lock() {
  mkdir -p "$STACK"
  exec 9>"$STACK/.postgres.lock"
  flock 9
}

case ${1:-} in
  start) lock; cmd_start ;;
  stop) lock; cmd_stop ;;
  restart) lock; cmd_stop; cmd_start ;;
  status) cmd_status ;;
  url) cmd_url ;;
  *) die "usage: $0 start|stop|status|restart|url" ;;
esac
