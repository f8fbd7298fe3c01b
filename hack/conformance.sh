#!/usr/bin/env bash
# Run Kubernetes' e2e suite (e2e.test of hack/build-e2e.sh, through its ginkgo CLI) against the
# cluster in $KUBECONFIG; without KUBECONFIG, against the local cluster on pycri, started if it
# is not running (hack/local-cluster.sh), with the suite's images pushed to the test registry
# (hack/registry.sh, hack/testimages.py --e2e) and pycri running (hack/pycri.sh).
#
#   hack/conformance.sh                         every [Conformance] spec but [Serial]/[Disruptive]
#   hack/conformance.sh --focus='\[sig-node\].*Pods should get a host IP'
#   hack/conformance.sh --skip='\[Slow\]' -- --node-os-distro=debian   (after --: e2e.test flags)
#   hack/conformance.sh --ci                    the subset hack/test.sh runs (below)
#
# --ci: the [sig-node] [Conformance] specs of hack/conformance/ci-specs.txt, chosen so that
# kubelet makes every CRI call it makes in normal operation. On the local cluster the suite's
# images are removed from pycri first (so kubelet pulls them), and afterwards pycri's log must
# show each of those calls (hack/conformance/cri_calls.py), else the run fails.
#
# Specs this host cannot pass (HOST_LIMITS below, each with its evidence) are added to every
# --skip, and listed with their reason at the end.
#
# Arguments are ginkgo CLI flags (`--ginkgo.X` is taken as `--X`, e2e.test's spelling); a
# --focus replaces the default focus \[Conformance\], a --skip the default skip
# \[Serial\]|\[Disruptive\], and --procs the default of one ginkgo process per core.
#
# Environment (all optional):
#   KUBECONFIG         the cluster (default: the local cluster's admin.kubeconfig)
#   CONFORMANCE_OUT    reports (default /var/tmp/pycri-conformance): junit.xml, ginkgo.log
#   CONFORMANCE_TIMEOUT  ginkgo's --timeout for the whole run (default 3h)
#   CONFORMANCE_KEEP_CLUSTER=1  leave the local cluster running if this run started it (by
#                      default it is stopped again: hack/local-cluster.sh stop)
#
# Output: ginkgo's own (without the specs not selected), then its counts, each spec that
# skipped itself while running with its reason, and each failed spec with its error (read from
# the JUnit report). The exit status is ginkgo's.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${CONFORMANCE_OUT:-/var/tmp/pycri-conformance}
TIMEOUT=${CONFORMANCE_TIMEOUT:-3h}
FOCUS='\[Conformance\]'
SKIP='\[Serial\]|\[Disruptive\]'
PY=$ROOT/.venv/bin/python
[ -x "$PY" ] || PY=python3

log() { printf '%s conformance: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ginkgo flags (ours, then the caller's) and e2e.test flags (after --)
ginkgo_args=() e2e_args=() user_focus= user_skip= user_procs= ci=
while [ $# -gt 0 ]; do
  case $1 in
    --) shift; e2e_args+=("$@"); break ;;
    --ci) ci=1; shift; continue ;;
    --ginkgo.*) arg=--${1#--ginkgo.} ;;
    *) arg=$1 ;;
  esac
  case $arg in
    --focus | --focus=*) user_focus=1 ;;
    --skip | --skip=*) user_skip=1 ;;
    --procs | --procs=* | -p | --nodes | --nodes=*) user_procs=1 ;;
  esac
  ginkgo_args+=("$arg")
  shift
done
# Specs that fail on this host whatever the runtime: regexp, then the reason (with evidence).
HOST_LIMITS=(
  '\[sig-node\] PrivilegedPod should enable privileged commands'
  "it runs 'ip link add dummy1 type dummy' in a privileged container, and this VM's kernel has no dummy link type: in the pod 'RTNETLINK answers: Operation not supported' (local cluster, 2026-12-06), on the host 'ip link add x type dummy' says 'Error: Unknown device type.' (no dummy module)"
)
# and on the local cluster, whose node is this machine
if [ -z "${KUBECONFIG:-}" ]; then
  HOST_LIMITS+=(
    '\[sig-node\] Container Runtime blackbox test when running a container with a new image should be able to pull from private registry with secret'
    "its registry pod (agnhost fake-registry-server, hostNetwork, port 5000) cannot listen on this machine's port 5000, where the project's test registry serves the suite's images: the pod crash-loops and the pull reaches the test registry, which has no pause:testing (local cluster, 2026-12-06); on kind, whose nodes have their own network, it passes"
  )
fi
host_skip=
for ((i = 0; i < ${#HOST_LIMITS[@]}; i += 2)); do host_skip+="${host_skip:+|}${HOST_LIMITS[i]}"; done
if [ -n "$ci" ]; then
  [ -z "$user_focus" ] || { log "--ci picks its own specs: no --focus with it"; exit 2; }
  while read -r pattern; do
    [ -z "$pattern" ] || ginkgo_args=("--focus=$pattern" "${ginkgo_args[@]}")
  done < <("$PY" "$ROOT/hack/conformance/cri_calls.py" focus "$ROOT/hack/conformance/ci-specs.txt")
  user_focus=1
fi
[ -n "$user_focus" ] || ginkgo_args=("--focus=$FOCUS" "${ginkgo_args[@]}")
[ -n "$user_skip" ] || ginkgo_args=("--skip=$SKIP" "${ginkgo_args[@]}")
# every --skip (ours or the caller's) also skips the host's limits
for i in "${!ginkgo_args[@]}"; do
  case ${ginkgo_args[i]} in --skip=*) ginkgo_args[i]="${ginkgo_args[i]}|$host_skip" ;; esac
done
[ -n "$user_procs" ] || ginkgo_args=("--procs=$(nproc)" "${ginkgo_args[@]}")

E2E=$("$ROOT/hack/build-e2e.sh")
KUBE_BIN=$("$ROOT/hack/build-kube.sh")

# Wait (up to $CONFORMANCE_DRAIN_TIMEOUT s, default 300, each) until no namespace the suite
# made (label e2e-run) is left, so their pods are gone from the node, and then until pycri holds
# no pod sandbox that kubelet made for a namespace that is gone.
drain_e2e_namespaces() {
  local deadline=$((SECONDS + ${CONFORMANCE_DRAIN_TIMEOUT:-300})) left
  log "waiting for the suite's namespaces and their pods to be gone before stopping the cluster"
  while left=$("$KUBE_BIN/kubectl" get namespaces -l e2e-run --no-headers 2>/dev/null | wc -l) &&
    [ "$left" -gt 0 ]; do
    if ((SECONDS > deadline)); then
      log "$left e2e namespace(s) still there; stopping the cluster anyway"
      return 0
    fi
    sleep 2
  done
  # then kubelet's garbage collection (once a minute) removes their sandboxes from pycri
  command -v crictl >/dev/null || return 0
  local stale live endpoint=${PYCRI_ENDPOINT:-unix:///run/pycri/pycri.sock}
  deadline=$((SECONDS + ${CONFORMANCE_DRAIN_TIMEOUT:-300}))
  while live=$("$KUBE_BIN/kubectl" get namespaces -o name 2>/dev/null) &&
    stale=$(crictl --runtime-endpoint "$endpoint" pods -o json 2>/dev/null |
      "$PY" -c 'import json, sys
live = {name.removeprefix("namespace/") for name in sys.argv[1].split()}
pods = json.load(sys.stdin)["items"]
print(sum(1 for p in pods if "io.kubernetes.pod.uid" in p.get("labels", {})
          and p["metadata"]["namespace"] not in live))' "$live") &&
    [ "$stale" -gt 0 ]; do
    if ((SECONDS > deadline)); then
      log "$stale pod sandbox(es) of deleted namespaces still in pycri; stopping the cluster anyway"
      return 0
    fi
    sleep 5
  done
}

if [ -z "${KUBECONFIG:-}" ]; then
  # the local cluster on this host's pycri, which pulls the suite's images through its mirrors
  "$ROOT/hack/registry.sh" start >/dev/null
  log "pushing the e2e images to 127.0.0.1:5000 (hack/testimages.py --e2e)"
  "$PY" "$ROOT/hack/testimages.py" --registry 127.0.0.1:5000 --e2e | tail -n 1 >&2
  "$ROOT/hack/pycri.sh" start >&2
  pycri_log=${PYCRI_LOG:-/var/log/pycri/pycri.log}
  # kubelet pulls an image only if the node lacks it (IfNotPresent), so an image pycri pulled
  # before, of an older build, would be used: pull each anew, which moves the tag to this build;
  # with --ci, remove each instead, so that kubelet pulls it (PullImage through kubelet)
  if command -v crictl >/dev/null; then
    endpoint=${PYCRI_ENDPOINT:-unix:///run/pycri/pycri.sock}
    if [ -n "$ci" ]; then
      log "removing the e2e images from pycri (crictl rmi), so that kubelet pulls them"
    else
      log "pulling the e2e images into pycri again (crictl pull), so that none is of an older build"
    fi
    for name in $("$PY" "$ROOT/hack/testimages.py" --e2e --list | awk '{for (i = 3; i <= NF; i++) print $i}'); do
      if [ -n "$ci" ]; then
        crictl --runtime-endpoint "$endpoint" --image-endpoint "$endpoint" rmi "$name" >/dev/null 2>&1 || true
      else
        crictl --runtime-endpoint "$endpoint" --image-endpoint "$endpoint" pull "$name" >/dev/null ||
          { log "crictl pull $name failed"; exit 1; }
      fi
    done
  fi
  if ! "$ROOT/hack/local-cluster.sh" status >/dev/null && [ "${CONFORMANCE_KEEP_CLUSTER:-0}" != 1 ]; then
    # started here, so stopped here (its state stays for the next start), once the suite's
    # namespaces are gone: the suite only asks for their deletion, and a kubelet stopped
    # before it has removed their pods would leave them running in pycri
    trap 'drain_e2e_namespaces; "$ROOT/hack/local-cluster.sh" stop' EXIT
  fi
  KUBECONFIG=$("$ROOT/hack/local-cluster.sh" start)
fi
export KUBECONFIG
log "cluster: $KUBECONFIG ($("$KUBE_BIN/kubectl" get nodes --no-headers 2>/dev/null | wc -l) nodes)"

mkdir -p "$OUT"
rm -f "$OUT"/junit*.xml "$OUT/ginkgo.log"
log "suite: $(sed -n 's/^built: //p' "$E2E/.build-e2e.stamp"); reports in $OUT"
log "ginkgo ${ginkgo_args[*]}"
log_offset=
[ -z "${pycri_log:-}" ] || log_offset=$(stat -c %s "$pycri_log" 2>/dev/null || echo 0)
start=$SECONDS
# --provider=skeleton: no cloud; kubectl for the kubectl specs; the report is ginkgo's own
set +o errexit
(cd "$OUT" && "$E2E/ginkgo" --timeout="$TIMEOUT" --junit-report=junit.xml --output-dir="$OUT" \
  --no-color --silence-skips "${ginkgo_args[@]}" "$E2E/e2e.test" -- \
  --kubeconfig="$KUBECONFIG" --provider=skeleton --kubectl-path="$KUBE_BIN/kubectl" \
  "${e2e_args[@]}") 2>&1 | tee "$OUT/ginkgo.log"
rc=${PIPESTATUS[0]}
set -o errexit
elapsed=$((SECONDS - start))

echo
echo "=== counts (ginkgo, $((elapsed / 60))m$((elapsed % 60))s)"
grep -E '^Ran [0-9]+ of [0-9]+ Specs|^(SUCCESS|FAIL)! .*Passed' "$OUT/ginkgo.log" || echo "(ginkgo printed no counts)"
if [ -f "$OUT/junit.xml" ]; then
  echo
  "$PY" - "$OUT/junit.xml" <<'EOF'
"""Each failed spec of a ginkgo JUnit report, with its error; each spec that skipped itself
while running (e2eskipper: a provider, feature or node count it needs), with its reason."""
import sys
import xml.etree.ElementTree as ET

failed, skipped, unselected = [], [], 0
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    for problem in case.findall("failure") + case.findall("error"):
        text = (problem.get("message") or "").strip() or (problem.text or "").strip()
        failed.append((case.get("name", "?"), problem.get("type", problem.tag), text))
    for skip in case.findall("skipped"):
        reason = (skip.get("message") or "").strip()
        if reason == "skipped":  # not selected by --focus/--skip
            unselected += 1
        else:
            skipped.append((case.get("name", "?"), reason.removeprefix("skipped - ")))
print(f"=== {len(skipped)} spec(s) skipped while running ({unselected} not selected)")
for name, reason in skipped:
    print(f"- {name}\n    {reason.splitlines()[0] if reason else '(no reason given)'}")
print(f"\n=== {len(failed)} failed spec(s)")
for name, kind, text in failed:
    lines = text.splitlines()
    print(f"\n- {name}\n  [{kind}]")
    print("\n".join("    " + line for line in lines[:25]))
    if len(lines) > 25:
        print(f"    ... ({len(lines) - 25} more lines in the JUnit report)")
EOF
  echo
  echo "JUnit report: $OUT/junit.xml; ginkgo's output: $OUT/ginkgo.log"
fi
echo
echo "=== specs skipped for this host's limits"
for ((i = 0; i < ${#HOST_LIMITS[@]}; i += 2)); do
  printf -- '- %s\n    %s\n' "${HOST_LIMITS[i]//\\/}" "${HOST_LIMITS[i + 1]}"
done
if [ -n "$log_offset" ]; then
  # which CRI calls kubelet made (local cluster only: kind nodes keep their own logs), once the
  # suite's pods are gone: kubelet removes a pod's sandbox (RemovePodSandbox) only in its
  # garbage collection, about a minute after the pod
  drain_e2e_namespaces
  echo
  calls_rc=0
  "$PY" "$ROOT/hack/conformance/cri_calls.py" check "$pycri_log" "$log_offset" ${ci:+--require} ||
    calls_rc=$?
  [ "$rc" -ne 0 ] || rc=$calls_rc
fi
exit "$rc"
