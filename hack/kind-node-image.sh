#!/usr/bin/env bash
# Build the kind node image whose container runtime is pycri: pycri.local/node:v1.37.2.
#
#   hack/kind-node-image.sh            build (always; takes a few minutes)
#   IMAGE=pycri.local/node:dev hack/kind-node-image.sh
#
# What goes in (issue 13):
#   - a Debian trixie root filesystem made by mmdebstrap from Debian's packages (kind's own base
#     image is debian:trixie-slim), systemd as PID 1;
#   - kind's base-image files (entrypoint, clean-install, sysctls, kubelet units, /kind layout)
#     copied from the sigs.k8s.io/kind module source in the Go module cache, and the steps of
#     kind's images/base/Dockerfile that prune systemd, done the same way here;
#   - kubeadm, kubelet, kubectl from hack/build-kube.sh, /kind/version as kind's node-image
#     build writes it (pkg/build/nodeimage);
#   - pycri from this checkout's HEAD (git archive: the committed state, never a half-edited
#     working tree) as a wheel, installed into /opt/pycri/venv on the node's own python3 (trixie:
#     3.13) with its dependencies' cp313 wheels fetched on this host; pycri-runtime written by
#     `python -m pycri.runtime.launcher`; conmon, CNI plugins, iptables, catatonit, runc, crun
#     from trixie; crictl (kind runs `crictl inspecti` in nodes) from this host's build;
#   - pycri.service (hack/kind/pycri.service), listening on /run/containerd/containerd.sock
#     (hack/kind/pycri-node.toml). No containerd.
#   - the images kubeadm asks for, built here: kube-apiserver, kube-controller-manager,
#     kube-scheduler from build-kube.sh; kube-proxy (on a Debian rootfs with iptables), etcd and
#     CoreDNS at the versions kubeadm names, built through the Go module proxy. They are
#     assembled by hack/kind/binary-images.py, pushed to a registry on 127.0.0.1 that lives for
#     the build only, and pulled into the node's pycri store by a pycri started in the root
#     filesystem (as kind's own build pulls into containerd). pycri has no pause container
#     (catatonit), so registry.k8s.io/pause is not needed.
#   - the pod network's image, pycri.local/flannel:v0.28.10 (flanneld through the Go module proxy
#     on kube-proxy's Debian base, which has iptables), preloaded the same way; hack/kind.sh up
#     applies hack/kind/flannel.yaml, which runs it with imagePullPolicy Never;
#   - hack/kind/ctr and hack/kind/containerd, the front ends kind calls (`kind load`, version
#     checks), as /usr/local/bin/ctr and /usr/local/bin/containerd when HEAD has them.
#
# Environment (all optional):
#   IMAGE               the tag (default pycri.local/node:v1.37.2)
#   KIND_VERSION        sigs.k8s.io/kind whose base-image files are used (default v0.33.0)
#   DEBIAN_MIRROR       default http://deb.debian.org/debian (security: ...-security)
#   PYCRI_NODE_CACHE    wheels, etcd, the build registry's storage and the root filesystem tarball
#                       (default /var/cache/pycri/kind-node)
#   PYCRI_NODE_REGISTRY 127.0.0.1:PORT of the build's registry (default 127.0.0.1:5100)
set -euo pipefail

IMAGE=${IMAGE:-pycri.local/node:v1.37.2}
KIND_VERSION=${KIND_VERSION:-v0.33.0}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${PYCRI_NODE_CACHE:-/var/cache/pycri/kind-node}
REGISTRY=${PYCRI_NODE_REGISTRY:-127.0.0.1:5100}
SUITE=trixie
PYTHON_TAG=313  # trixie's python3
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECKOUT=$(cd "$HERE/.." && pwd)

export PATH=$PATH:/usr/local/go/bin

log() { printf '%s kind-node-image: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Packages: kind's base image list (images/base/Dockerfile, minus fuse-overlayfs, nfs-common and
# open-iscsi, which serve containerd's fuse snapshotter and storage e2e tests), then pycri's.
KIND_PACKAGES=(systemd conntrack iptables nftables iproute2 ethtool util-linux mount kmod
  libseccomp2 pigz e2fsprogs bash ca-certificates curl jq procps)
PYCRI_PACKAGES=(python3 python3-venv conmon containernetworking-plugins catatonit runc crun dbus)

# --- the customize hook: mmdebstrap runs `$0 customize ROOTFS` after installing packages ---
customize() {
  local root=$1 base=$KIND_SRC/images/base/files f
  log "customizing $root"
  # kind's images/base/Dockerfile, COPY lines (modes as there: scripts 0755, other files 0644)
  install -m 0755 "$base"/usr/local/bin/* "$root/usr/local/bin/"
  mkdir -p "$root/kind/bin" "$root/LICENSES"
  cp -r "$base/kind/." "$root/kind/"
  find "$root/kind" -type f -exec chmod 0644 {} + && chmod 0755 "$root"/kind/bin/* "$root/kind" "$root/kind/bin"
  install -m 0644 "$base"/LICENSES/* "$root/LICENSES/"
  install -m 0644 "$base/etc/crictl.yaml" "$root/etc/"
  install -m 0644 "$base"/etc/default/* "$root/etc/default/"
  install -m 0644 "$base"/etc/sysctl.d/* "$root/etc/sysctl.d/"
  mkdir -p "$root/etc/systemd/system/kubelet.service.d"
  for f in "$base"/etc/systemd/system/*; do
    case ${f##*/} in
      containerd*.service) ;;  # containerd's: pycri.service takes its place
      kubelet.service.d) install -m 0644 "$f"/* "$root/etc/systemd/system/kubelet.service.d/" ;;
      *) install -m 0644 "$f" "$root/etc/systemd/system/" ;;
    esac
  done
  # cgroup v1: kind's entrypoint makes /kubelet in the hierarchies mounted when it runs; systemd
  # may mount more afterwards (hugetlb, net_cls,net_prio, perf_event: runc leaves their mount
  # points empty when the host has them unmounted, and systemd mounts there once some container's
  # systemd has attached them to a hierarchy), and the kubelet then fails on the missing
  # /sys/fs/cgroup/hugetlb/kubelet. As 11-kind.conf does for name=systemd, for every v1 hierarchy:
  cat >"$root/etc/systemd/system/kubelet.service.d/12-pycri-cgroup-v1.conf" <<'END'
# pycri (hack/kind-node-image.sh): /kubelet and /kubelet.slice (the cgroup root under the systemd
# driver) in every cgroup v1 hierarchy, also those mounted after
# the entrypoint (by systemd)
[Service]
ExecStartPre=/bin/sh -euc "[ -f /sys/fs/cgroup/cgroup.controllers ] || for d in /sys/fs/cgroup/*/; do if [ -f \"$${d}cgroup.procs\" ] && [ ! -f \"$${d}cgroup.controllers\" ]; then mkdir -p \"$${d}kubelet\" \"$${d}kubelet.slice\"; fi; done"
END
  # kind names containerd's cgroup for the kubelet's --runtime-cgroups; here it is pycri's
  sed -i 's#/system.slice/containerd.service#/system.slice/pycri.service#' "$root/etc/default/kubelet"
  # kind's Dockerfile, RUN after clean-install: prune systemd for a container
  find "$root/lib/systemd/system/sysinit.target.wants/" -name "systemd-tmpfiles-setup.service" -delete
  rm -f "$root"/lib/systemd/system/multi-user.target.wants/* \
    "$root"/etc/systemd/system/*.wants/* \
    "$root"/lib/systemd/system/local-fs.target.wants/* \
    "$root"/lib/systemd/system/sockets.target.wants/*udev* \
    "$root"/lib/systemd/system/sockets.target.wants/*initctl* \
    "$root"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >>"$root/etc/systemd/journald.conf"
  ln -sf /usr/lib/systemd/systemd "$root/sbin/init"
  mkdir -p "$root/etc/kubernetes/manifests"

  # Kubernetes: kind's node-image build copies the binaries to /usr/bin and writes /kind/version
  for f in kubeadm kubelet kubectl; do install -m 0755 "$KUBE_BIN/$f" "$root/usr/bin/$f"; done
  printf '%s' "$KUBE_VERSION" >"$root/kind/version"
  install -m 0755 "$CRICTL" "$root/usr/local/bin/crictl"
  # kind's ctr and containerd calls, answered by pycri's front ends (from HEAD, when it has them)
  for f in ctr containerd; do
    if [ -f "$SRC/hack/kind/$f" ]; then install -m 0755 "$SRC/hack/kind/$f" "$root/usr/local/bin/$f"; fi
  done

  # pycri: a venv on the node's python3, wheels only, no index
  mkdir -p "$root/tmp/wheels" "$root/opt/pycri"
  cp "$WHEELS"/*.whl "$PYCRI_WHEEL" "$root/tmp/wheels/"
  chroot "$root" python3 -m venv /opt/pycri/venv
  # --ignore-requires-python: pyproject says >=3.11,<3.12; trixie has 3.13 (issue 13: widen it)
  chroot "$root" env -u PIP_FIND_LINKS /opt/pycri/venv/bin/pip install -q --no-index --find-links /tmp/wheels \
    --ignore-requires-python --disable-pip-version-check "/tmp/wheels/${PYCRI_WHEEL##*/}"
  chroot "$root" /opt/pycri/venv/bin/python -m pycri.runtime.launcher /opt/pycri/venv/bin/pycri-runtime >/dev/null
  rm -rf "$root/tmp/wheels"
  install -m 0644 "$CHECKOUT/README.md" "$root/opt/pycri/README.md"
  printf '%s\n' "$PYCRI_COMMIT" >"$root/opt/pycri/COMMIT"
  install -D -m 0644 "$HERE/kind/pycri-node.toml" "$root/etc/pycri/pycri.toml"
  preload_images "$root"
  install -m 0644 "$HERE/kind/pycri.service" "$root/etc/systemd/system/pycri.service"

  # kind's Dockerfile: enable / mask, with pycri in containerd's place
  chroot "$root" systemctl enable kubelet.service pycri.service undo-mount-hacks.service
  chroot "$root" systemctl mask systemd-binfmt.service

  # what clean-install removes after apt, and apt's lists
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/* \
    "$root"/var/cache/debconf/*-old "$root"/usr/share/doc/* "$root"/usr/share/man/*
}

# A pycri inside the root filesystem (chroot: the host's network, so the build registry on
# 127.0.0.1) pulls $PRELOAD into the store the node's pycri opens: /var/lib/pycri.
preload_images() {
  local root=$1 pid img deadline
  cat >"$root/tmp/pycri-build.toml" <<END
listen = "unix:///tmp/pycri-build.sock"
root = "/var/lib/pycri"
state = "/run/pycri-build"
[registry]
plain_http = ["$REGISTRY"]
fall_back_to_upstream = false
[registry.mirrors]
"registry.k8s.io" = ["http://$REGISTRY/registry.k8s.io"]
"pycri.local" = ["http://$REGISTRY/pycri.local"]
[network]
write_default = false
END
  chroot "$root" /opt/pycri/venv/bin/pycri --config /tmp/pycri-build.toml serve \
    >"$CACHE/preload-pycri.log" 2>&1 &
  pid=$!
  deadline=$((SECONDS + 60))
  until [ -S "$root/tmp/pycri-build.sock" ]; do
    kill -0 $pid 2>/dev/null || { tail -20 "$CACHE/preload-pycri.log" >&2; return 1; }
    [ $SECONDS -lt $deadline ] || { log "the build's pycri did not listen in 60s"; return 1; }
    sleep 0.5
  done
  for img in $PRELOAD; do
    chroot "$root" crictl -r unix:///tmp/pycri-build.sock -i unix:///tmp/pycri-build.sock \
      --timeout 600s pull "$img" >&2
  done
  chroot "$root" crictl -r unix:///tmp/pycri-build.sock -i unix:///tmp/pycri-build.sock images >&2
  kill -TERM $pid
  wait $pid || true
  rm -rf "$root/tmp/pycri-build.toml" "$root/run/pycri-build"
}

if [ "${1:-}" = customize ]; then
  customize "$2"
  exit 0
fi

start=$SECONDS
mkdir -p "$CACHE/wheels"

# inputs
KIND_SRC=$(go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -d "$KIND_SRC/images/base/files" ] || { log "no images/base/files in $KIND_SRC"; exit 1; }
KUBE_BIN=$(nice -n 10 "$HERE/build-kube.sh")
KUBE_VERSION=$("$KUBE_BIN/kubeadm" version -o short)
CRICTL=$(command -v crictl) || { log "crictl missing: run hack/install-crictl.sh"; exit 1; }
command -v mmdebstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap >&2
"$HERE/docker.sh" >/dev/null

# pycri's dependencies as cp313 wheels (the dependencies of HEAD's pyproject.toml, the wheel's)
WHEELS=$CACHE/wheels/cp$PYTHON_TAG
mkdir -p "$WHEELS"
mapfile -t deps < <(git -C "$CHECKOUT" show HEAD:pyproject.toml | "$CHECKOUT/.venv/bin/python" -c '
import tomllib, sys
print(*tomllib.loads(sys.stdin.read())["project"]["dependencies"], sep="\n")')
log "wheels for cp$PYTHON_TAG: ${deps[*]}"
"$CHECKOUT/.venv/bin/pip" download -q --disable-pip-version-check -d "$WHEELS" --only-binary=:all: \
  --python-version "3.${PYTHON_TAG#3}" --implementation cp --abi "cp$PYTHON_TAG" \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  "${deps[@]}" >&2

# pycri's wheel from HEAD
PYCRI_COMMIT=$(git -C "$CHECKOUT" rev-parse HEAD)
src=$(mktemp -d /tmp/pycri-node-src.XXXXXX)
trap 'rm -rf "$src"' EXIT
git -C "$CHECKOUT" archive HEAD | tar -x -C "$src/"
mkdir -p "$src/.dist"
"$CHECKOUT/.venv/bin/pip" wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
  -w "$src/.dist" "$src" >&2
PYCRI_WHEEL=$(ls "$src"/.dist/pycri-*.whl)
log "pycri ${PYCRI_COMMIT:0:12}: ${PYCRI_WHEEL##*/}; kubernetes $KUBE_VERSION; kind files from $KIND_SRC"

# control-plane images: the ones of kubeadm's list that are built here
mapfile -t kubeadm_images < <("$KUBE_BIN/kubeadm" config images list --kubernetes-version "$KUBE_VERSION")
etcd_image=$(printf '%s\n' "${kubeadm_images[@]}" | grep '/etcd:')
etcd_version=v${etcd_image##*:}; etcd_version=${etcd_version%-*}  # 3.7.0-0 -> v3.7.0
ETCD=$CACHE/bin/etcd-$etcd_version/etcd  # the image's file is /usr/local/bin/<its name>
if [ ! -x "$ETCD" ]; then
  log "building etcd $etcd_version for $etcd_image (log: $CACHE/etcd-$etcd_version.log)"
  mkdir -p "$CACHE/src/etcd-$etcd_version" "${ETCD%/*}"
  printf 'module pycri.local/etcd-build\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$etcd_version" \
    >"$CACHE/src/etcd-$etcd_version/go.mod"
  (cd "$CACHE/src/etcd-$etcd_version" && CGO_ENABLED=0 GOFLAGS=-mod=mod nice -n 10 go build -trimpath \
    -ldflags "-s -w" -o "$ETCD.new" go.etcd.io/etcd/server/v3) >"$CACHE/etcd-$etcd_version.log" 2>&1 ||
    { tail -20 "$CACHE/etcd-$etcd_version.log" >&2; exit 1; }
  mv -f "$ETCD.new" "$ETCD"
fi

# go build PACKAGE into $CACHE/bin/NAME-VERSION/NAME, in the scratch module DIR (made by the caller)
go_build_once() {
  local name=$1 version=$2 dir=$3 pkg=$4 ldflags=$5 out=$CACHE/bin/$1-$2/$1
  if [ ! -x "$out" ]; then
    log "building $name $version (log: $CACHE/$name-$version.log)"
    mkdir -p "${out%/*}"
    (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod nice -n 10 go build -trimpath ${6:-} -ldflags "$ldflags" \
      -o "$out.new" "$pkg") >"$CACHE/$name-$version.log" 2>&1 || { tail -20 "$CACHE/$name-$version.log" >&2; exit 1; }
    mv -f "$out.new" "$out"
  fi
  echo "$out"
}
# kube-proxy: not among build-kube.sh's binaries; built in a copy of its scratch module (the
# k8s.io/kubernetes module with the staging replaces), with its flags and version variables
kube_src=${PYCRI_KUBE_CACHE:-/var/cache/pycri/kube}/src/kubernetes-$KUBE_VERSION
mkdir -p "$CACHE/src/kube-proxy-$KUBE_VERSION"
cp "$kube_src/go.mod" "$kube_src/go.sum" "$CACHE/src/kube-proxy-$KUBE_VERSION/"
kube_ld="-s -w"
minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
for kv in "gitVersion=$KUBE_VERSION" gitMajor=1 "gitMinor=$minor" gitTreeState=clean; do
  kube_ld+=" -X k8s.io/component-base/version.${kv%%=*}=${kv#*=} -X k8s.io/client-go/pkg/version.${kv%%=*}=${kv#*=}"
done
KUBE_PROXY=$(go_build_once kube-proxy "$KUBE_VERSION" "$CACHE/src/kube-proxy-$KUBE_VERSION" \
  k8s.io/kubernetes/cmd/kube-proxy "$kube_ld" "-tags selinux,notest,grpcnotrace")
# kube-proxy runs iptables: its image has a Debian root filesystem below the binary, whose
# iptables and ip6tables are hack/kind/iptables-wrapper until the first call, which picks the
# node's backend (legacy or nft, as kind's entrypoint chose at boot: where the kubelet's chains
# are). The tarball is cached per version of the wrapper.
wrapper=$src/hack/kind/iptables-wrapper
PROXY_BASE=$CACHE/iptables-base-$(sha256sum "$wrapper" | cut -c1-12).tar
if [ ! -f "$PROXY_BASE" ]; then
  log "mmdebstrap $SUITE: the base of kube-proxy and flannel (iptables, nftables, conntrack)"
  alternatives='for t in iptables ip6tables; do chroot "$1" update-alternatives --install /usr/sbin/$t $t /usr/sbin/iptables-wrapper 100 --slave /usr/sbin/$t-restore $t-restore /usr/sbin/iptables-wrapper --slave /usr/sbin/$t-save $t-save /usr/sbin/iptables-wrapper; chroot "$1" update-alternatives --auto $t; done'
  nice -n 10 mmdebstrap --variant=minbase --include=iptables,nftables,conntrack,kmod \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --customize-hook="install -m 0755 '$wrapper' \"\$1/usr/sbin/iptables-wrapper\"" \
    --customize-hook="$alternatives" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*' \
    "$SUITE" "${PROXY_BASE%.tar}.new.tar" "deb $DEBIAN_MIRROR $SUITE main" >&2
  mv -f "${PROXY_BASE%.tar}.new.tar" "$PROXY_BASE"
fi
images=()
for img in "${kubeadm_images[@]}"; do
  b=${img##*/}; b=${b%%:*}
  case $b in
    kube-apiserver | kube-controller-manager | kube-scheduler) images+=("$img=$KUBE_BIN/$b") ;;
    etcd) images+=("$img=$ETCD") ;;
    kube-proxy) images+=("$img=$KUBE_PROXY,base=$PROXY_BASE") ;;
    coredns)
      # the CoreDNS release kubeadm names, from the Go module proxy; upstream's image runs /coredns
      v=${img##*:}
      mkdir -p "$CACHE/src/coredns-$v"
      printf 'module pycri.local/coredns-build\n\nrequire github.com/coredns/coredns %s\n' "$v" \
        >"$CACHE/src/coredns-$v/go.mod"
      images+=("$img=$(go_build_once coredns "$v" "$CACHE/src/coredns-$v" github.com/coredns/coredns "-s -w"),entrypoint")
      ;;
    *) log "not needed with pycri (no pause container): $img" ;;
  esac
done
# the pod network (hack/kind/flannel.yaml): flanneld, which runs iptables for --ip-masq, on the
# same Debian base as kube-proxy. flannel's CNI plugin is not on the Go module proxy (the
# DaemonSet writes a bridge network list instead) nor in containernetworking/plugins v1.0.1.
# Through the proxy, flanneld builds from a copy of flannel's main.go without two backends: the
# tencentvpc one (its SDK is not on the proxy) and udp (cgo); go.etcd.io/etcd/cache/v3, which
# only flannel's tests reach (through etcd/tests/v3), is not on it either and is stubbed.
FLANNEL_VERSION=${FLANNEL_VERSION:-v0.28.10}
fdir=$CACHE/src/flanneld-$FLANNEL_VERSION
if [ ! -x "$CACHE/bin/flanneld-$FLANNEL_VERSION/flanneld" ]; then
  flannel_src=$(go mod download -json "github.com/flannel-io/flannel@$FLANNEL_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$fdir/stub/etcd-cache"
  printf 'module go.etcd.io/etcd/cache/v3\n\ngo 1.24\n' >"$fdir/stub/etcd-cache/go.mod"
  printf 'module pycri.local/flanneld-build\n\nrequire github.com/flannel-io/flannel %s\n\nreplace go.etcd.io/etcd/cache/v3 => ./stub/etcd-cache\n' \
    "$FLANNEL_VERSION" >"$fdir/go.mod"
  sed -e '/pkg\/backend\/tencentvpc"/d' -e '/pkg\/backend\/udp"/d' "$flannel_src/main.go" >"$fdir/main.go"
fi
FLANNELD=$(go_build_once flanneld "$FLANNEL_VERSION" "$fdir" . \
  "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION")
images+=("pycri.local/flannel:$FLANNEL_VERSION=$FLANNELD,base=$PROXY_BASE")
PRELOAD=$(printf '%s\n' "${images[@]%%=*}")

# the build's registry (Debian's docker-registry), on 127.0.0.1 for this build only
command -v docker-registry >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-registry >&2
mkdir -p "$CACHE/registry"
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
  "$CACHE/registry" "$REGISTRY" >"$CACHE/registry.yml"
docker-registry serve "$CACHE/registry.yml" >"$CACHE/registry.log" 2>&1 &
registry_pid=$!
trap 'kill $registry_pid 2>/dev/null; rm -rf "$src"' EXIT
deadline=$((SECONDS + 30))
until curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1; do
  kill -0 $registry_pid 2>/dev/null || { tail -20 "$CACHE/registry.log" >&2; exit 1; }
  [ $SECONDS -lt $deadline ] || { log "registry on $REGISTRY did not answer in 30s"; exit 1; }
  sleep 0.5
done
t=$SECONDS
"$CHECKOUT/.venv/bin/python" "$HERE/kind/binary-images.py" --registry "$REGISTRY" "${images[@]}"
log "control-plane images pushed in $((SECONDS - t))s"

export KIND_SRC KUBE_BIN KUBE_VERSION CRICTL WHEELS PYCRI_WHEEL PYCRI_COMMIT PRELOAD REGISTRY CACHE
export SRC=$src  # HEAD's files

# the root filesystem
rootfs=$CACHE/rootfs.tar
includes=$(IFS=,; echo "${KIND_PACKAGES[*]},${PYCRI_PACKAGES[*]}")
log "mmdebstrap $SUITE ($DEBIAN_MIRROR): $includes"
t=$SECONDS
nice -n 10 mmdebstrap --variant=minbase --include="$includes" \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --customize-hook="\"$HERE/kind-node-image.sh\" customize \"\$1\"" \
  "$SUITE" "$CACHE/rootfs.new.tar" \
  "deb $DEBIAN_MIRROR $SUITE main" "deb $DEBIAN_MIRROR $SUITE-updates main" \
  "deb ${DEBIAN_MIRROR}-security $SUITE-security main" >&2
mv -f "$CACHE/rootfs.new.tar" "$rootfs"
log "root filesystem in $((SECONDS - t))s: $(du -h "$rootfs" | cut -f1)"

# the image: one layer, kind's metadata (images/base/Dockerfile's last stage, and the
# ENTRYPOINT/ENV that kind's node-image build commits)
ctx=$(mktemp -d "$CACHE/ctx.XXXXXX")
kill $registry_pid; wait $registry_pid 2>/dev/null || true
trap 'rm -rf "$src" "$ctx"' EXIT
ln "$rootfs" "$ctx/rootfs.tar"
cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
ADD rootfs.tar /
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENV HTTP_PROXY="" HTTPS_PROXY="" NO_PROXY=""
ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]
EOF
t=$SECONDS
docker build -q -t "$IMAGE" \
  --label "io.pycri.commit=${PYCRI_COMMIT%% *}" --label "io.pycri.kind-version=$KIND_VERSION" \
  --label "io.pycri.kubernetes-version=$KUBE_VERSION" "$ctx" >&2
log "docker build in $((SECONDS - t))s"
# the image this tag named before is dangling now: remove it (and only images of this script)
docker image prune -f --filter "label=io.pycri.kind-version" >/dev/null
log "built $IMAGE in $((SECONDS - start))s: $(docker images --format '{{.Size}}' "$IMAGE")"
echo "$IMAGE"
