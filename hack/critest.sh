#!/usr/bin/env bash
# Run critest, the CRI validation suite of cri-tools, against pycri, in one command:
#   builds critest and ginkgo (hack/install-critest.sh), starts the test registries and pushes
#   the test images (hack/registry.sh start, hack/testimages.py: pycri's mirrors serve every
#   image critest pulls from 127.0.0.1:5000), starts pycri unless it is running
#   (hack/pycri.sh start), pulls the critest images into pycri again (so none is stale), runs
#   the Linux conformance suite in parallel, removes the shared memory critest leaves on the
#   host, prints ginkgo's summary and each failed spec with its error
#   (hack/critest/failures.py), and exits with critest's status.
#
#   hack/critest.sh [critest flags...]      e.g. --ginkgo.focus='Image Manager'
#
# Environment:
#   CRITEST_ENDPOINT    CRI endpoint (default unix:///run/pycri/pycri.sock)
#   CRITEST_PARALLEL    ginkgo processes (default: the number of CPUs, at least 2; 1 runs the
#                       specs in critest's own process, which -benchmark needs)
#   CRITEST_SKIP        extra --ginkgo.skip regexp (ORed with critest's own "benchmark")
#   CRITEST_REPORT_DIR  where the log, JUnit XML and JSON reports go
#                       (default /var/lib/pycri-test/critest/<UTC time>; "latest" links to it)
#
# Not skipped by default: nothing.  AppArmor specs skip themselves where the kernel has no
# AppArmor, SELinux specs are not even registered without SELinux, NRI specs skip without
# -nri-socket, and recursive read-only mounts, user namespaces and SupplementalGroupsPolicy
# skip unless pycri's Status advertises them.  critest's -report-dir flag is accepted but
# unused in v1.37.0, so the reports come from ginkgo's own --ginkgo.junit-report/json-report.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
[ "$(id -u)" = 0 ] || { echo "hack/critest.sh must run as root" >&2; exit 1; }
export PATH=/usr/local/bin:$PATH:/usr/local/go/bin

ENDPOINT=${CRITEST_ENDPOINT:-unix:///run/pycri/pycri.sock}
PARALLEL=${CRITEST_PARALLEL:-$(nproc)}
[ "$PARALLEL" -ge 1 ] 2>/dev/null || PARALLEL=2
STATE=/var/lib/pycri-test/critest
REPORT_DIR=${CRITEST_REPORT_DIR:-$STATE/$(date -u +%Y%m%dT%H%M%SZ)}

step() { printf '\n== %s\n' "$*"; }
warn() { printf 'critest.sh: %s\n' "$*" >&2; }

step "critest and ginkgo"
hack/install-critest.sh

step "test registries and images"
hack/registry.sh start
.venv/bin/python hack/testimages.py --registry 127.0.0.1:5000 | tail -n 1

step "pycri"
hack/pycri.sh start

step "test images in pycri"
# critest pulls an image only when ImageStatus finds none, so an image pycri pulled before
# testimages.py changed it would be used as it was: pull every critest image again (the
# names move to what the registry serves now; unchanged images cost a manifest request).
mapfile -t names < <(.venv/bin/python hack/testimages.py --list | awk '$1 ~ /^critest-/ { for (i = 3; i <= NF; i++) print $i }')
for name in "${names[@]}"; do
  crictl --runtime-endpoint "$ENDPOINT" --image-endpoint "$ENDPOINT" pull "$name" >/dev/null \
    || warn "pulling $name failed"
done
echo "${#names[@]} images pulled"

step "checks"
# critest reads /etc/crictl.yaml before its flags; the flags below win, but a crictl.yaml that
# names another runtime is worth knowing about.
if ! [ -f /etc/crictl.yaml ]; then
  warn "/etc/crictl.yaml is missing (hack/setup.sh writes it); the endpoint flags are used"
elif ! grep -Eq "^runtime-endpoint: *\"?$ENDPOINT\"?\$" /etc/crictl.yaml; then
  warn "/etc/crictl.yaml does not name $ENDPOINT as runtime-endpoint; the endpoint flags win"
fi
# host ports the Networking and Streaming specs bind (hostPort 12000, port-forward 12001 and
# 12002, the host-network web server 12003)
for port in 12000 12001 12002 12003; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    warn "port $port is in use; the port mapping / port-forward specs will fail"
  fi
done
mkdir -p "$REPORT_DIR"
[ -n "${CRITEST_REPORT_DIR:-}" ] || ln -sfn "$REPORT_DIR" "$STATE/latest"
echo "endpoint $ENDPOINT, $PARALLEL parallel processes, reports in $REPORT_DIR"

step "critest"
args=(
  --runtime-endpoint="$ENDPOINT"
  --image-endpoint="$ENDPOINT"
  --ginkgo.no-color
  --ginkgo.junit-report="$REPORT_DIR/junit.xml"
  --ginkgo.json-report="$REPORT_DIR/report.json"
)
# with --parallel critest re-runs itself under the ginkgo CLI, which drops -benchmark's focus
[ "$PARALLEL" = 1 ] || args+=(--parallel="$PARALLEL")
[ -z "${CRITEST_SKIP:-}" ] || args+=(--ginkgo.skip="$CRITEST_SKIP")
# critest's HostIpc specs make a 1 MiB System V shared memory segment on the host with ipcmk
# and never remove it: note the segments there are now, remove the new ones afterwards.
shm_before=" $(awk 'NR > 1 { printf "%s ", $2 }' /proc/sysvipc/shm) "
start=$SECONDS
set +e
# from the report directory: critest also looks for a crictl.yaml in the parent directory
(cd "$REPORT_DIR" && critest "${args[@]}" "$@") 2>&1 | tee "$REPORT_DIR/critest.log"
status=${PIPESTATUS[0]}
set -e
for id in $(awk 'NR > 1 && $4 == 1048576 && $7 == 0 { print $2 }' /proc/sysvipc/shm); do
  [[ $shm_before == *" $id "* ]] || ipcrm -m "$id" || true
done

step "summary ($((SECONDS - start))s, log $REPORT_DIR/critest.log)"
grep -E '^Ran [0-9]+ of [0-9]+ Specs' "$REPORT_DIR/critest.log" | tail -n 1 || true
grep -E '^(SUCCESS|FAIL)! -- ' "$REPORT_DIR/critest.log" | tail -n 1 \
  || warn "no ginkgo summary line in the log"
# the failed specs, one a line with critest's error, from ginkgo's JSON report
if [ -s "$REPORT_DIR/report.json" ]; then
  python3 hack/critest/failures.py "$REPORT_DIR/report.json" | tee "$REPORT_DIR/failures.txt"
  python3 hack/critest/failures.py --skips "$REPORT_DIR/report.json"
fi
exit "$status"
