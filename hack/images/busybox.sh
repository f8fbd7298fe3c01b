#!/usr/bin/env bash
# Build the busybox of the e2e test images (hack/testimages.py --e2e): upstream busybox 1.37 as
# Docker's busybox image has it (registry.k8s.io/e2e-test-images/busybox:1.37.0-2 is built on
# docker.io's busybox:1.37.0), from the source package of Debian trixie, statically linked.
#
#   hack/images/busybox.sh            build if the cache has no build of this recipe
#   FORCE=1 hack/images/busybox.sh    rebuild (fetching the source again)
#
# stdout is only the path of the binary: BUSYBOX=$(hack/images/busybox.sh). Cold: 1.5-3.5 min on
# 2 cores (+ ~3 MB of source); a second run returns at once (stamp), without the network.
#
# Why not Debian's own busybox: Debian's packages drop environment variables whose names are
# not shell names (`data-1=value-1`) when ash starts, so `sh -c env` does not print them and the
# ConfigMap/Secret "consumable via the environment" specs fail. Upstream ash keeps them and
# passes them to its children (since its commit 9c143ce5); Debian reverts that commit
# (debian/patches/revert-9c143ce52da11ec3d21a3491c3749841d3dc10f0.patch, so that its
# debian-installer patch applies), whatever the configuration. So: the upstream tarball of the source package
# (busybox_1.37.0.orig.tar.bz2) with only the Debian patches that fix the build ($PATCHES; the
# same two fixes Docker's image applies: tc without CBQ, the SHA-NI guard), upstream's
# defconfig (like Docker's: no FEATURE_SH_STANDALONE, FEATURE_SH_NOFORK or
# FEATURE_PREFER_APPLETS, so sh execs every external command from PATH, and /bin/ls masked
# by a runtime is not run as a built-in), plus CONFIG_STATIC (the images have no libc).
# Checked after the build: static, `sh -c env` keeps `data-1`, the applets the specs run.
#
# The source comes through a private apt configuration in $CACHE/apt (its own sources list
# with one deb-src line for trixie, lists and archive directories): this machine's apt
# sources, lists and packages are not touched.
#
# Environment (all optional):
#   PYCRI_BUSYBOX_CACHE   source, build and result (default /var/cache/pycri/busybox)
#   BUSYBOX_SUITE         Debian suite of the source package (default trixie)
#   DEBIAN_MIRROR         default http://deb.debian.org/debian
set -euo pipefail

CACHE=${PYCRI_BUSYBOX_CACHE:-/var/cache/pycri/busybox}
SUITE=${BUSYBOX_SUITE:-trixie}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
FORCE=${FORCE:-0}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
PATCHES=(busybox-1.36.1-no-cbq.patch libbb-sha-add-missing-sha-NI-guard.patch)
# applets the e2e specs and our tests run from the image; the build fails without one of them
NEEDED=(sh ash env hexdump sysctl nslookup wget id sleep cat ls seq test getopt pgrep ipcs
  timeout nc ip ping hostname dd mount)
# off in upstream's defconfig; on, ash runs applets without PATH (or in its own process)
OFF=(CONFIG_FEATURE_SH_STANDALONE CONFIG_FEATURE_SH_NOFORK CONFIG_FEATURE_PREFER_APPLETS
  CONFIG_FEATURE_DI_ENV_HACK)
OUT=$CACHE/bin/busybox
STAMP=$CACHE/bin/.busybox.stamp

log() { printf '%s images/busybox: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

recipe="suite=$SUITE patches=${PATCHES[*]} config=defconfig+CONFIG_STATIC $(uname -m)"
if [ "$FORCE" != 1 ] && [ -x "$OUT" ] && [ -f "$STAMP" ] &&
  [ "$(sed -n 's/^recipe: //p' "$STAMP")" = "$recipe" ]; then
  log "up to date: $(sed -n 's/^built: //p' "$STAMP")"
  echo "$OUT"
  exit 0
fi
for tool in apt-get dpkg-source gcc make patch bzip2 xz; do
  command -v "$tool" >/dev/null || { log "$tool not found (needs a Debian with gcc, make, dpkg-dev)"; exit 1; }
done
start=$SECONDS

# --- the source package, through the private apt configuration
apt_dir=$CACHE/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/parts" "$apt_dir/cache/archives/partial" "$CACHE/bin"
echo "deb-src [signed-by=$KEYRING] $MIRROR $SUITE main" >"$apt_dir/sources.list"
apt_opts=(-q -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/parts"
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o APT::Sandbox::User=root)
log "fetching busybox's source package from $SUITE ($MIRROR)"
apt-get "${apt_opts[@]}" update >"$CACHE/apt.log" 2>&1 || { cat "$CACHE/apt.log" >&2; exit 1; }
dl=$CACHE/dl
rm -rf "$dl" && mkdir -p "$dl"
(cd "$dl" && apt-get "${apt_opts[@]}" source --download-only busybox) >>"$CACHE/apt.log" 2>&1 ||
  { cat "$CACHE/apt.log" >&2; exit 1; }
dsc=$(ls "$dl"/busybox_*.dsc)
version=$(sed -n 's/^Version: //p' "$dsc")
orig=$(ls "$dl"/busybox_*.orig.tar.*)
debian=$(ls "$dl"/busybox_*.debian.tar.*)

# --- upstream's tree with the build fixes only
src=$CACHE/src/busybox-${version#*:} build=$CACHE/build  # make wants no ":" in paths
rm -rf "$src" "$build"
mkdir -p "$src" "$build"
tar -xf "$orig" -C "$src" --strip-components=1
tar -xf "$debian" -C "$src"  # debian/, beside the upstream tree: only its patches are used
for p in "${PATCHES[@]}"; do
  [ -f "$src/debian/patches/$p" ] || { log "Debian $version has no patch $p"; exit 1; }
  (cd "$src" && patch -s -p1 <"debian/patches/$p")
done

# --- upstream's defconfig, static; the build date busybox prints is the source's (as in
# Docker's build), so that a rebuild gives the same bytes
export SOURCE_DATE_EPOCH
SOURCE_DATE_EPOCH=$(stat -c %Y "$src/Makefile")
make -s -C "$src" O="$build" defconfig >"$CACHE/build.log" 2>&1 ||
  { tail -30 "$CACHE/build.log" >&2; log "make defconfig failed"; exit 1; }
sed -i 's/^# CONFIG_STATIC is not set$/CONFIG_STATIC=y/' "$build/.config"
make -s -C "$build" oldconfig < <(yes '') >>"$CACHE/build.log" 2>&1
grep -qx 'CONFIG_STATIC=y' "$build/.config" || { log "CONFIG_STATIC did not stick"; exit 1; }
for c in "${OFF[@]}"; do
  if grep -q "^$c=y" "$build/.config"; then log "$c is on in defconfig"; exit 1; fi
done
log "building busybox $version (upstream defconfig, static; log: $CACHE/build.log)"
nice make -C "$build" -j "$(nproc)" busybox >>"$CACHE/build.log" 2>&1 ||
  { tail -30 "$CACHE/build.log" >&2; log "build failed"; exit 1; }

# --- checks: static, dashed environment names kept, the applets there
bb=$build/busybox
if LC_ALL=C readelf -l "$bb" 2>/dev/null | grep -q 'INTERP'; then log "busybox is not static"; exit 1; fi
got=$(env -i 'data-1=value-1' PATH=/nonexistent "$bb" sh -c "$bb env")
grep -qx 'data-1=value-1' <<<"$got" || { log "sh -c env dropped data-1: $got"; exit 1; }
applets=$("$bb" --list)
for a in "${NEEDED[@]}"; do
  grep -qx "$a" <<<"$applets" || { log "no applet $a"; exit 1; }
done

cp -f "$bb" "$OUT.new" && mv -f "$OUT.new" "$OUT"
banner=$("$OUT" 2>&1 || true)  # "BusyBox v1.37.0 (date) multi-call binary." and its help
banner=${banner%%$'\n'*}
printf 'recipe: %s\nbuilt: %s of Debian %s (upstream tarball, patches %s), gcc %s\n' "$recipe" \
  "${banner% multi-call binary.}" "$version" "${PATCHES[*]}" "$(gcc -dumpversion)" >"$STAMP"
rm -rf "$build" "$dl"  # the source stays for reference; the binary is the result
log "built in $((SECONDS - start))s: $(sed -n 's/^built: //p' "$STAMP")"
echo "$OUT"
