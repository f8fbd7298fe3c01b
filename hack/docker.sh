#!/usr/bin/env bash
# Docker for kind on a machine without systemd: install Debian's docker.io if dockerd is missing,
# start dockerd in the background if it is not running, wait for its socket. Idempotent.
#
#   hack/docker.sh           install if needed, start if needed; prints the socket path
#   hack/docker.sh status    exit 0 if dockerd answers, 1 if not
#   hack/docker.sh stop      stop the dockerd this script started (by its pid file)
#
# Files: pid file /run/pycri-docker/dockerd.pid, log /var/log/pycri-docker.log; docker's own
# state is Debian's default (/var/lib/docker, socket /run/docker.sock). dockerd starts its own
# containerd (under /run/docker/containerd), so nothing listens on /run/containerd.
#
# Why --iptables=false (and --ip-forward=false): this machine also runs pycri's own test suite
# (bridge pycri0, CNI plugins, hostport DNAT, iptables). With iptables enabled, dockerd inserts
# its DOCKER-USER/DOCKER-ISOLATION chains at the head of FORWARD and NAT rules on every
# `addrtype LOCAL` destination, and, when it is the one to enable ip_forward, sets the FORWARD
# policy to DROP, which cuts pod traffic through pycri0. kind needs none of it: node containers
# reach each other on the kind bridge, published ports (the API server's 127.0.0.1:<port>) go
# through docker-proxy, the userland proxy, which does not need iptables. What is lost: outbound
# NAT from the kind network (nodes do not pull from the internet here; images are built in) and
# docker's embedded DNS rules in containers on user-defined networks. The script checks the
# FORWARD policy before and after starting dockerd and fails loudly if it changed.
#
# Capabilities: where this machine's capability bounding set lacks some of the kernel's (these
# VMs drop CAP_SYS_RESOURCE), `docker run --privileged` (every kind node) fails in runc with
# "unable to apply caps"; dockerd then gets hack/docker-runc-caps.sh as its default runtime, a
# runc wrapper that leaves those capabilities out of the container's config.
#
# Environment: DOCKER_IPTABLES=true to let dockerd manage iptables anyway (then the FORWARD check
# still runs); DOCKERD_ARGS for extra dockerd arguments.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUN_DIR=/run/pycri-docker
PID_FILE=$RUN_DIR/dockerd.pid
LOG=/var/log/pycri-docker.log
SOCK=/run/docker.sock
DOCKER_IPTABLES=${DOCKER_IPTABLES:-false}
# Debian's client first: the daemon is Debian's too (API 1.41); a newer client on PATH also works
DOCKER=/usr/bin/docker

log() { printf '%s docker.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

answers() { [ -S "$SOCK" ] && timeout 10 "$DOCKER" -H "unix://$SOCK" version >/dev/null 2>&1; }

our_pid() {
  local pid
  [ -f "$PID_FILE" ] || return 1
  pid=$(cat "$PID_FILE")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm")" = dockerd ] && echo "$pid"
}

# 0 if this process's bounding set lacks a capability the kernel has
caps_missing() {
  local bnd last
  bnd=$((16#$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)))
  last=$(cat /proc/sys/kernel/cap_last_cap)
  [ $((bnd & ((1 << (last + 1)) - 1))) -ne $(((1 << (last + 1)) - 1)) ]
}

forward_policy() { iptables -S FORWARD | sed -n 's/^-P FORWARD //p'; }

install() {
  if [ -x /usr/sbin/dockerd ] && [ -x "$DOCKER" ]; then return; fi
  log "installing Debian's docker.io"
  # no service may start during the install: no systemd here, and invoke-rc.d would run
  # /etc/init.d/docker; a policy-rc.d answering 101 ("action forbidden") prevents it. One that
  # is already there is left as it is.
  local policy=/usr/sbin/policy-rc.d made=
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy && made=1
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >&2 || {
    apt-get update -q >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >&2
  } || rc=$?
  [ -z "$made" ] || rm -f $policy
  return $rc
}

start() {
  install
  if answers; then
    log "dockerd already answers on $SOCK"
    echo "$SOCK"
    return
  fi
  if pid=$(our_pid); then
    log "dockerd (pid $pid) runs but does not answer yet; waiting"
  else
    local before
    before=$(forward_policy)
    mkdir -p "$RUN_DIR"
    local args=(--host "unix://$SOCK" --pidfile "$RUN_DIR/dockerd.self.pid")
    if [ "$DOCKER_IPTABLES" = false ]; then
      args+=(--iptables=false --ip6tables=false --ip-forward=false --ip-masq=false)
    fi
    if caps_missing; then
      command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q jq >&2
      args+=(--add-runtime "pycri-runc=$HERE/docker-runc-caps.sh" --default-runtime pycri-runc)
    fi
    # shellcheck disable=SC2206
    args+=(${DOCKERD_ARGS:-})
    log "starting dockerd ${args[*]} (log: $LOG)"
    # setsid: its own session, so it outlives this script and a terminal's hangup
    setsid /usr/sbin/dockerd "${args[@]}" </dev/null >>"$LOG" 2>&1 &
    pid=$!
    echo $pid >"$PID_FILE"
    START_FORWARD=$before
  fi
  local deadline=$((SECONDS + 60))
  until answers; do
    # (not our_pid: until setsid has exec'd dockerd, the process is not yet named dockerd)
    if ! kill -0 "$pid" 2>/dev/null; then
      log "dockerd exited; its log:"; tail -20 "$LOG" >&2; exit 1
    fi
    [ $SECONDS -lt $deadline ] || { log "dockerd did not answer in 60s; log: $LOG"; exit 1; }
    sleep 0.5
  done
  if [ -n "${START_FORWARD:-}" ]; then
    local after
    after=$(forward_policy)
    log "iptables FORWARD policy: before $START_FORWARD, after $after"
    if [ "$after" != "$START_FORWARD" ]; then
      log "dockerd changed the FORWARD policy; pycri's tests need it $START_FORWARD: stopping dockerd"
      stop
      iptables -P FORWARD "$START_FORWARD"
      exit 1
    fi
  fi
  log "dockerd $("$DOCKER" -H "unix://$SOCK" version -f '{{.Server.Version}}') answers on $SOCK"
  echo "$SOCK"
}

stop() {
  local pid
  if ! pid=$(our_pid); then
    if answers; then log "dockerd answers on $SOCK but was not started by this script: left alone"; exit 1; fi
    log "dockerd is not running"
    rm -f "$PID_FILE"
    return
  fi
  log "stopping dockerd (pid $pid)"
  kill -TERM "$pid"
  local deadline=$((SECONDS + 60))
  while [ -d "/proc/$pid" ]; do
    [ $SECONDS -lt $deadline ] || { log "dockerd (pid $pid) still runs after 60s"; exit 1; }
    sleep 0.5
  done
  rm -f "$PID_FILE"
  log "dockerd stopped"
}

case ${1:-start} in
  start) start ;;
  stop) stop ;;
  status) answers ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
