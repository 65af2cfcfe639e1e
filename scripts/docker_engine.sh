#!/usr/bin/env bash
# A Docker engine for `make images` / `make test-images` where none runs (CI, a fresh machine):
#
#   bash scripts/docker_engine.sh start   installs Debian's docker.io and debootstrap when missing (as root),
#                                         starts dockerd unless an engine already answers, waits for it
#   bash scripts/docker_engine.sh stop    stops the dockerd that `start` started (by its PID), nothing else
#
# The PID lives in .tools/dockerd.pid; an engine this script did not start is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PIDFILE=.tools/dockerd.pid
LOG=.tools/dockerd.log

start() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || { echo "docker_engine: install ${missing[*]} (as root)" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if docker info >/dev/null 2>&1; then
    echo "docker_engine: an engine already answers; using it"
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || { echo "docker_engine: no engine answers, and starting dockerd needs root" >&2; exit 1; }
  mkdir -p .tools
  dockerd >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && { echo "docker_engine: dockerd started (pid $(cat "$PIDFILE"))"; return 0; }
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
    sleep 1
  done
  tail -20 "$LOG" >&2
  echo "docker_engine: dockerd did not come up" >&2
  exit 1
}

stop() {
  [ -f "$PIDFILE" ] || return 0
  local pid
  pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
