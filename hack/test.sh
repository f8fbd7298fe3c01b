#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: sets everything up (hack/setup.sh,
# idempotent), runs critest (the CRI conformance suite) against the pycri that setup
# started, builds Kubernetes (hack/build-kube.sh, cached), runs a [sig-node] [Conformance]
# subset of Kubernetes' e2e suite on the local cluster (hack/conformance.sh --ci: every CRI call
# kubelet makes; e2e.test is built by hack/build-e2e.sh, cached), then runs the unit,
# integration and end-to-end tests (kubelet and a local cluster on pycri among them).
#   hack/test.sh [pytest args...]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
hack/setup.sh

# Conformance specs pycri cannot pass, each with its reason.
known=(
  # the image is pinned by a digest of bytes that cannot be rebuilt here
  "public image with digest should be pulled and removed"
)
CRITEST_SKIP=$(IFS='|'; echo "${known[*]}") hack/critest.sh
# the streaming specs once more, over WebSocket (the run above used SPDY, critest's default)
hack/critest.sh --ginkgo.focus='Streaming' --websocket-exec --websocket-attach --websocket-portforward

# kubelet and the control plane for the Kubernetes end-to-end tests (cached after the first build)
printf '\n== kubernetes binaries\n'
hack/build-kube.sh

printf '\n== kubernetes e2e: the [sig-node] [Conformance] subset of hack/conformance/ci-specs.txt\n'
conformance_rc=0
CONFORMANCE_OUT=/var/tmp/pycri-conformance/ci hack/conformance.sh --ci || conformance_rc=$?

printf '\n== tests\n'
tests_rc=0
.venv/bin/python -m pytest tests -v -p no:cacheprovider --durations=15 "$@" || tests_rc=$?
if [ "$conformance_rc" -ne 0 ]; then
  echo "hack/conformance.sh --ci failed (exit $conformance_rc): see its output above" >&2
fi
exit $((tests_rc != 0 ? tests_rc : conformance_rc))
