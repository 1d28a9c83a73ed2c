#!/usr/bin/env bash
# The production topology on one machine: web (gunicorn with uvicorn workers, config.asgi: the API,
# the pages and the agents' async offer channel on one port), one Celery worker, the one beat, on the
# machine's PostgreSQL and Redis, all under config.settings.production.
#
#   scripts/production.sh start    migrate, collectstatic, start the three processes, wait for /readyz
#   scripts/production.sh stop     stop them (TERM, then KILL after 30 s)
#   scripts/production.sh status   which are running, and /readyz
#
# `make production` / `make production-stop` call it. Every variable below can be set in the
# environment (or in the env file CPX_ENV_FILE, default .env.production) to point elsewhere.
# Processes, logs (one JSON object per line) and the generated secret live in CPX_RUN_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR="${CPX_RUN_DIR:-var/production}"
ENV_FILE="${CPX_ENV_FILE:-.env.production}"
PY=.venv/bin/python
mkdir -p "$RUN_DIR"

if [ -f "$ENV_FILE" ]; then
  set -a
  # shellcheck disable=SC1090
  . "$ENV_FILE"
  set +a
fi
# This machine's services, unless told otherwise.
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-config.settings.production}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/cpx}"
export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/0}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/1}"
export DJANGO_ALLOWED_HOSTS="${DJANGO_ALLOWED_HOSTS:-127.0.0.1,localhost}"
export CPX_SETTLEMENT_ON_CHAIN="${CPX_SETTLEMENT_ON_CHAIN:-false}"
# Nothing in front of gunicorn terminates TLS here; behind a proxy that does, leave this true.
export DJANGO_SECURE_SSL_REDIRECT="${DJANGO_SECURE_SSL_REDIRECT:-false}"
export GUNICORN_BIND="${GUNICORN_BIND:-127.0.0.1:8000}"
# Per web worker: GUNICORN_THREADS + GUNICORN_AGENT_THREADS (config/asgi.py) + 6 for the offer channel
export DATABASE_POOL_MAX_SIZE="${DATABASE_POOL_MAX_SIZE:-16}"
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$RUN_DIR/prometheus}"
CELERY_CONCURRENCY="${CELERY_CONCURRENCY:-2}"
URL="http://$GUNICORN_BIND"
# stop and status talk to what start started, whatever the environment says now
[ "${1:-}" != start ] && [ -s "$RUN_DIR/url" ] && URL="$(cat "$RUN_DIR/url")"
if [ -z "${DJANGO_SECRET_KEY:-}" ]; then
  # Made once per run directory and kept (sessions survive a restart); never committed.
  [ -s "$RUN_DIR/secret_key" ] || (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(50))' >"$RUN_DIR/secret_key")
  DJANGO_SECRET_KEY="$(cat "$RUN_DIR/secret_key")"
  export DJANGO_SECRET_KEY
fi

# Each waiting agent holds a socket: as many open files as the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PROCESSES=(web worker beat)
command_of() {
  case "$1" in
    web) echo ".venv/bin/gunicorn -c config/gunicorn.py ${GUNICORN_APP:-config.asgi}" ;;
    worker) echo ".venv/bin/celery -A config worker --loglevel=INFO --concurrency=$CELERY_CONCURRENCY --hostname=cpx-worker@%h" ;;
    beat) echo ".venv/bin/celery -A config beat --loglevel=INFO" ;;
  esac
}
pid_of() { cat "$RUN_DIR/$1.pid" 2>/dev/null || true; }
running() { local pid; pid="$(pid_of "$1")"; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

create_database() {
  # The database DATABASE_URL names, created on its server when it does not exist yet.
  "$PY" - <<'PYTHON'
import os
from urllib.parse import urlsplit, urlunsplit

import psycopg

url = urlsplit(os.environ["DATABASE_URL"])
name = url.path.lstrip("/")
with psycopg.connect(urlunsplit(url._replace(path="/postgres")), autocommit=True) as conn:
    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
        conn.execute(f'CREATE DATABASE "{name}"')
        print(f"created database {name}")
PYTHON
}

ready() { curl -fsS -o /dev/null --max-time 5 "$URL/readyz" 2>/dev/null; }

# Ready, and a round cleared by the processes just started (not one left by an earlier run).
ready_since() {
  curl -fsS --max-time 5 "$URL/readyz" 2>/dev/null | "$PY" -c '
import json, sys
from datetime import datetime
body = json.load(sys.stdin)
cleared = datetime.fromisoformat(body["components"]["rounds"]["last_cleared_at"])
sys.exit(0 if body["status"] == "ready" and cleared.timestamp() >= float(sys.argv[1]) else 1)
' "$1" 2>/dev/null
}

start() {
  for name in "${PROCESSES[@]}"; do
    if running "$name"; then echo "$name is already running (pid $(pid_of "$name")); stop first"; exit 1; fi
  done
  test -x "$PY" || { echo "no .venv: run \`make install-production\` (or \`make install\`) first"; exit 1; }
  "$PY" manage.py check --deploy --fail-level ERROR
  create_database
  "$PY" manage.py migrate --noinput -v0
  "$PY" manage.py collectstatic --noinput -v0
  rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  echo "$URL" >"$RUN_DIR/url"
  local started; started="$(date +%s)"
  for name in "${PROCESSES[@]}"; do
    # shellcheck disable=SC2046
    nohup $(command_of "$name") >>"$RUN_DIR/$name.log" 2>&1 &
    echo $! >"$RUN_DIR/$name.pid"
    echo "started $name (pid $!), log $RUN_DIR/$name.log"
  done
  for _ in $(seq 1 "${CPX_READY_TIMEOUT_S:-90}"); do
    if ready_since "$started"; then
      echo "ready: $URL/readyz (a round has cleared since the start)"
      echo "web $URL/   API $URL/api/v1/   docs $URL/api/docs/   metrics $URL/metrics"
      return 0
    fi
    for name in "${PROCESSES[@]}"; do
      running "$name" || { echo "$name exited; its log:"; tail -n 30 "$RUN_DIR/$name.log"; stop; exit 1; }
    done
    sleep 1
  done
  echo "not ready after ${CPX_READY_TIMEOUT_S:-90} s:"
  curl -sS --max-time 5 "$URL/readyz" || true
  echo
  stop
  exit 1
}

stop() {
  for name in beat worker web; do
    if running "$name"; then
      local pid; pid="$(pid_of "$name")"
      kill -TERM "$pid"
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
      echo "stopped $name (pid $pid)"
    fi
    rm -f "$RUN_DIR/$name.pid"
  done
}

status() {
  for name in "${PROCESSES[@]}"; do
    if running "$name"; then echo "$name: running (pid $(pid_of "$name"))"; else echo "$name: stopped"; fi
  done
  curl -sS --max-time 5 "$URL/readyz" || echo "readyz: no answer from $URL"
  echo
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status"; exit 2 ;;
esac
