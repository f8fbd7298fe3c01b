#!/usr/bin/env bash
# Kubelet at 110 pods on the local cluster, pycri against containerd v2.4.2 + runc v1.5.3, in
# one command, printing one table (measure | pycri | containerd | ratio).
#
#   hack/bench-kubelet.sh [--runtime both|pycri|containerd] [--rounds 1] [--pods 110]
#                         [--seconds 120 | --minutes 60] [--sample-every 10]
#                         [--evented off|on|both] [--kubelet-arg=--FLAG=VALUE]... [--instance 0]
#   hack/bench-kubelet.sh --minutes 60 --runtime pycri     an hour of steady state (memory flat?)
#   hack/bench-kubelet.sh evented [--runtime pycri]        kubelet's EventedPLEG gate at work
#   hack/bench-kubelet.sh cleanup [--instance 0]           what an interrupted run left behind
#   hack/bench-kubelet.sh table FILE                       an earlier results.json's table again
#   hack/bench-kubelet.sh run --help                       every option
#
# For each runtime in turn (and each --evented setting; the first runtime alternates by round):
# a daemon of its own (/var/lib/pycri-bench-kubelet/iN, /run/pycri-bench-kubelet/iN; bridge
# network 10.83.N.0/24 for pycri, 10.84.N.0/24 for containerd), the local cluster
# (hack/local-cluster.sh with CLUSTER_DIR under that root, PORT_OFFSET 1000 (N+1), CGROUP_ROOT
# /pycri-bench-kubelet-N, kubelet on the daemon's socket, cgroupfs), 110 busybox `sleep` pods
# created through the API (kubelet's default max-pods; the cluster runs no other pod), and once
# all are Running, a steady window: CPU (from /proc) of the runtime's daemon, of its monitors
# (conmons; shims + pause) and of kubelet, as % of one core, and the runtime's PSS sampled
# every --sample-every seconds (start, end, max, slope). Then the pods are deleted, the
# cluster and the daemon taken down, and nothing may be left (pods, mounts, cgroups, netns,
# IP leases). Neither the default pycri (/run/pycri) nor the default local cluster (its ports,
# /var/lib/pycri-cluster) is touched. One phase takes about 6-10 minutes on 2 cores.
#
# The table goes to stdout and, as markdown with the run's notes, to --out (default
# /var/tmp/pycri-bench-kubelet/table.md); samples to results.json and memory.json next to it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=$ROOT/.venv/bin/python
export PATH=/usr/local/bin:$PATH:/usr/local/go/bin

case "${1:-}" in
  -h | --help | table) exec "$PY" -m hack.bench.kubelet "$@" ;;
esac
[ "$(id -u)" = 0 ] || { echo "hack/bench-kubelet.sh must run as root" >&2; exit 1; }
[ "${1:-}" = cleanup ] && exec "$PY" -m hack.bench.kubelet "$@"

step() { printf '\n== %s\n' "$*" >&2; }

step "containerd, containerd-shim-runc-v2, runc (build cache)"
BIN=$(hack/bench/build-containerd.sh)
step "kubelet and the control plane (build cache)"
KUBE_BIN=$(nice -n 10 hack/build-kube.sh)
export PYCRI_KUBE_BIN=$KUBE_BIN
command -v crictl >/dev/null || hack/install-crictl.sh

step "test registry and images"
hack/registry.sh start
"$PY" hack/testimages.py --registry 127.0.0.1:5000 | tail -n 1
# containerd's sandbox image (registry.k8s.io/pause:3.10.2) is one of the e2e images: a fresh
# clone's registry has it only once hack/conformance.sh has run
"$PY" hack/testimages.py --registry 127.0.0.1:5000 --only e2e-pause | tail -n 1

step "measuring"
if [ "${1:-}" = evented ]; then
  shift
  exec "$PY" -m hack.bench.kubelet evented --containerd-bin "$BIN" "$@"
fi
[ "${1:-}" = run ] && shift
exec "$PY" -m hack.bench.kubelet run --containerd-bin "$BIN" "$@"
