#!/usr/bin/env bash
# Test registries for pycri's tests, all on 127.0.0.1, all serving ONE shared
# filesystem storage (an image pushed once to :5000 is served by all three):
#   :5000  distribution, plain HTTP, no auth (storage delete enabled)
#   :5001  distribution, htpasswd basic auth: pycri-basic / basic-secret
#   :5002  distribution, token auth: realm http://127.0.0.1:5003/token,
#          service pycri-test-registry, issuer pycri-test-issuer
#   :5003  hack/token_server.py, token server: pycri-token / token-secret
#
#   hack/registry.sh start    idempotent: install what is missing (Debian's
#                             docker-registry, apache2-utils), write configs,
#                             start what is not running, wait until all answer
#   hack/registry.sh stop     stop all four (by pid file) and wait for them
#   hack/registry.sh status   print which are up (exit 1 unless all are)
#   hack/registry.sh wipe     stop, then delete the shared storage
#
# State (configs, htpasswd, token key+cert, pid files, logs/) lives in
# $PYCRI_REGISTRY_STATE, default /var/lib/pycri-test/registry; storage in
# its storage/. The token server runs on $PY, default $ROOT/.venv/bin/python
# (it needs the `cryptography` package).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
STATE=${PYCRI_REGISTRY_STATE:-/var/lib/pycri-test/registry}
STORAGE=$STATE/storage
LOGS=$STATE/logs
HOST=127.0.0.1

BASIC_USER=pycri-basic
BASIC_PASSWORD=basic-secret
TOKEN_USER=pycri-token
TOKEN_PASSWORD=token-secret
TOKEN_PORT=5003
TOKEN_REALM=http://$HOST:$TOKEN_PORT/token
TOKEN_SERVICE=pycri-test-registry
TOKEN_ISSUER=pycri-test-issuer

# name:port:expected HTTP status of GET /v2/ (or /healthz for the token server)
COMPONENTS=(plain:5000:200 basic:5001:401 token:5002:401 tokenserver:$TOKEN_PORT:200)
START_TIMEOUT=30
STOP_TIMEOUT=15

log() { printf 'registry.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# ------------------------------------------------------------------ install

ensure_tools() {
  local missing=()
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v htpasswd >/dev/null || missing+=(apache2-utils)
  command -v curl >/dev/null || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y "${missing[@]}" >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y "${missing[@]}" >/dev/null; }
    # Debian's package may start its own registry on :5000 from its init
    # script; that one is not ours and would take the port.
    if [[ " ${missing[*]} " == *" docker-registry "* ]] && [ -x /etc/init.d/docker-registry ]; then
      /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
    fi
  fi
  "$PY" -c 'import cryptography' 2>/dev/null \
    || die "$PY cannot import cryptography (set up the venv: pip install -e '.[dev]')"
}

# ------------------------------------------------------------------ config

random_hex() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

ensure_secrets() {
  mkdir -p "$STATE" "$STORAGE" "$LOGS" "$STATE/token"
  chmod 0700 "$STATE"
  # One http.secret for all three so an upload begun on one can finish on another.
  [ -s "$STATE/http-secret" ] || (umask 077 && random_hex >"$STATE/http-secret")
  if ! [ -s "$STATE/htpasswd" ] || ! htpasswd -vb "$STATE/htpasswd" "$BASIC_USER" "$BASIC_PASSWORD" >/dev/null 2>&1; then
    # distribution 2.8 accepts bcrypt entries only.
    (umask 077 && htpasswd -Bbn "$BASIC_USER" "$BASIC_PASSWORD" | sed '/^$/d' >"$STATE/htpasswd")
  fi
  local before
  before=$(cert_sum)
  "$PY" "$ROOT/hack/token_server.py" --state-dir "$STATE/token" --init >/dev/null 2>>"$LOGS/tokenserver.log"
  if [ "$before" != "$(cert_sum)" ] && pid_of tokenserver >/dev/null; then
    log "token signing key is new; restarting the token server"
    stop_one tokenserver
  fi
}

cert_sum() { sha256sum "$STATE/token/token.crt" 2>/dev/null | cut -d' ' -f1 || true; }

# auth_yaml NAME: the auth: section of a registry's config
auth_yaml() {
  case $1 in
    plain) ;;
    basic)
      cat <<EOF
auth:
  htpasswd:
    realm: pycri-test-basic
    path: $STATE/htpasswd
EOF
      ;;
    token)
      cat <<EOF
auth:
  token:
    realm: $TOKEN_REALM
    service: $TOKEN_SERVICE
    issuer: $TOKEN_ISSUER
    rootcertbundle: $STATE/token/token.crt
# token.crt sha256 $(cert_sum) (a new cert restarts this registry)
EOF
      ;;
  esac
}

# registry_yaml NAME PORT: a whole distribution config. No blob descriptor
# cache (three processes share the storage), no health checks, no upload
# purging (nothing here lives for a week, and three purgers would race).
registry_yaml() {
  cat <<EOF
# Written by hack/registry.sh; rewritten on every start.
version: 0.1
log:
  level: info
  formatter: text
  fields:
    service: pycri-test-registry-$1
storage:
  filesystem:
    rootdirectory: $STORAGE
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $HOST:$2
  secret: $(cat "$STATE/http-secret")
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: false
EOF
  auth_yaml "$1"
}

# write_config NAME PORT: write NAME.yml; succeed (0) if its content changed
write_config() {
  local file=$STATE/$1.yml new
  new=$(registry_yaml "$1" "$2")
  if [ -f "$file" ] && [ "$(cat "$file")" == "$new" ]; then
    return 1
  fi
  (umask 077 && printf '%s\n' "$new" >"$file.tmp") && mv "$file.tmp" "$file"
}

# ------------------------------------------------------------------ processes

pidfile() { echo "$STATE/$1.pid"; }

# pid_of NAME: print the pid of our running NAME, fail if it is not running.
# The pid file is trusted only if that process's command line is ours.
pid_of() {
  local file pid cmdline
  file=$(pidfile "$1")
  [ -s "$file" ] || return 1
  pid=$(cat "$file")
  [[ $pid =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  case $1 in
    tokenserver) [[ $cmdline == *"token_server.py"*"--state-dir $STATE/token"* ]] || return 1 ;;
    *) [[ $cmdline == *"docker-registry serve $STATE/$1.yml"* ]] || return 1 ;;
  esac
  echo "$pid"
}

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# launch NAME PORT: start NAME detached (own session, stdin closed), record its pid
launch() {
  local name=$1 port=$2
  port_in_use "$port" && die "port $port is taken by a process that is not ours ($name)"
  if [ "$name" == tokenserver ]; then
    setsid nohup "$PY" "$ROOT/hack/token_server.py" --state-dir "$STATE/token" \
      --listen "$HOST:$port" --service "$TOKEN_SERVICE" --issuer "$TOKEN_ISSUER" \
      --username "$TOKEN_USER" --password "$TOKEN_PASSWORD" \
      </dev/null >>"$LOGS/$name.log" 2>&1 &
  else
    setsid nohup docker-registry serve "$STATE/$name.yml" \
      </dev/null >>"$LOGS/$name.log" 2>&1 &
  fi
  echo $! >"$(pidfile "$name")"
  log "started $name on $HOST:$port (pid $!)"
}

# probe NAME PORT: print the HTTP status the component answers with
probe() {
  local path=/v2/
  [ "$1" == tokenserver ] && path=/healthz
  curl -s -o /dev/null -m 2 -w '%{http_code}' "http://$HOST:$2$path" || true
}

# wait_ready NAME PORT WANT
wait_ready() {
  local deadline=$((SECONDS + START_TIMEOUT)) code
  while :; do
    code=$(probe "$1" "$2")
    [ "$code" == "$3" ] && return 0
    if ! pid_of "$1" >/dev/null; then
      tail -n 20 "$LOGS/$1.log" >&2 || true
      die "$1 exited during start (see $LOGS/$1.log)"
    fi
    if [ $SECONDS -ge $deadline ]; then
      tail -n 20 "$LOGS/$1.log" >&2 || true
      die "$1 on port $2 answered '$code', not $3, within ${START_TIMEOUT}s"
    fi
    sleep 0.2
  done
}

# stop_one NAME: TERM, wait, then KILL; remove the pid file
stop_one() {
  local name=$1 pid deadline
  if pid=$(pid_of "$name"); then
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while [ -e "/proc/$pid" ] && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if [ -e "/proc/$pid" ]; then
      log "$name (pid $pid) ignored SIGTERM; killing"
      kill -KILL "$pid" 2>/dev/null || true
      while [ -e "/proc/$pid" ]; do sleep 0.1; done
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$(pidfile "$name")"
}

# ------------------------------------------------------------------ commands

cmd_start() {
  ensure_tools
  ensure_secrets
  local entry name port want
  for entry in "${COMPONENTS[@]}"; do
    IFS=: read -r name port want <<<"$entry"
    if [ "$name" != tokenserver ] && write_config "$name" "$port" && pid_of "$name" >/dev/null; then
      log "$name config changed; restarting it"
      stop_one "$name"
    fi
  done
  # Refuse before starting anything if a port we need is held by a stranger.
  for entry in "${COMPONENTS[@]}"; do
    IFS=: read -r name port want <<<"$entry"
    if ! pid_of "$name" >/dev/null && port_in_use "$port"; then
      die "port $port ($name) is taken by a process that is not ours"
    fi
  done
  for entry in "${COMPONENTS[@]}"; do
    IFS=: read -r name port want <<<"$entry"
    pid_of "$name" >/dev/null || launch "$name" "$port"
  done
  for entry in "${COMPONENTS[@]}"; do
    IFS=: read -r name port want <<<"$entry"
    wait_ready "$name" "$port" "$want"
  done
  log "all up: plain :5000, basic :5001, token :5002, token server :$TOKEN_PORT (state $STATE)"
}

cmd_stop() {
  local entry name
  for entry in "${COMPONENTS[@]}"; do
    stop_one "${entry%%:*}"
  done
}

cmd_status() {
  local entry name port want pid code all=0
  for entry in "${COMPONENTS[@]}"; do
    IFS=: read -r name port want <<<"$entry"
    if pid=$(pid_of "$name"); then
      code=$(probe "$name" "$port")
      if [ "$code" == "$want" ]; then
        printf '%-12s up    %s:%s pid %s\n' "$name" "$HOST" "$port" "$pid"
      else
        printf '%-12s sick  %s:%s pid %s (answers %s, want %s)\n' "$name" "$HOST" "$port" "$pid" "$code" "$want"
        all=1
      fi
    else
      printf '%-12s down  %s:%s\n' "$name" "$HOST" "$port"
      all=1
    fi
  done
  return $all
}

cmd_wipe() {
  cmd_stop
  rm -rf "$STORAGE"
  log "wiped $STORAGE"
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  wipe) cmd_wipe ;;
  *) echo "usage: $0 start|stop|status|wipe" >&2; exit 2 ;;
esac
