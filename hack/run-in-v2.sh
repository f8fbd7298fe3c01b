#!/bin/bash
# Run a command as root in a pure cgroup v2 Linux: User-Mode Linux (Debian's user-mode-linux,
# kernel 6.1) over this host's files. See hack/uml/init.sh for the guest and
# ../shared/notes/cgroup-v2-host.md for why UML.
#
#   hack/run-in-v2.sh 'cat /sys/fs/cgroup/cgroup.controllers'
#
# The guest has one CPU, the memory PYCRI_UML_MEM says, no network but loopback, and a 1 MiB
# scratch disk /dev/ubda. The command runs with bash -c in the current directory (or the
# checkout's root), its output on this terminal; the exit code is the command's. A guest that
# dies before the command has finished exits 125, its console's end repeated on stderr.
# Environment: PYCRI_UML_MEM (default 3G), PYCRI_UML_CACHE (where the ptrace wrapper is built;
# default ~/.cache/pycri-uml). Boots in 4-9 s here (2 shared cores).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 'command'" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
checkout=$(cd "$here/.." && pwd)
uml=/usr/bin/linux.uml

if [ ! -x $uml ]; then
    echo "run-in-v2: installing user-mode-linux" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q user-mode-linux >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q user-mode-linux >&2; }
fi

# the AMX fix (hack/uml/ptrace_xstate.c), built once per version of its source
cache=${PYCRI_UML_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pycri-uml}
mkdir -p "$cache"
src=$here/uml/ptrace_xstate.c
lib=$cache/ptrace_xstate-$(sha256sum "$src" | cut -c1-16).so
if [ ! -f "$lib" ]; then
    gcc -O2 -shared -fPIC -Wall -o "$lib.tmp.$$" "$src" -ldl -lpthread
    mv "$lib.tmp.$$" "$lib"
fi

result=$(mktemp -d "$cache/run.XXXXXX")
console=$result/console
trap 'rm -rf "$result"' EXIT
printf '%s' "$1" > "$result/cmd"
printf '%s' "$checkout" > "$result/checkout"
case $PWD/ in
    "$checkout"/*) printf '%s' "$PWD" > "$result/cwd" ;;
    *) printf '%s' "$checkout" > "$result/cwd" ;;
esac

# a scratch disk, /dev/ubda (block 98:0) in the guest: a real block device for tests, its first
# line "pycri-uml-disk"
printf 'pycri-uml-disk\n' > "$result/disk"
truncate -s 1M "$result/disk"

# UML's memory is a file in TMPDIR; its console is our stdout (also kept for a crash report)
set +e
TMPDIR=/dev/shm LD_PRELOAD=$lib $uml mem="${PYCRI_UML_MEM:-3G}" root=/dev/root rootfstype=hostfs rootflags=/ ro \
    init="$here/uml/init.sh" PYCRI_UML_RESULT="$result" ubd0="$result/disk" con0=null,fd:1 con=null ssl=null quiet loglevel=3 \
    cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 </dev/null 2>&1 | tee "$console" \
    | sed -u '/^reboot: System halted/d'
uml_rc=${PIPESTATUS[0]}
set -e
stty sane 2>/dev/null || true
if [ ! -s "$result/rc" ]; then
    echo "run-in-v2: the guest ended (linux.uml exit $uml_rc) before the command finished; its console:" >&2
    tail -n 60 "$console" >&2
    exit 125
fi
exit "$(cat "$result/rc")"
