#!/usr/bin/env bash
# Build the Kubernetes control plane and node binaries that the pycri end-to-end setup runs
# against (kubelet, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl) and
# etcd, from source through the Go module proxy. Nothing is written to the repository.
#
#   hack/build-kube.sh                 build what is missing or of other versions
#   FORCE=1 hack/build-kube.sh         rebuild
#   KUBE_VERSIONS=v1.36.3 hack/build-kube.sh   pin (a space-separated list is tried in order)
#
# Environment (all optional):
#   KUBE_VERSIONS     k8s.io/kubernetes releases to try, newest first; the first that builds wins
#   ETCD_VERSIONS     go.etcd.io/etcd/server/v3 versions to try; default: the etcd version the
#                     chosen Kubernetes release names in build/dependencies.yaml, then v3.6.x
#   PYCRI_KUBE_CACHE  scratch modules and logs (default /var/cache/pycri/kube)
#   PYCRI_KUBE_BIN    where the binaries go   (default /usr/local/lib/pycri/kube/bin)
#
# Progress goes to stderr (go's own output to $PYCRI_KUBE_CACHE/*.log); stdout is only the
# binaries' directory. Cold: ~17 min on 2 cores, ~1.5 GB of module cache and ~4 GB of build
# cache; a second run (same request, binaries present, stamp matches) returns at once.
#
# How: k8s.io/kubernetes cannot be `go install`ed: its go.mod requires the k8s.io/* staging
# modules at v0.0.0 with `replace => ./staging/src/k8s.io/...`, and those directories are not
# in the module zip. So a scratch module in $PYCRI_KUBE_CACHE/src/kubernetes-vX requires
# k8s.io/kubernetes vX and replaces every staging module (read from kubernetes' own go.mod)
# by its published twin: v1.N.M -> v0.N.M (hack/lib/kube-module.sh, shared with build-e2e.sh).
# etcd builds in a scratch module of its own, so its dependency versions are etcd's, as in an
# etcd release. All binaries are CGO_ENABLED=0 (kubelet included: upstream links it with cgo,
# but nothing it needs requires cgo here, and one cgo setting for all lets the five share the
# build cache). Flags follow upstream's hack/lib/golang.sh for non-debug builds: -trimpath,
# -s -w, tags selinux,notest,grpcnotrace, and the version variables that `--version` prints.
set -euo pipefail

KUBE_VERSIONS=${KUBE_VERSIONS:-v1.37.2 v1.36.3 v1.35.4 v1.34.4}
ETCD_FALLBACK=${ETCD_FALLBACK:-v3.6.16}
CACHE=${PYCRI_KUBE_CACHE:-/var/cache/pycri/kube}
BIN_DIR=${PYCRI_KUBE_BIN:-/usr/local/lib/pycri/kube/bin}
FORCE=${FORCE:-0}
KUBE_BINS=(kubelet kube-apiserver kube-controller-manager kube-scheduler kubectl kubeadm)
STAMP=$BIN_DIR/.build-kube.stamp

log() { printf '%s build-kube: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# the Go environment, mod_dir, kube_module (the scratch module), kube_ldflags
. "$(dirname "${BASH_SOURCE[0]}")/lib/kube-module.sh"

# What a run is asked for; a stamp with the same request and all binaries present = done.
request="kube=[$KUBE_VERSIONS] etcd=[${ETCD_VERSIONS:-auto}/$ETCD_FALLBACK] $(go env GOOS)/$(go env GOARCH)"
all_present() {
  local b
  for b in "${KUBE_BINS[@]}" etcd; do [ -x "$BIN_DIR/$b" ] || return 1; done
}
if [ "$FORCE" != 1 ] && all_present && [ -f "$STAMP" ] &&
  [ "$(sed -n 's/^request: //p' "$STAMP")" = "$request" ]; then
  log "up to date: $(sed -n 's/^built: //p' "$STAMP") in $BIN_DIR"
  echo "$BIN_DIR"
  exit 0
fi

log "GOPROXY=$(go env GOPROXY) $(go version | cut -d' ' -f3); cache $CACHE; $(df -h --output=avail / | tail -1 | tr -d ' ') free on /"
mkdir -p "$CACHE/src" "$CACHE/out" "$BIN_DIR"
start=$SECONDS

build_kube() {
  local v=$1 dir=$CACHE/src/kubernetes-$1 out=$CACHE/out/kubernetes-$1 ld b
  kube_module "$v" "$dir" || return 1
  ld=$(kube_ldflags "$v")
  rm -rf "$out"; mkdir -p "$out"
  log "building kubernetes $v: ${KUBE_BINS[*]} (log: $CACHE/kubernetes-$v.log)"
  if ! (cd "$dir" && go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ld" -o "$out/" \
    $(for b in "${KUBE_BINS[@]}"; do echo "k8s.io/kubernetes/cmd/$b"; done)) \
    >"$CACHE/kubernetes-$v.log" 2>&1; then
    tail -30 "$CACHE/kubernetes-$v.log" >&2
    return 1
  fi
  "$out/kubelet" --version >/dev/null
}

build_etcd() {
  local v=$1 dir=$CACHE/src/etcd-$1 out=$CACHE/out/etcd-$1
  mkdir -p "$dir"
  printf 'module pycri.local/etcd-build\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$v" >"$dir/go.mod"
  rm -rf "$out"; mkdir -p "$out"
  log "building etcd $v (log: $CACHE/etcd-$v.log)"
  # server/main.go is etcd's `package main`: the module root builds the etcd binary
  if ! (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3) \
    >"$CACHE/etcd-$v.log" 2>&1; then
    tail -30 "$CACHE/etcd-$v.log" >&2
    return 1
  fi
  "$out/etcd" --version >/dev/null
}

kube_built=
for v in $KUBE_VERSIONS; do
  t=$SECONDS
  if build_kube "$v"; then
    kube_built=$v; log "kubernetes $v built in $((SECONDS - t))s"; break
  fi
  log "kubernetes $v failed; trying the next"
done
[ -n "$kube_built" ] || { log "no kubernetes version of [$KUBE_VERSIONS] built"; exit 1; }

etcd_built=
for v in ${ETCD_VERSIONS:-$(cat "$CACHE/src/kubernetes-$kube_built/etcd-version") $ETCD_FALLBACK}; do
  t=$SECONDS
  if build_etcd "$v"; then
    etcd_built=$v; log "etcd $v built in $((SECONDS - t))s"; break
  fi
  log "etcd $v failed; trying the next"
done
[ -n "$etcd_built" ] || { log "no etcd version built"; exit 1; }

# install: copy next to the target, then rename, so a running binary is never half-written
for b in "${KUBE_BINS[@]}"; do
  cp -f "$CACHE/out/kubernetes-$kube_built/$b" "$BIN_DIR/.$b.new" && mv -f "$BIN_DIR/.$b.new" "$BIN_DIR/$b"
done
cp -f "$CACHE/out/etcd-$etcd_built/etcd" "$BIN_DIR/.etcd.new" && mv -f "$BIN_DIR/.etcd.new" "$BIN_DIR/etcd"
printf 'request: %s\nbuilt: kubernetes %s, etcd %s, %s\n' "$request" "$kube_built" "$etcd_built" \
  "$(go version | cut -d' ' -f3)" >"$STAMP"

rm -rf "$CACHE/out"  # the installed copies are the only ones kept
log "built in $((SECONDS - start))s: kubernetes $kube_built, etcd $etcd_built"
log "$("$BIN_DIR/kubelet" --version); $("$BIN_DIR/etcd" --version | sed -n 1p)"
echo "$BIN_DIR"  # stdout is just the directory: BIN=$(hack/build-kube.sh)
