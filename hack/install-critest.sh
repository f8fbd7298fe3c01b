#!/usr/bin/env bash
# Build critest (the CRI validation suite of sigs.k8s.io/cri-tools) from source through the
# Go module proxy, and the ginkgo CLI that `critest --parallel N` runs.
#
#   hack/install-critest.sh           build what is missing or of another version
#   FORCE=1 hack/install-critest.sh   rebuild both
#
# critest is a Go test binary (`go test -c` of cmd/critest), so `go install pkg@version` cannot
# build it: a scratch module in $BUILD_DIR requires sigs.k8s.io/cri-tools at the wanted version
# (cri-tools' go.mod has no replace directives, so nothing else is needed: the scratch module's
# build list is cri-tools' own). The version is linked in, so `critest --version` reports it.
# ginkgo is installed at the version cri-tools' go.mod requires (CLI and library must agree).
# Nothing is written to the repository.
set -euo pipefail
CRI_TOOLS_VERSION=${CRI_TOOLS_VERSION:-v1.37.0}
BIN_DIR=${BIN_DIR:-/usr/local/bin}
BUILD_DIR=${BUILD_DIR:-/var/cache/pycri/critest-build}
FORCE=${FORCE:-0}
export PATH=$PATH:/usr/local/go/bin
export GOFLAGS=${GOFLAGS:--buildvcs=false}
# A newer cri-tools may want a newer Go than /usr/local/go; let the go command fetch it.
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}

log() { printf 'install-critest: %s\n' "$*" >&2; }

critest_ok() {
  # the output in a variable: `critest --version | grep -q` can die of SIGPIPE under pipefail
  local out
  [ -x "$BIN_DIR/critest" ] && out=$("$BIN_DIR/critest" --version 2>/dev/null) &&
    grep -qx "critest version: $CRI_TOOLS_VERSION" <<<"$out"
}

# The scratch module: go.mod requiring cri-tools, go.sum with everything its test binary needs.
prepare_module() {
  mkdir -p "$BUILD_DIR"
  cd "$BUILD_DIR"
  if ! [ -f go.mod ] || ! grep -Eq "sigs.k8s.io/cri-tools $CRI_TOOLS_VERSION( |\$)" go.mod; then
    rm -f go.mod go.sum
    go mod init pycri.local/critest-build >/dev/null 2>&1
    # -t: the test dependencies of cmd/critest (ginkgo, gomega, the validate package's imports)
    go get -t "sigs.k8s.io/cri-tools/cmd/critest@$CRI_TOOLS_VERSION"
  fi
}

ginkgo_version() {
  go list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2
}

start=$SECONDS
built=0
if [ "$FORCE" = 1 ] || ! critest_ok; then
  prepare_module
  log "building critest $CRI_TOOLS_VERSION in $BUILD_DIR"
  go test -c -o "$BIN_DIR/critest.new" \
    -ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRI_TOOLS_VERSION" \
    sigs.k8s.io/cri-tools/cmd/critest
  mv -f "$BIN_DIR/critest.new" "$BIN_DIR/critest"
  echo "$CRI_TOOLS_VERSION" >"$BUILD_DIR/critest.version"
  critest_ok || { log "$BIN_DIR/critest does not report $CRI_TOOLS_VERSION"; exit 1; }
  built=1
fi

prepare_module
GINKGO_VERSION=$(ginkgo_version)
if [ "$FORCE" = 1 ] || ! [ -x "$BIN_DIR/ginkgo" ] ||
  ! "$BIN_DIR/ginkgo" version 2>/dev/null | grep -qx "Ginkgo Version ${GINKGO_VERSION#v}"; then
  log "installing ginkgo $GINKGO_VERSION"
  GOBIN="$BIN_DIR" go install "github.com/onsi/ginkgo/v2/ginkgo@$GINKGO_VERSION"
  built=1
fi

"$BIN_DIR/critest" --version | sed -n 1p  # sed reads it all: no SIGPIPE under pipefail
"$BIN_DIR/ginkgo" version
[ "$built" = 1 ] && log "built in $((SECONDS - start))s" || true
