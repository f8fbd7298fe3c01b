#!/usr/bin/env bash
# Build kind (sigs.k8s.io/kind) from source through the Go module proxy. Nothing is written to
# the repository.
#
#   BIN=$(hack/build-kind.sh)          build if missing, print the binary's path on stdout
#   FORCE=1 hack/build-kind.sh         rebuild
#
# Environment (all optional):
#   KIND_VERSION      sigs.k8s.io/kind release (default v0.33.0)
#   PYCRI_KIND_CACHE  where the binary and the build log go (default /var/cache/pycri/kind);
#                     the binary is $PYCRI_KIND_CACHE/<version>/kind
#
# The build runs at `nice -n 10`: these machines have 2 cores shared with other work.
# kind is CGO_ENABLED=0 upstream too (its Makefile builds a static binary).
set -euo pipefail

KIND_VERSION=${KIND_VERSION:-v0.33.0}
CACHE=${PYCRI_KIND_CACHE:-/var/cache/pycri/kind}
FORCE=${FORCE:-0}
BIN_DIR=$CACHE/$KIND_VERSION
BIN=$BIN_DIR/kind

export PATH=$PATH:/usr/local/go/bin
export CGO_ENABLED=0

log() { printf '%s build-kind: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# a binary that answers `version` with the requested version is done
if [ "$FORCE" != 1 ] && [ -x "$BIN" ] && "$BIN" version 2>/dev/null | grep -q "^kind $KIND_VERSION "; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$BIN_DIR"
log "go install sigs.k8s.io/kind@$KIND_VERSION (GOPROXY=$(go env GOPROXY); log: $CACHE/kind-$KIND_VERSION.log)"
start=$SECONDS
# go install into a temporary GOBIN, then rename: a running kind is never half-written
tmp=$(mktemp -d "$BIN_DIR/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if ! GOBIN=$tmp nice -n 10 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kind@$KIND_VERSION" \
  >"$CACHE/kind-$KIND_VERSION.log" 2>&1; then
  tail -30 "$CACHE/kind-$KIND_VERSION.log" >&2
  exit 1
fi
mv -f "$tmp/kind" "$BIN"
log "built in $((SECONDS - start))s: $("$BIN" version)"
echo "$BIN"
