#!/usr/bin/env bash
# pycri measured side by side with containerd v2.4.2 + runc v1.5.3 on this machine, in one
# command, printing one table of medians and ratios (operation | pycri | containerd | ratio).
#
#   hack/bench-vs-containerd.sh [--rounds 3] [--samples 10] [--pods 20] [--list-containers 500]
#                               [--steady-pods 110] [--steady-seconds 60]
#                               [--skip critest|crictl|memory|list|steady]... [--out FILE.md] [--keep]
#   hack/bench-vs-containerd.sh --help        every option
#   hack/bench-vs-containerd.sh cleanup       take down what an interrupted run left behind
#   hack/bench-vs-containerd.sh table FILE    print the table of an earlier results.json again
#
# 1. Builds containerd, containerd-shim-runc-v2 and runc through the Go module proxy into
#    /var/cache/pycri/bench/bin (hack/bench/build-containerd.sh; a second run returns at once).
# 2. Starts the test registry and pushes the test images (hack/registry.sh, hack/testimages.py):
#    both runtimes pull docker.io/registry.k8s.io/... names from 127.0.0.1:5000 (pycri through
#    hack/pycri.toml's mirrors, containerd through hosts.toml files).
# 3. Runs python -m hack.bench (hack/bench/): a pycri daemon and a containerd daemon, each with
#    its own root (/var/lib/pycri-bench/*), state and socket (/run/pycri-bench/*) and bridge
#    network (pycri 10.89.0.0/16, containerd 10.90.0.0/16; the default pycri, /run/pycri, is not
#    touched), then in each round, each step for one runtime then the other (the first
#    alternates by round): critest -benchmark, runp+create+start through crictl, memory per pod
#    (PSS of the runtime's own processes) at 20 pods with a PID namespace per container and with
#    a pod-wide one, ListContainers/ListPodSandbox latency at 500 containers, the runtime's CPU
#    at 110 pods polled as kubelet polls (no kubelet runs). Then removes every pod, stops both
#    daemons and checks that no process, mount, cgroup or IP lease is left.
#
# The table goes to stdout and, as markdown with the run's notes, to --out (default
# /var/tmp/pycri-bench/table.md); the raw samples to results.json next to it. Exit status 1 if
# a step failed or something was left behind (the table is still written). Timings on a shared
# machine vary by +-15% from run to run: compare the ratios of one run, not figures across runs.
# A full run (3 rounds, defaults) takes about 30-40 minutes on 2 cores.
#
# Environment (optional): CONTAINERD_VERSION, RUNC_VERSION, PYCRI_BENCH_CACHE (see
# hack/bench/build-containerd.sh); PYCRI_BENCH_ROOT, PYCRI_BENCH_STATE (default
# /var/lib/pycri-bench, /run/pycri-bench).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=$ROOT/.venv/bin/python
export PATH=/usr/local/bin:$PATH:/usr/local/go/bin

case "${1:-}" in
  -h | --help | table) exec "$PY" -m hack.bench "$@" ;;
esac
[ "$(id -u)" = 0 ] || { echo "hack/bench-vs-containerd.sh must run as root" >&2; exit 1; }
[ "${1:-}" = cleanup ] && exec "$PY" -m hack.bench "$@"

step() { printf '\n== %s\n' "$*" >&2; }

step "containerd, containerd-shim-runc-v2, runc (build cache)"
BIN=$(hack/bench/build-containerd.sh)

step "critest, crictl"
command -v critest >/dev/null || hack/install-critest.sh
command -v crictl >/dev/null || hack/install-crictl.sh

step "test registry and images"
hack/registry.sh start
"$PY" hack/testimages.py --registry 127.0.0.1:5000 | tail -n 1
# containerd's sandbox image (registry.k8s.io/pause:3.10.2) is one of the e2e images: a fresh
# clone's registry has it only once hack/conformance.sh has run
"$PY" hack/testimages.py --registry 127.0.0.1:5000 --only e2e-pause | tail -n 1

step "measuring (logs: /var/lib/pycri-bench/{pycri,containerd}.log)"
exec "$PY" -m hack.bench run --containerd-bin "$BIN" "$@"
