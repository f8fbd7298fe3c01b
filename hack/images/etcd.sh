#!/usr/bin/env bash
# Build the binaries of registry.k8s.io/etcd:3.7.0-0 (hack/testimages.py --e2e), the etcd image
# Kubernetes' e2e suite v1.37.2 names (test/utils/image/manifest.go, Etcd): etcd, etcdctl and
# etcdutl v3.7.0 from the Go module proxy, static. The aggregated API server specs run it
# beside sample-apiserver (hack/images/sample-apiserver.sh) in one pod, with the command
# `/usr/local/bin/etcd --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls
# http://127.0.0.1:2379`.
#
#   hack/images/etcd.sh            build if the cache has no build of this recipe
#   FORCE=1 hack/images/etcd.sh    rebuild
#
# stdout is only the directory of the three binaries. Cold (modules in the module cache, empty
# build cache): 90 s on 2 cores (etcd 80 s; etcdctl and etcdutl share most of its packages),
# +~350 MB of build cache; with the build cache warm 4 s; a second run returns at once (stamp),
# without the network. Reproducible: a cold rebuild gives the same bytes.
#
# Upstream's image (kubernetes' cluster/images/etcd) is distroless with etcd's release
# binaries in /usr/local/bin (plus its migrate tooling, which no e2e spec runs). etcd's
# release builds each binary in its own module (server/, etcdctl/, etcdutl/ of the etcd
# repository; CGO_ENABLED=0); so here, each in a scratch module of its own with that module's
# requirements and replaces (hack/images/go-static.sh): go.etcd.io/etcd/server/v3 (its root
# package is etcd's main), go.etcd.io/etcd/etcdctl/v3, go.etcd.io/etcd/etcdutl/v3; -trimpath
# -s -w. Unlike a release, `etcd --version` says "Git SHA: Not provided" (the proxy does not
# record etcd's commit).
#
# Environment (all optional):
#   ETCD_IMAGE_VERSION  etcd version (default v3.7.0: image tag 3.7.0-0)
#   PYCRI_KUBE_CACHE    scratch modules, log and result (default /var/cache/pycri/kube)
set -euo pipefail

VERSION=${ETCD_IMAGE_VERSION:-v3.7.0}
CACHE=${PYCRI_KUBE_CACHE:-/var/cache/pycri/kube}
FORCE=${FORCE:-0}
# binary=module (its root package is the binary's main)
BINS=(etcd=go.etcd.io/etcd/server/v3 etcdctl=go.etcd.io/etcd/etcdctl/v3
  etcdutl=go.etcd.io/etcd/etcdutl/v3)
OUT=$CACHE/image-bin/etcd-$VERSION
STAMP=$OUT/.etcd.stamp

log() { printf '%s images/etcd: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

recipe="etcd@$VERSION ${BINS[*]} go-static -trimpath -s -w $(uname -m)"
all_present() {
  local b
  for b in "${BINS[@]}"; do [ -x "$OUT/${b%%=*}" ] || return 1; done
}
if [ "$FORCE" != 1 ] && all_present && [ -f "$STAMP" ] &&
  [ "$(sed -n 's/^recipe: //p' "$STAMP")" = "$recipe" ]; then
  log "up to date: $(sed -n 's/^built: //p' "$STAMP")"
  echo "$OUT"
  exit 0
fi
# go_static_module, go_static_build, and the Go environment
. "$(dirname "${BASH_SOURCE[0]}")/go-static.sh"
start=$SECONDS
logf=$CACHE/etcd-image-$VERSION.log
mkdir -p "$OUT"
: >"$logf"
for b in "${BINS[@]}"; do
  name=${b%%=*} module=${b#*=} t=$SECONDS
  dir=$CACHE/src/etcd-image-$VERSION-$name  # not build-kube.sh's etcd-vX: it may run meanwhile
  go_static_module "$module" "$VERSION" "$dir"
  log "building $name ($module $VERSION; log: $logf)"
  go_static_build "$dir" "$logf" "$OUT/.$name.new" "$module"
  log "$name built in $((SECONDS - t))s"
done

# checks: each says its version
v=${VERSION#v}
"$OUT/.etcd.new" --version | grep -qx "etcd Version: $v" || { log "etcd --version is not $v"; exit 1; }
"$OUT/.etcdctl.new" version | grep -qx "etcdctl version: $v" || { log "etcdctl version is not $v"; exit 1; }
"$OUT/.etcdutl.new" version | grep -qx "etcdutl version: $v" || { log "etcdutl version is not $v"; exit 1; }
for b in "${BINS[@]}"; do mv -f "$OUT/.${b%%=*}.new" "$OUT/${b%%=*}"; done
printf 'recipe: %s\nbuilt: etcd, etcdctl, etcdutl %s, %s\n' "$recipe" "$VERSION" \
  "$(go version | cut -d' ' -f3)" >"$STAMP"
log "built in $((SECONDS - start))s: $(sed -n 's/^built: //p' "$STAMP")"
echo "$OUT"
