#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: sets everything up (hack/setup.sh,
# idempotent), runs critest (the CRI conformance suite) against the pycri that setup
# started, builds Kubernetes (hack/build-kube.sh, cached), then runs the unit, integration and
# end-to-end tests (kubelet and a local cluster on pycri among them).
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

printf '\n== tests\n'
exec .venv/bin/python -m pytest tests -v -p no:cacheprovider --durations=15 "$@"
