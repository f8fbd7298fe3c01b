#!/usr/bin/env bash
# Build Kubernetes' end-to-end suite for hack/conformance.sh, from source through the Go module
# proxy: e2e.test (`go test -c k8s.io/kubernetes/test/e2e`), the ginkgo CLI at the version
# kubernetes' go.mod pins, and agnhost (k8s.io/kubernetes/test/images/agnhost, the e2e test
# images' Swiss army knife, statically linked), and copies to images/ the files of
# test/images that hack/testimages.py --e2e puts in the suite's images; and copies there the
# static upstream busybox of hack/images/busybox.sh, the e2e images' base, and the binaries of
# two more images (built and cached by their scripts): images/sample-apiserver/ of
# hack/images/sample-apiserver.sh (sample-apiserver:1.29.2) and images/etcd/ of
# hack/images/etcd.sh (etcd, etcdctl, etcdutl of registry.k8s.io/etcd:3.7.0-0), which the
# aggregated API server specs run in one pod.
# Nothing is written to the repository.
#
#   hack/build-e2e.sh             build what is missing or of another version
#   FORCE=1 hack/build-e2e.sh     rebuild
#
# Environment (all optional):
#   KUBE_E2E_VERSION  k8s.io/kubernetes release (default v1.37.2, the cluster's: hack/build-kube.sh)
#   PYCRI_KUBE_CACHE  scratch modules and logs (default /var/cache/pycri/kube)
#   PYCRI_E2E_BIN     where the binaries go (default /usr/local/lib/pycri/kube/e2e)
#
# Progress goes to stderr (go's own output to $PYCRI_KUBE_CACHE/e2e-vX.log); stdout is only
# the binaries' directory: E2E=$(hack/build-e2e.sh). Cold (the module cache and build cache of
# hack/build-kube.sh warm): ~11 min on 2 cores (e2e.test 7, agnhost 4.5), +~1 GB build cache;
# with the build cache warm ~11 s; a second run returns at once (stamp). busybox cold: ~2-4 min;
# sample-apiserver cold ~3 min, etcd's three 1.5 min (once; then cached by their scripts).
#
# How: the scratch module of hack/lib/kube-module.sh (the one build-kube.sh uses: it requires
# k8s.io/kubernetes vX and replaces the staging modules by their published twins), in a
# directory of its own ($PYCRI_KUBE_CACHE/src/e2e-vX) so that a build-kube.sh running at the
# same time does not rewrite its go.mod under it; the module and build caches are shared.
# Flags as upstream's hack/lib/golang.sh for non-debug builds (those of build-kube.sh, so the
# packages both link are built once): -trimpath, tags selinux,notest,grpcnotrace, -s -w and
# the version variables; CGO_ENABLED=0. ginkgo is built in the same module, as upstream's
# `make ginkgo` does, and must come out at kubernetes' pinned version (checked). agnhost gets
# -X main.Version=<test/images/agnhost/VERSION>, as its Makefile sets.
set -euo pipefail

VERSION=${KUBE_E2E_VERSION:-v1.37.2}
CACHE=${PYCRI_KUBE_CACHE:-/var/cache/pycri/kube}
BIN_DIR=${PYCRI_E2E_BIN:-/usr/local/lib/pycri/kube/e2e}
FORCE=${FORCE:-0}
BINS=(e2e.test ginkgo agnhost)
# files of test/images that hack/testimages.py --e2e puts in its images, copied to images/:
# agnhost's TLS pair (`netexec --https` serves it), kitten's and nautilus' web pages
IMAGE_FILES=(agnhost/porter/localhost.crt agnhost/porter/localhost.key kitten/html/kitten.jpg
  kitten/html/data.json nautilus/html/nautilus.jpg nautilus/html/data.json)
STAMP=$BIN_DIR/.build-e2e.stamp
TAGS=selinux,notest,grpcnotrace

log() { printf '%s build-e2e: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# the Go environment, mod_dir, kube_module (the scratch module), kube_ldflags
. "$(dirname "${BASH_SOURCE[0]}")/lib/kube-module.sh"

# the busybox of the e2e images (hack/images/busybox.sh, upstream's from Debian trixie's source
# package; cached there, so this returns at once once built), beside agnhost
busybox=$("$(dirname "${BASH_SOURCE[0]}")/images/busybox.sh")
mkdir -p "$BIN_DIR"
# install_copy SRC DEST: copy SRC to DEST unless it has the same bytes, by a rename (so a
# running binary is never half-written)
install_copy() {
  local tmp
  tmp=$(dirname "$2")/.$(basename "$2").new
  cmp -s "$1" "$2" && return 0
  mkdir -p "$(dirname "$2")"
  cp -f "$1" "$tmp" && mv -f "$tmp" "$2"
}
install_copy "$busybox" "$BIN_DIR/busybox"
# the binaries of sample-apiserver:1.29.2 and etcd:3.7.0-0 (their scripts cache them likewise)
sample_apiserver=$("$(dirname "${BASH_SOURCE[0]}")/images/sample-apiserver.sh")
install_copy "$sample_apiserver" "$BIN_DIR/images/sample-apiserver/sample-apiserver"
etcd_dir=$("$(dirname "${BASH_SOURCE[0]}")/images/etcd.sh")
for b in etcd etcdctl etcdutl; do install_copy "$etcd_dir/$b" "$BIN_DIR/images/etcd/$b"; done

request="kubernetes=$VERSION $(go env GOOS)/$(go env GOARCH)"
all_present() {
  local b
  for b in "${BINS[@]}"; do [ -x "$BIN_DIR/$b" ] || return 1; done
  for b in "${IMAGE_FILES[@]}"; do [ -f "$BIN_DIR/images/$b" ] || return 1; done
}
if [ "$FORCE" != 1 ] && all_present && [ -f "$STAMP" ] &&
  [ "$(sed -n 's/^request: //p' "$STAMP")" = "$request" ]; then
  log "up to date: $(sed -n 's/^built: //p' "$STAMP") in $BIN_DIR"
  echo "$BIN_DIR"
  exit 0
fi

log "GOPROXY=$(go env GOPROXY) $(go version | cut -d' ' -f3); cache $CACHE; $(df -h --output=avail / | tail -1 | tr -d ' ') free on /"
dir=$CACHE/src/e2e-$VERSION out=$CACHE/out/e2e-$VERSION logf=$CACHE/e2e-$VERSION.log
mkdir -p "$CACHE/src" "$BIN_DIR"
start=$SECONDS

# build-kube.sh's go.sum of the same version saves the checksum look-ups it already made
mkdir -p "$dir"
[ -f "$dir/go.sum" ] || [ ! -f "$CACHE/src/kubernetes-$VERSION/go.sum" ] ||
  cp "$CACHE/src/kubernetes-$VERSION/go.sum" "$dir/go.sum"
kube_module "$VERSION" "$dir"
kdir=$(mod_dir k8s.io/kubernetes "$VERSION")
ld=$(kube_ldflags "$VERSION")
ginkgo_pin=$(sed -n 's#^[[:space:]]*github.com/onsi/ginkgo/v2 \(v[^ ]*\).*#\1#p' "$kdir/go.mod" | head -1)
agnhost_version=$(cat "$kdir/test/images/agnhost/VERSION")
[ -n "$ginkgo_pin" ] || { log "kubernetes $VERSION's go.mod pins no github.com/onsi/ginkgo/v2"; exit 1; }

rm -rf "$out"; mkdir -p "$out"
: >"$logf"
# go_step WHAT CMD...: run a go command in the scratch module, its output to the log
go_step() {
  local what=$1 t=$SECONDS
  shift
  log "building $what (log: $logf)"
  if ! (cd "$dir" && "$@") >>"$logf" 2>&1; then
    tail -30 "$logf" >&2
    log "building $what failed"
    exit 1
  fi
  log "$what built in $((SECONDS - t))s"
}

go_step "e2e.test of kubernetes $VERSION" \
  go test -c -trimpath -tags "$TAGS" -ldflags "$ld" -o "$out/e2e.test" k8s.io/kubernetes/test/e2e
got=$(cd "$dir" && go list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2)
[ "$got" = "$ginkgo_pin" ] || { log "ginkgo resolves to $got, kubernetes pins $ginkgo_pin"; exit 1; }
go_step "ginkgo $ginkgo_pin" \
  go build -trimpath -ldflags "-s -w" -o "$out/ginkgo" github.com/onsi/ginkgo/v2/ginkgo
go_step "agnhost $agnhost_version" \
  go build -trimpath -ldflags "-s -w -X main.Version=$agnhost_version" -o "$out/agnhost" \
  k8s.io/kubernetes/test/images/agnhost

# sanity: each runs, and agnhost is static (its image has no libc)
"$out/e2e.test" --version >/dev/null 2>&1 || "$out/e2e.test" --help >/dev/null 2>&1 ||
  { log "e2e.test does not run"; exit 1; }
"$out/ginkgo" version >/dev/null
"$out/agnhost" --help >/dev/null
if file "$out/agnhost" 2>/dev/null | grep -q 'dynamically linked'; then
  log "agnhost is dynamically linked"; exit 1
fi

# install: copy next to the target, then rename, so a running binary is never half-written
for b in "${BINS[@]}"; do
  cp -f "$out/$b" "$BIN_DIR/.$b.new" && mv -f "$BIN_DIR/.$b.new" "$BIN_DIR/$b"
done
for b in "${IMAGE_FILES[@]}"; do
  install -D -m 0644 "$kdir/test/images/$b" "$BIN_DIR/images/$b"
done
printf 'request: %s\nbuilt: e2e.test %s, ginkgo %s, agnhost %s, %s\n' "$request" "$VERSION" \
  "$ginkgo_pin" "$agnhost_version" "$(go version | cut -d' ' -f3)" >"$STAMP"
rm -rf "$out"  # the installed copies are the only ones kept
log "built in $((SECONDS - start))s: e2e.test $VERSION, ginkgo $ginkgo_pin, agnhost $agnhost_version"
echo "$BIN_DIR"  # stdout is just the directory: E2E=$(hack/build-e2e.sh)
