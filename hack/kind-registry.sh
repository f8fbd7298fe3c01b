#!/usr/bin/env bash
# The kind nodes' registry mirror (issue 14): the host's test registry storage
# (hack/registry.sh, /var/lib/pycri-test/registry/storage: the images hack/testimages.py pushes to
# 127.0.0.1:5000, e2e.test's among them) served read-only by a registry container on the docker
# network `kind`, as kind's docs do for a local registry. The nodes cannot reach the host's
# 127.0.0.1:5000; they reach this container by its name, and their pycri mirrors docker.io,
# registry.k8s.io, k8s.gcr.io, gcr.io, quay.io and public.ecr.aws to
# http://pycri-kind-registry:5000/<registry> (hack/kind/pycri-node.toml).
#
#   hack/kind-registry.sh start    build the image if docker lacks it, start the container on the
#                                  network `kind` (kind's; it must exist) if not running (idempotent)
#   hack/kind-registry.sh stop     remove the container (the image stays)
#   hack/kind-registry.sh status   exit 1 unless it is running and answers /v2/
#
# The image (pycri.local/kind-registry:v1) is made FROM scratch: Debian's /usr/bin/docker-registry
# (distribution v2; dynamically linked against glibc only, so its loader and libc go with it) and
# a config. Storage is bind-mounted read-only: pushes go to 127.0.0.1:5000 on the host, and
# what is pushed there is served here at once.
#
# Environment: PYCRI_KIND_REGISTRY_NAME (default pycri-kind-registry), PYCRI_REGISTRY_STORAGE
# (default /var/lib/pycri-test/registry/storage), PYCRI_KIND_REGISTRY_IMAGE.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NAME=${PYCRI_KIND_REGISTRY_NAME:-pycri-kind-registry}
STORAGE=${PYCRI_REGISTRY_STORAGE:-/var/lib/pycri-test/registry/storage}
IMAGE=${PYCRI_KIND_REGISTRY_IMAGE:-pycri.local/kind-registry:v1}
NETWORK=kind

log() { printf '%s kind-registry: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

build() {
  local bin ctx lib
  bin=$(command -v docker-registry) || { "$HERE/registry.sh" start >/dev/null; bin=$(command -v docker-registry); }
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' RETURN
  mkdir -p "$ctx/root/usr/bin" "$ctx/root/etc/docker/registry" "$ctx/root/var/lib/registry" "$ctx/root/tmp"
  cp "$bin" "$ctx/root/usr/bin/docker-registry"
  # its shared libraries and loader, at the paths ldd names
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$ctx/root$(dirname "$lib")"
    cp -L "$lib" "$ctx/root$lib"
  done
  cat >"$ctx/root/etc/docker/registry/config.yml" <<'END'
version: 0.1
log:
  level: warn
  formatter: text
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: true
http:
  addr: :5000
  secret: pycri-kind-registry-read-only
  headers:
    X-Content-Type-Options: [nosniff]
END
  cat >"$ctx/Dockerfile" <<'END'
FROM scratch
COPY root/ /
EXPOSE 5000
ENTRYPOINT ["/usr/bin/docker-registry", "serve", "/etc/docker/registry/config.yml"]
END
  log "building $IMAGE from $bin"
  docker build -q -t "$IMAGE" "$ctx" >/dev/null
}

answers() {
  local ip
  ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NETWORK\").IPAddress}}" "$NAME" 2>/dev/null) &&
    [ -n "$ip" ] && curl -fs -m 5 -o /dev/null "http://$ip:5000/v2/"
}

start() {
  "$HERE/docker.sh" >/dev/null
  [ -d "$STORAGE" ] || { log "no registry storage at $STORAGE (hack/registry.sh start)"; exit 1; }
  docker image inspect "$IMAGE" >/dev/null 2>&1 || build
  # kind makes the network with its own options: the cluster comes first (hack/kind.sh up)
  docker network inspect "$NETWORK" >/dev/null 2>&1 ||
    { log "no docker network $NETWORK: create the kind cluster first (hack/kind.sh up)"; exit 1; }
  if [ "$(docker inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" != true ]; then
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    docker run -d --restart=unless-stopped --name "$NAME" --network "$NETWORK" \
      -v "$STORAGE:/var/lib/registry:ro" "$IMAGE" >/dev/null
  fi
  local deadline=$((SECONDS + 30))
  until answers; do
    ((SECONDS < deadline)) || { log "$NAME does not answer on :5000"; docker logs --tail 20 "$NAME" >&2; exit 1; }
    sleep 0.5
  done
  log "$NAME serves $STORAGE on network $NETWORK (http://$NAME:5000)"
}

stop() {
  docker rm -f "$NAME" >/dev/null 2>&1 || true
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) answers ;;
  build) build ;;
  *) echo "usage: $0 start|stop|status|build" >&2; exit 2 ;;
esac
