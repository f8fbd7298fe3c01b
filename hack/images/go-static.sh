# shellcheck shell=bash
# Shared by hack/images/sample-apiserver.sh and hack/images/etcd.sh (source it; the caller
# defines log()): build the `package main` of a published Go module through the module proxy,
# statically, with the dependency versions of the module's own go.mod, as its release does.
#
# `go install MODULE@VERSION` would do that, but refuses modules whose go.mod has replace
# directives, and both have some. So a scratch module requires MODULE VERSION with the
# module's own language version and godebug lines (the same GODEBUG defaults) and its replace
# directives; one by a directory of the same repository (etcd's `go.etcd.io/etcd/api/v3 =>
# ../api`) becomes that module at the same release version, which is what the directory holds
# at the release's tag. The Go environment is hack/lib/kube-module.sh's (GOPROXY as set,
# -mod=mod, CGO_ENABLED=0), so these share the module and build caches of build-kube.sh and
# build-e2e.sh.

# mod_dir, GOFLAGS=-mod=mod, CGO_ENABLED=0
. "$(dirname "${BASH_SOURCE[0]}")/../lib/kube-module.sh"

# go_static_module MODULE VERSION DIR: write DIR/go.mod (DIR/go.sum is kept: it only grows)
go_static_module() {
  local module=$1 version=$2 dir=$3 mdir json args=() r old new
  mdir=$(mod_dir "$module" "$version") || return 1
  [ -n "$mdir" ] || return 1
  json=$(go mod edit -json "$mdir/go.mod")
  mkdir -p "$dir"
  {
    echo "module pycri.local/$(basename "$dir")"
    echo
    jq -r '"go \(.Go)", (.Godebug // [] | .[] | "godebug \(.Key)=\(.Value)")' <<<"$json"
    echo
    echo "require $module $version"
  } >"$dir/go.mod"
  while IFS=$'\t' read -r old new; do
    [ -n "$old" ] || continue
    case $new in
      ./* | ../* | /*) args+=("-replace=$old=${old%@*}@$version") ;;  # the same release
      *) args+=("-replace=$old=$new") ;;
    esac
  done < <(jq -r 'def ref: .Path + (if .Version then "@" + .Version else "" end);
    .Replace // [] | .[] | "\(.Old | ref)\t\(.New | ref)"' <<<"$json")
  [ ${#args[@]} -eq 0 ] || (cd "$dir" && go mod edit "${args[@]}")
}

# go_static_build DIR LOG OUT PACKAGE [LDFLAGS]: build PACKAGE in the scratch module DIR into
# the file OUT, niced (the machine may be running a cluster), go's output appended to LOG;
# the binary must be static (the images have no libc)
go_static_build() {
  local dir=$1 logf=$2 out=$3 pkg=$4 ld=${5:-}
  if ! (cd "$dir" && nice -n 10 go build -trimpath -ldflags "-s -w${ld:+ $ld}" -o "$out" "$pkg") \
    >>"$logf" 2>&1; then
    tail -30 "$logf" >&2
    log "building $pkg failed (log: $logf)"
    return 1
  fi
  if LC_ALL=C readelf -l "$out" 2>/dev/null | grep -q INTERP; then
    log "$out is not static"
    return 1
  fi
}
