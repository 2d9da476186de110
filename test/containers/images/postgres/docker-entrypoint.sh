#!/bin/sh
# Entrypoint of the local postgres:15 stand-in: what compose relies on from the official image's
# (POSTGRES_USER, POSTGRES_PASSWORD[_FILE], POSTGRES_DB, /docker-entrypoint-initdb.d on the first start, root then postgres).
set -eu

case "${1:-}" in -*) set -- postgres "$@" ;; esac
if [ "${1:-}" != postgres ]; then exec "$@"; fi

# Started as root: read the password file (secrets may be readable by root only), give the data
# directory (a fresh volume) to postgres, then run as postgres.
if [ "$(id -u)" = 0 ]; then
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
    export POSTGRES_PASSWORD
    unset POSTGRES_PASSWORD_FILE
  fi
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    password=$(cat "$POSTGRES_PASSWORD_FILE")
  else
    password=${POSTGRES_PASSWORD:-}
  fi
  unset POSTGRES_PASSWORD
  if [ -z "$password" ]; then
    echo "docker-entrypoint: set POSTGRES_PASSWORD_FILE (or POSTGRES_PASSWORD): the superuser needs a password" >&2
    exit 1
  fi
  pwfile=$(mktemp)
  printf '%s\n' "$password" > "$pwfile"
  initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  # Reached over the network, with a password (the official image's defaults).
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"

  # Init scripts run against a server on the socket only, as the official image's do.
  # PGPORT, when set, is the server's port (as with the official image): the socket's name follows it.
  port=${PGPORT:-5432}
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p $port" -w start >/dev/null
  export PGUSER="$user" PGPORT="$port" PGHOST=/var/run/postgresql
  if [ "$db" != postgres ]; then
    psql -v ON_ERROR_STOP=1 --dbname postgres --quiet -c "CREATE DATABASE \"$db\""
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) echo "docker-entrypoint: running $f"; if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
      *.sql) echo "docker-entrypoint: running $f"; psql -v ON_ERROR_STOP=1 --dbname "$db" --quiet -f "$f" ;;
      *) ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  unset PGUSER PGHOST
  echo "docker-entrypoint: database initialised in $PGDATA"
fi

exec "$@"
