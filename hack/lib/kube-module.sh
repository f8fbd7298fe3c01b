# shellcheck shell=bash
# Shared by hack/build-kube.sh and hack/build-e2e.sh (source it; the caller defines log()):
# the scratch Go module that builds packages of k8s.io/kubernetes vX through the module proxy,
# and the version -ldflags of upstream's builds.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod requires the k8s.io/* staging modules
# at v0.0.0 with `replace => ./staging/src/k8s.io/...`, and those directories are not in the
# module zip. So a scratch module requires k8s.io/kubernetes vX and replaces every staging
# module (read from kubernetes' own go.mod) by its published twin: v1.N.M -> v0.N.M.

export PATH=$PATH:/usr/local/go/bin
# GOPROXY and GOTOOLCHAIN are taken from the environment as they are. -mod=mod lets the
# scratch modules' go.mod/go.sum be completed by the go command itself. Everything is built
# with CGO_ENABLED=0 (static binaries; one setting, so the builds share the cache).
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"
export CGO_ENABLED=0

# Module directory of MODULE@VERSION in the module cache (downloads it); the proxy's error if not.
mod_dir() {
  local j
  j=$(go mod download -json "$1@$2") || { printf '%s\n' "$j" | sed -n 's/^\t"Error": /  /p' >&2; return 1; }
  printf '%s\n' "$j" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}

# Write the scratch module for kubernetes $1 into $2.
kube_module() {
  local v=$1 dir=$2 kdir staging m line
  kdir=$(mod_dir k8s.io/kubernetes "$v")
  [ -n "$kdir" ] || return 1
  mkdir -p "$dir"
  # keep go.sum from an earlier try of the same version: it only grows
  {
    echo "module pycri.local/kube-build"
    echo
    # same language version and GODEBUG defaults as kubernetes' own main module
    grep -E '^(go|godebug) ' "$kdir/go.mod"
    echo
    echo "require k8s.io/kubernetes $v"
  } >"$dir/go.mod"
  # staging modules: the `k8s.io/X => ./staging/src/k8s.io/X` lines of kubernetes' go.mod
  staging=$(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/src/.*#\1#p' "$kdir/go.mod")
  [ -n "$staging" ] || { log "no staging replaces found in $kdir/go.mod"; return 1; }
  (cd "$dir" && go mod edit $(for m in $staging; do echo "-replace=$m=$m@v0.${v#v1.}"; done))
  log "kubernetes $v: $(echo "$staging" | wc -l) staging modules replaced by v0.${v#v1.}"
  # etcd version this release is tested with (build/dependencies.yaml: name "etcd", version)
  line=$(sed -n '/name: "etcd"$/,/version:/s/^[[:space:]]*version: *//p' "$kdir/build/dependencies.yaml" 2>/dev/null | head -1)
  echo "${line:+v$line}" >"$dir/etcd-version"
}

# -ldflags for kubernetes $1 as upstream's hack/lib/golang.sh sets them for non-debug builds:
# -s -w and the version variables that `--version` prints; the build date is the release's
# time from the proxy's .info, so rebuilds are reproducible.
kube_ldflags() {
  local v=$1 minor date ld kv key val
  minor=${v#v1.}; minor=${minor%%.*}
  date=$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/^\t"Info": "\(.*\)",$/\1/p' |
    xargs sed -n 's/.*"Time":"\([^"]*\)".*/\1/p')
  ld="-s -w"
  for kv in "gitVersion=$v" gitMajor=1 "gitMinor=$minor" gitTreeState=clean "buildDate=$date"; do
    key=${kv%%=*} val=${kv#*=}
    ld+=" -X k8s.io/component-base/version.$key=$val -X k8s.io/client-go/pkg/version.$key=$val"
  done
  printf '%s\n' "$ld"
}
