#!/usr/bin/env bash
# Build the binary of registry.k8s.io/e2e-test-images/sample-apiserver:1.29.2 (hack/testimages.py
# --e2e), the image Kubernetes' e2e suite v1.37.2 names for the aggregated API server specs
# ([sig-api-machinery] Aggregator "Should be able to support the 1.17 Sample API Server using
# the current Aggregator" [Conformance], and the protocol and OpenAPI v3 specs that set it up):
# k8s.io/sample-apiserver v0.29.2 from the Go module proxy, static.
#
#   hack/images/sample-apiserver.sh            build if the cache has no build of this recipe
#   FORCE=1 hack/images/sample-apiserver.sh    rebuild
#
# stdout is only the path of the binary. Cold: ~3 min on 2 cores, downloading its modules (the
# k8s.io libraries of 1.29 among them); with the build cache warm 3 s; a second run returns at
# once (stamp), without the network. Reproducible: a rebuild gives the same bytes.
#
# Upstream (test/images/sample-apiserver: Makefile, Dockerfile): clone
# github.com/kubernetes/sample-apiserver, check out the release tag, `go mod tidy`,
# `CGO_ENABLED=0 go build -o sample-apiserver .`; the image is alpine with it at
# /sample-apiserver, ENTRYPOINT ["/sample-apiserver"]. The spec runs the image's entrypoint
# with --etcd-servers=http://127.0.0.1:2379, --tls-cert-file/--tls-private-key-file of a
# Secret mounted at /apiserver.local.config/certificates and --audit-log-path=-, beside an
# etcd container in the same pod. Here: the module at the tag's version, its own go.mod's
# requirements and replaces (hack/images/go-static.sh), -trimpath -s -w.
#
# Environment (all optional):
#   SAMPLE_APISERVER_VERSION  k8s.io/sample-apiserver version (default v0.29.2: image tag 1.29.2)
#   PYCRI_KUBE_CACHE          scratch module, log and result (default /var/cache/pycri/kube)
set -euo pipefail

VERSION=${SAMPLE_APISERVER_VERSION:-v0.29.2}
CACHE=${PYCRI_KUBE_CACHE:-/var/cache/pycri/kube}
FORCE=${FORCE:-0}
MODULE=k8s.io/sample-apiserver
OUT=$CACHE/image-bin/sample-apiserver-$VERSION/sample-apiserver
STAMP=$OUT.stamp

log() { printf '%s images/sample-apiserver: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

recipe="$MODULE@$VERSION go-static -trimpath -s -w $(uname -m)"
if [ "$FORCE" != 1 ] && [ -x "$OUT" ] && [ -f "$STAMP" ] &&
  [ "$(sed -n 's/^recipe: //p' "$STAMP")" = "$recipe" ]; then
  log "up to date: $(sed -n 's/^built: //p' "$STAMP")"
  echo "$OUT"
  exit 0
fi
# go_static_module, go_static_build, and the Go environment
. "$(dirname "${BASH_SOURCE[0]}")/go-static.sh"
start=$SECONDS
dir=$CACHE/src/sample-apiserver-$VERSION logf=$CACHE/sample-apiserver-$VERSION.log
mkdir -p "$(dirname "$OUT")"
: >"$logf"
go_static_module "$MODULE" "$VERSION" "$dir"
log "building $MODULE $VERSION (log: $logf)"
go_static_build "$dir" "$logf" "$OUT.new" "$MODULE"

# checks: it runs, and takes the flags the spec passes
help=$("$OUT.new" --help 2>&1) || { log "sample-apiserver --help failed: $help"; exit 1; }
for flag in --etcd-servers --tls-cert-file --tls-private-key-file --audit-log-path \
  --audit-log-maxage --audit-log-maxbackup; do
  grep -q -- "$flag" <<<"$help" || { log "sample-apiserver has no $flag"; exit 1; }
done
mv -f "$OUT.new" "$OUT"
commit=$(go mod download -json "$MODULE@$VERSION" | jq -r '.Origin.Hash // "?"')
printf 'recipe: %s\nbuilt: %s %s (commit %.12s), %s\n' "$recipe" "$MODULE" "$VERSION" "$commit" \
  "$(go version | cut -d' ' -f3)" >"$STAMP"
log "built in $((SECONDS - start))s: $(sed -n 's/^built: //p' "$STAMP")"
echo "$OUT"
