#!/usr/bin/env bash
# A one-node Kubernetes cluster on 127.0.0.1 whose kubelet runs pods on pycri: etcd,
# kube-apiserver (certificates made here with openssl), kube-controller-manager,
# kube-scheduler and kubelet, from the binaries hack/build-kube.sh builds.
#
#   hack/local-cluster.sh start     start what is not running; prints the kubeconfig to use
#   hack/local-cluster.sh stop      stop everything, unmount kubelet's volumes, keep the data
#   hack/local-cluster.sh down      stop and remove the cluster's state (etcd data, certs)
#   hack/local-cluster.sh status
#
#   export KUBECONFIG=/var/lib/pycri-cluster/admin.kubeconfig; kubectl get nodes
#
# Environment (optional):
#   PYCRI_ENDPOINT   the CRI endpoint kubelet uses (default unix:///run/pycri/pycri.sock:
#                    the pycri hack/setup.sh starts)
#   CLUSTER_DIR      state, certificates, logs (default /var/lib/pycri-cluster)
#   NODE_NAME        the node's name (default 127.0.0.1: the apiserver reaches kubelet by it)
#   PORT_OFFSET      added to every port below (default 0), so that a second cluster (with a
#                    CLUSTER_DIR and CGROUP_ROOT of its own) can run beside the default one
#   FEATURE_GATES    kubelet's feature gates, e.g. EventedPLEG=true (comma-separated NAME=BOOL)
#   CGROUP_ROOT      kubelet's cgroupRoot (default: kubelet's, /): its kubepods tree goes under
#                    it; made in every cgroup hierarchy if missing
#   KUBELET_EXTRA_ARGS  more kubelet flags, split on spaces (flags win over the config file),
#                    e.g. "--v 4 --sync-frequency 1m"
# The CRI endpoint may be any runtime's (containerd's too): kubelet uses the cgroupfs driver.
# Ports: etcd 2379/2380 (metrics 2381), apiserver 6443, kubelet 10250 (10255 read-only,
# 10248 healthz), controller-manager 10257, scheduler 10259; all on 127.0.0.1.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${CLUSTER_DIR:-/var/lib/pycri-cluster}
ENDPOINT=${PYCRI_ENDPOINT:-unix:///run/pycri/pycri.sock}
NODE=${NODE_NAME:-127.0.0.1}  # as in local-up-cluster: the name is an address the apiserver can reach
OFFSET=${PORT_OFFSET:-0}
FEATURE_GATES=${FEATURE_GATES:-}
CGROUP_ROOT=${CGROUP_ROOT:-}
read -r -a KUBELET_EXTRA <<<"${KUBELET_EXTRA_ARGS:-}"
ETCD_PORT=$((2379 + OFFSET))
ETCD_PEER_PORT=$((2380 + OFFSET))
ETCD_METRICS_PORT=$((2381 + OFFSET))
API_PORT=$((6443 + OFFSET))
KUBELET_PORT=$((10250 + OFFSET))
KUBELET_RO_PORT=$((10255 + OFFSET))
KUBELET_HEALTHZ_PORT=$((10248 + OFFSET))
KCM_PORT=$((10257 + OFFSET))
SCHEDULER_PORT=$((10259 + OFFSET))
PKI=$DIR/pki
LOGS=$DIR/logs
RUN=$DIR/run
API=https://127.0.0.1:$API_PORT
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet)

log() { printf 'local-cluster: %s\n' "$*" >&2; }

running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# --- certificates -----------------------------------------------------------------------------

# cert NAME SUBJECT [SANS] [EXT]: a key and a certificate signed by the cluster CA
cert() {
  local name=$1 subject=$2 sans=${3:-} usage=${4:-clientAuth}
  [ -f "$PKI/$name.crt" ] && return
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subject" \
    -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -z "$sans" ] || echo "subjectAltName=$sans"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

make_pki() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  if ! [ -f "$PKI/ca.crt" ]; then
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -subj "/CN=pycri-local-cluster-ca" \
      -days 3650 -sha256 -out "$PKI/ca.crt" 2>/dev/null
  fi
  cert apiserver "/CN=kube-apiserver" \
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.0.0.1" \
    serverAuth
  cert admin "/O=system:masters/CN=pycri-admin"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert kubelet "/O=system:nodes/CN=system:node:$NODE"
  cert kubelet-serving "/CN=$NODE" "DNS:localhost,IP:127.0.0.1" serverAuth
  if ! [ -f "$PKI/sa.key" ]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
}

# kubeconfig NAME CERT: a kubeconfig for the apiserver with that client certificate
kubeconfig() {
  local name=$1 cert=$2
  cat >"$DIR/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: $API, certificate-authority: $PKI/ca.crt}
users:
- name: $name
  user: {client-certificate: $PKI/$cert.crt, client-key: $PKI/$cert.key}
contexts:
- name: local
  context: {cluster: local, user: $name, namespace: default}
current-context: local
EOF
}

# feature_gates "A=true,B=false": the lines of a featureGates map (nothing if none)
feature_gates() {
  local gate gates
  [ -n "$FEATURE_GATES" ] || return 0
  echo "featureGates:"
  IFS=, read -r -a gates <<<"$FEATURE_GATES"
  for gate in "${gates[@]}"; do
    [ -n "$gate" ] || continue
    echo "  ${gate%%=*}: ${gate#*=}"
  done
}

# make_cgroup_root: kubelet refuses a cgroupRoot that is missing in a hierarchy
make_cgroup_root() {
  local top
  [ -n "$CGROUP_ROOT" ] || return 0
  for top in /sys/fs/cgroup/*/; do
    [ -f "${top}cgroup.procs" ] && mkdir -p "$top${CGROUP_ROOT#/}"
  done
  if [ -f /sys/fs/cgroup/cgroup.procs ]; then mkdir -p "/sys/fs/cgroup/${CGROUP_ROOT#/}"; fi
  return 0
}

kubelet_config() {
  cat >"$DIR/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: $ENDPOINT
cgroupDriver: cgroupfs
# this host is cgroup v1 (hybrid): kubelet >= 1.35 refuses to start on v1 unless told
failCgroupV1: false
failSwapOn: false
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: $KUBELET_RO_PORT
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
staticPodPath: $DIR/manifests
podLogsDir: $DIR/pod-logs
enforceNodeAllocatable: []
evictionHard: {}
imageGCHighThresholdPercent: 100
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
resolvConf: /etc/resolv.conf
serializeImagePulls: false
EOF
  [ -z "$CGROUP_ROOT" ] || echo "cgroupRoot: $CGROUP_ROOT" >>"$DIR/kubelet-config.yaml"
  feature_gates >>"$DIR/kubelet-config.yaml"
}

# --- processes --------------------------------------------------------------------------------

# launch NAME CMD...: start a component in its own session, its output in $LOGS/NAME.log
launch() {
  local name=$1
  shift
  if running "$name"; then
    log "$name is running (pid $(cat "$RUN/$name.pid"))"
    return
  fi
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
  log "$name started (pid $!), log $LOGS/$name.log"
}

# wait_for WHAT SECONDS CMD...: until CMD succeeds
wait_for() {
  local what=$1 seconds=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)) || ! running "$what"; then
      log "$what did not come up in ${seconds}s or exited; the end of its log:"
      tail -n 30 "$LOGS/$what.log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

start() {
  BIN=$("$ROOT/hack/build-kube.sh")
  export PATH=$BIN:$PATH
  mkdir -p "$DIR" "$LOGS" "$RUN" "$DIR/manifests" "$DIR/pod-logs" "$DIR/kubelet" "$DIR/etcd"
  make_pki
  kubeconfig admin admin
  kubeconfig controller-manager controller-manager
  kubeconfig scheduler scheduler
  kubeconfig kubelet kubelet
  kubelet_config
  make_cgroup_root

  launch etcd "$BIN/etcd" --name pycri --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "pycri=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "http://127.0.0.1:$ETCD_METRICS_PORT" \
    --quota-backend-bytes 2147483648
  wait_for etcd 60 curl -fsS "http://127.0.0.1:$ETCD_METRICS_PORT/health"

  launch kube-apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
    --authorization-mode Node,RBAC --client-ca-file "$PKI/ca.crt" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types Hostname \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --enable-priority-and-fairness=false --profiling=false \
    --endpoint-reconciler-type none  # 127.0.0.1 cannot be the kubernetes service's endpoint
  wait_for kube-apiserver 120 kubectl --kubeconfig "$DIR/admin.kubeconfig" get --raw /readyz

  launch kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key"
  launch kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false
  launch kubelet "$BIN/kubelet" --config "$DIR/kubelet-config.yaml" --kubeconfig "$DIR/kubelet.kubeconfig" \
    --root-dir "$DIR/kubelet" --hostname-override "$NODE" --v 2 ${KUBELET_EXTRA[@]+"${KUBELET_EXTRA[@]}"}
  wait_for kubelet 120 kubectl --kubeconfig "$DIR/admin.kubeconfig" wait --for=condition=Ready \
    "node/$NODE" --timeout 1s
  # pods need their namespace's default service account (the controller-manager makes it)
  wait_for kube-controller-manager 60 kubectl --kubeconfig "$DIR/admin.kubeconfig" get serviceaccount default
  log "cluster up: export KUBECONFIG=$DIR/admin.kubeconfig"
  echo "$DIR/admin.kubeconfig"
}

stop_component() {
  local name=$1
  running "$name" || { rm -f "$RUN/$name.pid"; return 0; }
  local pid
  pid=$(cat "$RUN/$name.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$RUN/$name.pid"
  log "$name stopped"
}

stop() {
  local i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop_component "${COMPONENTS[$i]}"
  done
  # kubelet bind-mounts its root onto itself and mounts volumes (secrets, projected) below it
  if [ -d "$DIR/kubelet" ]; then
    grep -F " $DIR/kubelet" /proc/self/mountinfo | awk '{print $5}' | sort -r |
      while read -r mount; do umount -l "$mount" 2>/dev/null || true; done
  fi
}

status() {
  local name rc=0
  for name in "${COMPONENTS[@]}"; do
    if running "$name"; then echo "$name running (pid $(cat "$RUN/$name.pid"))"; else echo "$name stopped"; rc=3; fi
  done
  return $rc
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  down) stop; rm -rf "$DIR" ;;
  status) status ;;
  *) echo "usage: $0 start|stop|down|status" >&2; exit 2 ;;
esac
