#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: sets everything up (hack/setup.sh,
# idempotent), then runs the unit, integration and end-to-end tests.
#   hack/test.sh [pytest args...]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
hack/setup.sh
printf '\n== tests\n'
exec .venv/bin/python -m pytest tests -v -p no:cacheprovider --durations=15 "$@"
