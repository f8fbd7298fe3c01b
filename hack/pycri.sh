#!/usr/bin/env bash
# Run the pycri daemon in the background (this machine has no systemd; see
# hack/pycri.service for machines that do).
#   hack/pycri.sh start|stop|restart|status
# Logs go to /var/log/pycri/pycri.log (JSON lines), the pid to /run/pycri/pycri.pid.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYCRI=${PYCRI:-$ROOT/.venv/bin/pycri}
CONFIG=${PYCRI_CONFIG:-/etc/pycri/pycri.toml}
PIDFILE=/run/pycri/pycri.pid
LOG=/var/log/pycri/pycri.log
SOCKET=$("$PYCRI" --config "$CONFIG" config | sed -n 's/^listen = "unix:\/\/\(.*\)"$/\1/p')

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

start() {
  if running; then echo "pycri is running (pid $(cat "$PIDFILE"))"; return 0; fi
  mkdir -p "$(dirname "$LOG")" "$(dirname "$PIDFILE")"
  setsid nohup "$PYCRI" --config "$CONFIG" serve --pid-file "$PIDFILE" >>"$LOG" 2>&1 </dev/null &
  for _ in $(seq 100); do
    if [ -S "$SOCKET" ] && running; then echo "pycri started (pid $(cat "$PIDFILE")), socket $SOCKET"; return 0; fi
    sleep 0.1
  done
  echo "pycri did not start; last log lines:" >&2; tail -n 20 "$LOG" >&2; return 1
}

stop() {
  running || { rm -f "$PIDFILE"; return 0; }
  local pid; pid=$(cat "$PIDFILE")
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; echo "pycri stopped"; return 0; }; sleep 0.1; done
  echo "pycri did not stop in 10 s" >&2; return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if running; then echo "pycri is running (pid $(cat "$PIDFILE"))"; else echo "pycri is not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
