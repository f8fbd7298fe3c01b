#!/usr/bin/env bash
# Run the pycri daemon in the background (this machine has no systemd; see
# hack/pycri.service for machines that do).
#   hack/pycri.sh start|stop|restart|status
# Logs go to /var/log/pycri/pycri.log (JSON lines), the pid to /run/pycri/pycri.pid.
# Environment: PYCRI (the pycri command), PYCRI_CONFIG, PYCRI_PIDFILE and PYCRI_LOG override
# those defaults (tests run a daemon of their own that way).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYCRI=${PYCRI:-$ROOT/.venv/bin/pycri}
CONFIG=${PYCRI_CONFIG:-/etc/pycri/pycri.toml}
PIDFILE=${PYCRI_PIDFILE:-/run/pycri/pycri.pid}
LOG=${PYCRI_LOG:-/var/log/pycri/pycri.log}
SOCKET=$("$PYCRI" --config "$CONFIG" config | sed -n 's/^listen = "unix:\/\/\(.*\)"$/\1/p')

# alive PID: the process exists and is not a zombie (a killed daemon nobody reaped yet, whose
# pid kill -0 still finds) nor dead (X). The state is the field after the last ')' of
# /proc/PID/stat (the command name in parentheses may itself hold spaces and parentheses).
alive() {
  local stat state
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  state=${stat##*) }
  state=${state%% *}
  [ "$state" != Z ] && [ "$state" != X ]
}

# ours PID: it is the pycri this script started (a pid can be reused by any other process):
# its command line has `serve --pid-file $PIDFILE`.
ours() {
  local args
  args=$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  grep -qxF -- serve <<<"$args" && grep -qxF -- "$PIDFILE" <<<"$args" \
    && grep -A1 -xF -- --pid-file <<<"$args" | grep -qxF -- "$PIDFILE"
}

# the pid in the pid file, if it is a whole number
pid_of_file() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[1-9][0-9]*$ ]] || return 1
  echo "$pid"
}

running() { local pid; pid=$(pid_of_file) && alive "$pid" && ours "$pid"; }

start() {
  if running; then echo "pycri is running (pid $(cat "$PIDFILE"))"; return 0; fi
  mkdir -p "$(dirname "$LOG")" "$(dirname "$PIDFILE")"
  setsid nohup "$PYCRI" --config "$CONFIG" serve --pid-file "$PIDFILE" >>"$LOG" 2>&1 </dev/null &
  for _ in $(seq 600); do
    if [ -S "$SOCKET" ] && running; then echo "pycri started (pid $(cat "$PIDFILE")), socket $SOCKET"; return 0; fi
    sleep 0.1
  done
  echo "pycri did not start; last log lines:" >&2; tail -n 20 "$LOG" >&2; return 1
}

stop() {
  running || { rm -f "$PIDFILE"; return 0; }
  local pid; pid=$(pid_of_file)
  kill -TERM "$pid"
  for _ in $(seq 300); do alive "$pid" || { rm -f "$PIDFILE"; echo "pycri stopped"; return 0; }; sleep 0.1; done
  echo "pycri did not stop in 30 s" >&2; return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if running; then echo "pycri is running (pid $(cat "$PIDFILE"))"; else echo "pycri is not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
