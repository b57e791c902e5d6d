#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the tests and prints its URL.
#
#   eval "$(bash .ci/postgres.sh)"   # exports PERCEPTRON_TEST_POSTGRES
#
# Installs PostgreSQL from Debian packages if it is missing, runs it as the
# unprivileged "postgres" user (created if needed) on a free local port, in a
# fresh data directory under /tmp. The server is left running; the data
# directory is thrown away on the next run.
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  return 1
}

if ! BIN=$(find_bin); then
  log "installing PostgreSQL from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  BIN=$(find_bin)
fi

RUNAS=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  RUNAS=(runuser -u postgres --)
fi

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 55432)
DIR=$(mktemp -d /tmp/perceptron-pg.XXXXXX)
chmod 755 "$DIR"
[ ${#RUNAS[@]} -gt 0 ] && chown postgres "$DIR"

"${RUNAS[@]}" "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; exit 1; }
"${RUNAS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" start >&2 \
  || { cat "$DIR/server.log" >&2; exit 1; }
"${RUNAS[@]}" "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -c "CREATE DATABASE perceptron_test" >/dev/null

log "server on 127.0.0.1:$PORT (data in $DIR)"
echo "export PERCEPTRON_TEST_POSTGRES='postgres://postgres@127.0.0.1:$PORT/perceptron_test?sslmode=disable'"
