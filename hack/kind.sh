#!/usr/bin/env bash
# A kind cluster named `pycri` whose nodes run pycri (issue 13).
#
#   hack/kind.sh up      dockerd (hack/docker.sh), kind (hack/build-kind.sh), the node image if
#                        docker does not have it (hack/kind-node-image.sh), then
#                        `kind create cluster` from hack/kind/cluster.yaml (a control-plane node
#                        and two workers), then the pod network hack/kind/flannel.yaml; waits
#                        until every node is Ready and CoreDNS runs. A running cluster of that
#                        name is reused (the network is applied again, which changes nothing).
#                        Then the registry mirror the nodes pull through (hack/kind-registry.sh
#                        start: the host's test registry storage, read-only, in the container
#                        pycri-kind-registry on the kind network; PYCRI_KIND_REGISTRY=0: none)
#   hack/kind.sh down    delete the cluster, the registry container when no other kind cluster
#                        has nodes (it serves them all), and kind's docker network
#                        (and the NAT rule below) when no other kind cluster uses it
#   hack/kind.sh status  the cluster's nodes (exit 1 if there is no cluster)
#
# Environment: KIND_CLUSTER (default pycri), KIND_CONFIG (default hack/kind/cluster.yaml),
# PYCRI_KIND_IMAGE (default pycri.local/node:v1.37.2), PYCRI_KIND_REBUILD=1 to rebuild the image.
# The kubeconfig is kind's default (~/.kube/config, context kind-<cluster>), as `kind` does.
#
# Outbound NAT: hack/docker.sh runs dockerd with --iptables=false, so nothing masquerades the kind
# network's traffic to the outside, and docker's embedded DNS in the nodes (which CoreDNS forwards
# to, through the node's /etc/resolv.conf) sends its queries to this machine's resolver from the
# node's address and never gets an answer. `up` adds two rules, nat POSTROUTING MASQUERADE of DNS (udp/tcp 53) from
# the kind network's IPv4 subnet to elsewhere (FORWARD and its policy are left as they are); `down`
# removes it with the network.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER=${KIND_CLUSTER:-pycri}
CONFIG=${KIND_CONFIG:-$HERE/kind/cluster.yaml}
IMAGE=${PYCRI_KIND_IMAGE:-pycri.local/node:v1.37.2}
KUBE_BIN=${PYCRI_KUBE_BIN:-/usr/local/lib/pycri/kube/bin}
NETWORK=${KIND_NETWORK_MANIFEST:-$HERE/kind/flannel.yaml}

log() { printf '%s kind.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

running() {
  "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER" &&
    [ -n "$(docker ps -q --filter "label=io.x-k8s.kind.cluster=$CLUSTER")" ]
}

NAT_COMMENT="pycri hack/kind.sh: outbound NAT of docker network kind"

kind_subnet() {
  docker network inspect kind -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' 2>/dev/null |
    tr ' ' '\n' | grep -m1 '^[0-9.]*/[0-9]*$'
}

# DNS only (udp and tcp 53): a cluster's other traffic to the outside (say, to a Service IP
# on a port kube-proxy does not serve) must not be NATed out, where this machine's network
# answers any connection to port 80 (conformance's "same port and different protocols" saw it)
nat_rule() {  # nat_rule -A|-C|-D SUBNET PROTO
  iptables -t nat "$1" POSTROUTING -s "$2" ! -d "$2" -p "$3" --dport 53 -m comment --comment "$NAT_COMMENT" \
    -j MASQUERADE
}

outbound_nat() {
  local subnet proto
  subnet=$(kind_subnet) || { log "no IPv4 subnet on docker network kind: no outbound NAT"; return; }
  for proto in udp tcp; do
    nat_rule -C "$subnet" "$proto" 2>/dev/null || nat_rule -A "$subnet" "$proto"
  done
}

kubectl() { "$KUBE_BIN/kubectl" --context "kind-$CLUSTER" "$@"; }

# the pod network, then every node Ready and CoreDNS's pods Running
network() {
  local start=$SECONDS
  kubectl apply -f "$NETWORK" >&2
  kubectl wait --for=condition=Ready nodes --all --timeout=300s >&2
  # the Deployment's pods are made some seconds after the nodes: poll until there are some
  until [ -n "$(kubectl -n kube-system get pods -l k8s-app=kube-dns -o name 2>/dev/null)" ]; do
    [ $((SECONDS - start)) -lt 300 ] || { log "no CoreDNS pods after 300s"; exit 1; }
    sleep 1
  done
  kubectl -n kube-system wait --for=condition=Ready pods -l k8s-app=kube-dns --timeout=300s >&2
  log "pod network and CoreDNS ready in $((SECONDS - start))s"
}

# the nodes' registry mirror (hack/kind/pycri-node.toml names it); kind made the network
registry() {
  [ "${PYCRI_KIND_REGISTRY:-1}" = 0 ] || "$HERE/kind-registry.sh" start
}

usage() {
  cat >&2 <<END
cluster $CLUSTER is up:
  $KIND get kubeconfig --name $CLUSTER > kubeconfig
  $KUBE_BIN/kubectl --context kind-$CLUSTER get nodes -o wide
  pod network: flannel (host-gw), pods in 10.244.0.0/16, services in 10.96.0.0/16
  hack/kind.sh down
END
}

up() {
  local start=$SECONDS
  "$HERE/docker.sh" >/dev/null
  KIND=$(nice -n 10 "$HERE/build-kind.sh")
  if running; then
    log "cluster $CLUSTER is already running: reused"
    outbound_nat
    registry
    network
    usage
    return
  fi
  if [ "${PYCRI_KIND_REBUILD:-0}" = 1 ] || ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    IMAGE=$IMAGE "$HERE/kind-node-image.sh" >/dev/null
  fi
  # a cluster of that name whose containers are gone (e.g. dockerd was restarted): start over
  if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    "$KIND" delete cluster --name "$CLUSTER" >&2
  fi
  "$KIND" create cluster --name "$CLUSTER" --image "$IMAGE" --config "$CONFIG" >&2
  outbound_nat
  registry
  network
  log "up in $((SECONDS - start))s"
  usage
}

down() {
  "$HERE/docker.sh" status || { log "dockerd is not running: nothing to delete"; return; }
  KIND=$("$HERE/build-kind.sh")
  "$KIND" delete cluster --name "$CLUSTER" >&2
  # the registry serves every kind cluster on the network: removed with the last one's nodes
  [ -n "$(docker ps -aq --filter label=io.x-k8s.kind.cluster)" ] || "$HERE/kind-registry.sh" stop
  # kind leaves its `kind` network for the next cluster; remove it when nothing is attached
  if docker network inspect kind >/dev/null 2>&1 &&
    [ "$(docker network inspect kind -f '{{len .Containers}}')" = 0 ]; then
    local subnet
    if subnet=$(kind_subnet); then
      for proto in udp tcp; do
        while nat_rule -C "$subnet" "$proto" 2>/dev/null; do nat_rule -D "$subnet" "$proto"; done
      done
    fi
    docker network rm kind >/dev/null
  fi
  local left
  left=$(docker ps -aq --filter "label=io.x-k8s.kind.cluster=$CLUSTER")
  [ -z "$left" ] || { log "containers of $CLUSTER left: $left"; exit 1; }
}

status() {
  KIND=$("$HERE/build-kind.sh")
  running || { log "no cluster $CLUSTER"; exit 1; }
  "$KUBE_BIN/kubectl" --context "kind-$CLUSTER" get nodes -o wide
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
