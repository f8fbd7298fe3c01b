#!/usr/bin/env bash
# Build containerd, containerd-shim-runc-v2 and runc from source through the Go module proxy,
# into a cache that a second run returns from at once. Used by hack/bench-vs-containerd.sh.
#
#   hack/bench/build-containerd.sh          prints the bin directory on stdout
#   FORCE=1 hack/bench/build-containerd.sh  rebuild
#
# Environment (optional):
#   CONTAINERD_VERSION  default v2.4.2   (github.com/containerd/containerd/v2)
#   RUNC_VERSION        default v1.5.3   (github.com/opencontainers/runc)
#   PYCRI_BENCH_CACHE   default /var/cache/pycri/bench (bin/ and build logs)
#
# containerd and its shim are static (CGO_ENABLED=0, tags no_btrfs no_devmapper no_zfs), as
# containerd's own release builds of the shim; runc is built with cgo and tag seccomp against
# Debian's libseccomp-dev (installed with apt-get if missing), as runc's releases are.
set -euo pipefail

CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
RUNC_VERSION=${RUNC_VERSION:-v1.5.3}
CACHE=${PYCRI_BENCH_CACHE:-/var/cache/pycri/bench}
BIN=$CACHE/bin
STAMP=$BIN/.stamp
FORCE=${FORCE:-0}

log() { printf '%s build-containerd: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

export PATH=$PATH:/usr/local/go/bin
# GOPROXY and GOTOOLCHAIN as the environment has them (hack/lib/kube-module.sh does the same);
# `go install pkg@version` builds in module mode from the proxy's zip, outside any main module.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-trimpath"
request="containerd=$CONTAINERD_VERSION runc=$RUNC_VERSION $(go env GOOS)/$(go env GOARCH)"

if [ "$FORCE" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$request" ] &&
  [ -x "$BIN/containerd" ] && [ -x "$BIN/containerd-shim-runc-v2" ] && [ -x "$BIN/runc" ]; then
  log "up to date ($request) in $BIN"
  echo "$BIN"
  exit 0
fi

mkdir -p "$BIN" "$CACHE/logs"
rm -f "$STAMP"
log "GOPROXY=$(go env GOPROXY) $(go version | cut -d' ' -f3); building $request into $BIN (logs in $CACHE/logs)"

# containerd's version variables, as its Makefile sets them
ld_containerd="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
ld_containerd+=" -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2"
for cmd in containerd containerd-shim-runc-v2; do
  start=$SECONDS
  log "go install github.com/containerd/containerd/v2/cmd/$cmd@$CONTAINERD_VERSION"
  if ! GOBIN=$BIN CGO_ENABLED=0 go install -tags 'no_btrfs no_devmapper no_zfs' -ldflags "$ld_containerd" \
    "github.com/containerd/containerd/v2/cmd/$cmd@$CONTAINERD_VERSION" >"$CACHE/logs/$cmd.log" 2>&1; then
    tail -20 "$CACHE/logs/$cmd.log" >&2
    log "$cmd failed"
    exit 1
  fi
  log "$cmd built in $((SECONDS - start))s"
done

if ! pkg-config --exists libseccomp 2>/dev/null; then
  log "libseccomp-dev missing: apt-get install libseccomp-dev"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q libseccomp-dev >"$CACHE/logs/apt.log" 2>&1 ||
    { tail -5 "$CACHE/logs/apt.log" >&2; exit 1; }
fi
start=$SECONDS
log "go install github.com/opencontainers/runc@$RUNC_VERSION (cgo, seccomp)"
if ! GOBIN=$BIN CGO_ENABLED=1 go install -tags seccomp \
  -ldflags "-s -w -X main.version=${RUNC_VERSION#v}" \
  "github.com/opencontainers/runc@$RUNC_VERSION" >"$CACHE/logs/runc.log" 2>&1; then
  tail -20 "$CACHE/logs/runc.log" >&2
  log "runc failed"
  exit 1
fi
log "runc built in $((SECONDS - start))s"

"$BIN/containerd" --version >&2
"$BIN/runc" --version >&2
echo "$request" >"$STAMP"
echo "$BIN"
