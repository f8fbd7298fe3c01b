#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: sets everything up (hack/setup.sh,
# idempotent), runs critest (the CRI conformance suite) against the pycri that setup
# started, then the unit, integration and end-to-end tests.
#   hack/test.sh [pytest args...]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
hack/setup.sh

# Conformance specs pycri cannot pass yet, each with its reason; the list shrinks as they land.
known=(
  # the image is pinned by a digest of bytes that cannot be rebuilt here
  "public image with digest should be pulled and removed"
  # the streaming server (exec/attach/port-forward URLs) is not wired in yet
  "Streaming runtime should support streaming interfaces"
)
CRITEST_SKIP=$(IFS='|'; echo "${known[*]}") hack/critest.sh

printf '\n== tests\n'
exec .venv/bin/python -m pytest tests -v -p no:cacheprovider --durations=15 "$@"
