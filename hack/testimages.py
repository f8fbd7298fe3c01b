#!/usr/bin/env python3
"""Build pycri's test images from local files and push them to a v2 registry.

Usage:
    .venv/bin/python hack/testimages.py --registry 127.0.0.1:5000 [--only NAME ...] [--list]
    .venv/bin/python hack/testimages.py --e2e    # the e2e.test images (hack/conformance.sh)

Every image is described by an ImageSpec in IMAGES.  Each spec carries full
upstream references (e.g. ``docker.io/library/busybox:latest``); they are pushed
to ``<registry>/<upstream repository>:<tag>`` because pycri serves upstream names
from the local registry through path-prefixed mirrors.

Builds are deterministic (fixed mtimes, sorted entries, uid/gid 0, gzip with
mtime=0 and no file name, seeded pseudo-random data), so a rebuild yields the
same digests and a re-push uploads nothing: blobs and manifests are checked with
HEAD first.  Only the standard library and ``zstandard`` are used.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import http.client
import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from email.message import Message
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Callable

import zstandard

EPOCH = 1704067200  # 2024-01-01T00:00:00Z, mtime of every tar entry
CREATED = "2024-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX_BIN = "/bin/busybox"
CHUNK = 1 << 20

MEDIA_TYPES: dict[str, dict[str, str]] = {
    "docker": {
        "manifest": "application/vnd.docker.distribution.manifest.v2+json",
        "index": "application/vnd.docker.distribution.manifest.list.v2+json",
        "config": "application/vnd.docker.container.image.v1+json",
        "none": "application/vnd.docker.image.rootfs.diff.tar",
        "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    },
    "oci": {
        "manifest": "application/vnd.oci.image.manifest.v1+json",
        "index": "application/vnd.oci.image.index.v1+json",
        "config": "application/vnd.oci.image.config.v1+json",
        "none": "application/vnd.oci.image.layer.v1.tar",
        "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
        "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    },
}
ACCEPT = ", ".join(MEDIA_TYPES[m][k] for m in MEDIA_TYPES for k in ("manifest", "index"))


# --------------------------------------------------------------------------- specs

@dataclass(frozen=True)
class Entry:
    """One tar entry; regular files get their content from ``opener``."""
    path: str
    type: bytes = tarfile.REGTYPE
    mode: int = 0o644
    size: int = 0
    opener: Callable[[], BinaryIO] | None = None
    linkname: str = ""


@dataclass(frozen=True)
class Layer:
    """A layer builder: ``name`` is the build cache key together with compression."""
    name: str
    entries: Callable[[], list[Entry]]
    compression: str = "gzip"  # "gzip" | "zstd" | "none"
    level: int | None = None   # None: gzip 9, zstd 3


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    def as_dict(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        return out | ({"variant": self.variant} if self.variant else {})


@dataclass(frozen=True)
class ImageSpec:
    """An image; with ``platforms`` it is an index whose children share ``media``."""
    key: str
    names: list[str]
    layers: list[Layer] = field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=lambda: [PATH_ENV])
    user: str = ""
    workdir: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)
    media: str = "docker"  # "docker" | "oci"
    platform: Platform = Platform()
    platforms: list[ImageSpec] = field(default_factory=list)


def d(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, tarfile.DIRTYPE, mode)


def f(path: str, data: bytes | str, mode: int = 0o644) -> Entry:
    raw = data.encode() if isinstance(data, str) else data
    return Entry(path, mode=mode, size=len(raw), opener=lambda: io.BytesIO(raw))


def host_file(path: str, source: str, mode: int = 0o755) -> Entry:
    return Entry(path, mode=mode, size=os.stat(source).st_size, opener=lambda: open(source, "rb"))


def symlink(path: str, target: str) -> Entry:
    return Entry(path, tarfile.SYMTYPE, 0o777, linkname=target)


class RandomStream(io.RawIOBase):
    """``size`` seeded pseudo-random bytes, generated in fixed chunks so the
    content does not depend on the reader's read sizes."""

    def __init__(self, seed: int, size: int) -> None:
        self.rng, self.left, self.buf = random.Random(seed), size, b""

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        while len(self.buf) < n:
            self.buf += self.rng.randbytes(CHUNK)
        out, self.buf = self.buf[:n], self.buf[n:]
        self.left -= n
        return out


PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
default-user:x:1000:1000:Default User:/home/default-user:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
www-data:x:33:
default-user:x:1000:
group-defined-in-image:x:50000:default-user
nogroup:x:65534:
nobody:x:65534:
"""


@lru_cache(maxsize=1)
def busybox_entries() -> list[Entry]:
    applets = subprocess.run([BUSYBOX_BIN, "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    entries = [d(p) for p in ("bin", "etc", "root", "home", "proc", "sys", "dev", "var",
                              "usr", "usr/bin")]
    entries += [d("tmp", 0o1777), host_file("bin/busybox", BUSYBOX_BIN),
                f("etc/passwd", PASSWD), f("etc/group", GROUP), f("etc/hostname", "")]
    names = sorted((set(applets) | {"sh"}) - {"busybox"})
    return entries + [symlink(f"bin/{name}", "busybox") for name in names if "/" not in name]


def arch_layer(value: str) -> Layer:
    return Layer(f"arch-{value}", lambda: [d("etc"), f("etc/arch", value + "\n")])


BUSYBOX = Layer("busybox", busybox_entries)
WHITEOUTS_A = Layer("whiteouts-a", lambda: [
    d("data"), d("data/opaque"), f("data/keep", "keep\n"), f("data/gone", "gone\n"),
    f("data/opaque/old1", "old1\n"), f("data/opaque/old2", "old2\n")])
WHITEOUTS_B = Layer("whiteouts-b", lambda: [
    d("data"), d("data/opaque"), f("data/.wh.gone", ""), f("data/opaque/.wh..wh..opq", ""),
    f("data/opaque/new", "new\n")])
ZSTD_MARKER = Layer("zstd-marker", lambda: [d("etc"), f("etc/compression", "zstd\n")],
                    compression="zstd")
EVIL_DOTDOT = Layer("evil-dotdot", lambda: [d("etc"), f("../pycri-evil-dotdot", "escaped\n")])
EVIL_SYMLINK = Layer("evil-symlink", lambda: [symlink("link", "/tmp"), f("link/pycri-evil-symlink", "escaped\n")])
EVIL_HARDLINK = Layer("evil-hardlink", lambda: [
    d("etc"), Entry("etc/shadow-link", type=tarfile.LNKTYPE, linkname="../../../../etc/shadow")])
CORRUPT = Layer("corrupt", lambda: [d("data"), f("data/corrupt-me", "x" * 4096)])
BIG_SIZE = 100 << 20
BIG = Layer("big", lambda: [d("data"), Entry("data/blob", size=BIG_SIZE,
                                             opener=lambda: RandomStream(42, BIG_SIZE))], level=1)


def multiarch(key: str, name: str, media: str) -> ImageSpec:
    arm64, armv7 = Platform(architecture="arm64"), Platform(architecture="arm", variant="v7")
    return ImageSpec(key, [name], media=media, platforms=[
        ImageSpec(key, [], [BUSYBOX, arch_layer("amd64")], cmd=["sh"]),
        ImageSpec(key, [], [arch_layer("arm64")], cmd=["sh"], platform=arm64),
        ImageSpec(key, [], [arch_layer("arm/v7")], cmd=["sh"], platform=armv7),
    ])


IMAGES: list[ImageSpec] = [
    ImageSpec("busybox", ["docker.io/library/busybox:latest", "docker.io/library/busybox:1.36"],
              [BUSYBOX], cmd=["sh"]),
    ImageSpec("zstd", ["docker.io/pycri/zstd:latest"],
              [dataclasses.replace(BUSYBOX, compression="zstd"), ZSTD_MARKER], cmd=["sh"], media="oci"),
    multiarch("multiarch", "docker.io/pycri/multiarch:latest", "oci"),
    multiarch("multiarch-docker", "docker.io/pycri/multiarch-docker:latest", "docker"),
    ImageSpec("whiteouts", ["docker.io/pycri/whiteouts:latest"],
              [BUSYBOX, WHITEOUTS_A, WHITEOUTS_B], cmd=["sh"]),
    ImageSpec("user-uid", ["docker.io/pycri/user-uid:latest"], [BUSYBOX], cmd=["sh"], user="1002"),
    ImageSpec("user-name", ["docker.io/pycri/user-name:latest"], [BUSYBOX], cmd=["sh"],
              user="www-data"),
    ImageSpec("user-uid-group", ["docker.io/pycri/user-uid-group:latest"], [BUSYBOX], cmd=["sh"],
              user="1003:1004"),
    ImageSpec("big", ["docker.io/pycri/big:latest"], [BUSYBOX, BIG], cmd=["sh"]),
    # Hostile images: pycri must refuse them and keep nothing of them.
    ImageSpec("evil-dotdot", ["docker.io/pycri/evil-dotdot:latest"], [EVIL_DOTDOT]),
    ImageSpec("evil-symlink", ["docker.io/pycri/evil-symlink:latest"], [EVIL_SYMLINK]),
    ImageSpec("evil-hardlink", ["docker.io/pycri/evil-hardlink:latest"], [EVIL_HARDLINK]),
    # tests corrupt this image's layer in the registry's storage to check digest verification
    ImageSpec("corrupt", ["docker.io/pycri/corrupt:latest"], [CORRUPT]),
]


# --------------------------------------------------------------------------- critest images
#
# Every image critest v1.37.0 pulls (sigs.k8s.io/cri-tools pkg/validate, pkg/framework,
# pkg/benchmark), rebuilt from busybox-static and files written here, under the upstream names
# (hack/critest.sh runs the suite).  What the specs need of each image is noted at its entry.
# Left out: gcr.io/k8s-staging-cri-tools/test-image-digest, which critest pulls by the digest of
# the upstream bytes (@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf):
# no rebuild has that digest, so "public image with digest should be pulled and removed" fails.
#
# Like upstream busybox (which the e2e and cri-tools test images are built on), every applet is
# a hard link to /bin/busybox, so masking /bin/ls (MaskedPaths) masks ls alone.  But not the
# shell: Debian builds busybox-static with FEATURE_SH_STANDALONE and FEATURE_PREFER_APPLETS, so
# its sh runs `ls` as a built-in applet without looking at PATH, and `/bin/sh -c ls` in a
# container with /bin/ls masked would still list the directory, where "runtime should support
# MaskedPaths" wants "/bin/sh: ls: Permission denied" (upstream's sh execs /bin/ls, a
# /dev/null bind mount there: EACCES).  So /bin/sh and /bin/ash are the ash of Debian's
# dynamically linked `busybox` package (built without those options: it execs every external
# command from PATH, like upstream's), with the shared libraries it loads (from the host) at
# the paths ldd names; every other applet stays busybox-static's.

CRITEST = "gcr.io/k8s-staging-cri-tools/"
E2E = "registry.k8s.io/e2e-test-images/"

# upstream busybox's users and groups (critest: `id -nu` of uid 65534 prints nobody;
# test-image-user-username's USER is www-data)
BUSYBOX_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
BUSYBOX_GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
mail:x:8:
wheel:x:10:root
www-data:x:33:
operator:x:37:
staff:x:50:
users:x:100:
nogroup:x:65534:
"""


# Debian's busybox-static has no ipcs and no pgrep, which critest runs in the default image
# (HostIpc: `ipcs -m` lists the IPC namespace's shared memory; execSync timeout:
# `sh -c "pgrep sleep || true"` must print nothing): shell stand-ins in /usr/bin.
IPCS_SCRIPT = r"""#!/bin/sh
# ipcs stand-in written by pycri's hack/testimages.py (Debian's busybox-static has none):
# `ipcs [-a|-m|-q|-s]...` prints the System V IPC objects of the IPC namespace, read from
# /proc/sysvipc, in util-linux's layout.
m= q= s=
for arg; do
    case $arg in
        -m) m=1 ;;
        -q) q=1 ;;
        -s) s=1 ;;
        -a) m=1 q=1 s=1 ;;
        *) echo "ipcs: unsupported option $arg" >&2; exit 1 ;;
    esac
done
[ -n "$m$q$s" ] || m=1 q=1 s=1
# table TITLE HEADER FILE COLUMNS UID-COLUMN: one section: key, id, owner and perms, then
# the fields COLUMNS (numbers) of the /proc/sysvipc file; its field UID-COLUMN is the owner
table() {
    printf '\n------ %s --------\n%s\n' "$1" "$2"
    [ -r "$3" ] || return 0
    awk -v cols="$4" 'function hex(n,  s, i) {    # busybox awk clamps %x to 31 bits
            if (n < 0) n += 4294967296
            for (i = 0; i < 8; i++) { s = substr("0123456789abcdef", n % 16 + 1, 1) s; n = int(n / 16) }
            return "0x" s
        }
        BEGIN {
            while ((getline line < "/etc/passwd") > 0) { split(line, p, ":"); user[p[3]] = p[1] }
        }
        NR > 1 {
            key = hex($1)
            owner = ($uidcol in user) ? user[$uidcol] : $uidcol
            n = split(cols, c, " "); out = sprintf("%-10s %-10s %-10s %-10s", key, $2, owner, $3)
            for (i = 1; i <= n; i++) out = out sprintf(" %-10s", $c[i])
            print out
        }' uidcol="$5" "$3"
}
[ -z "$m" ] || table "Shared Memory Segments" \
    "key        shmid      owner      perms      bytes      nattch     status" \
    /proc/sysvipc/shm "4 7" 8
[ -z "$q" ] || table "Message Queues" \
    "key        msqid      owner      perms      used-bytes   messages" \
    /proc/sysvipc/msg "4 5" 8
[ -z "$s" ] || table "Semaphore Arrays" \
    "key        semid      owner      perms      nsems" \
    /proc/sysvipc/sem "4" 5
echo
"""
PGREP_SCRIPT = r"""#!/bin/sh
# pgrep stand-in written by pycri's hack/testimages.py (Debian's busybox-static has none):
# `pgrep [-f] [-x] PATTERN` prints the pids of the processes whose name (with -f: command
# line) matches the extended regular expression PATTERN, itself and its children left out;
# exit status 1 if there are none.
full= exact=
while [ $# -gt 1 ]; do
    case $1 in
        -f) full=1 ;;
        -x) exact=1 ;;
        *) echo "pgrep: unsupported option $1" >&2; exit 2 ;;
    esac
    shift
done
[ $# -eq 1 ] || { echo "usage: pgrep [-f] [-x] PATTERN" >&2; exit 2; }
pattern=$1
[ -z "$exact" ] || pattern="^($pattern)\$"
status=1
for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    [ "$pid" != $$ ] || continue
    IFS= read -r stat <"$dir/stat" 2>/dev/null || continue
    set -- ${stat##*) }
    [ "$2" != $$ ] || continue
    if [ -n "$full" ]; then
        name=$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null)
        name=${name% }
    else
        IFS= read -r name <"$dir/comm" 2>/dev/null || continue
    fi
    [ -n "$name" ] || continue
    if printf '%s\n' "$name" | grep -Eq -- "$pattern"; then
        echo "$pid"
        status=0
    fi
done
exit $status
"""


BUSYBOX_SH_PACKAGE = "busybox"  # Debian's dynamically linked busybox (Conflicts: busybox-static)
BUSYBOX_SH_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pycri"


class BusyboxShError(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(f"hack/testimages.py: critest images' /bin/sh (Debian's "
                         f"{BUSYBOX_SH_PACKAGE} package, downloaded with apt-get download): "
                         f"{message}")


def busybox_sh_deb(tmp: Path) -> Path:
    """The .deb of Debian's ``busybox`` package: the version of the installed busybox-static
    (one source package, so the shell is the same build as the other applets) if the archive
    still has it, else the candidate version.  Kept in ~/.cache/pycri so that rebuilds work
    offline and give the same digests."""
    for tool in ("apt-get", "dpkg-deb", "dpkg-query", "ldd"):
        if not shutil.which(tool):
            raise BusyboxShError(f"{tool} not found: this needs a Debian (apt, dpkg, libc-bin)")
    query = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "busybox-static"],
                           capture_output=True, text=True)
    version = query.stdout.strip() if query.returncode == 0 else ""
    cached = BUSYBOX_SH_CACHE / f"{BUSYBOX_SH_PACKAGE}_{version}.deb"
    if version and cached.is_file():
        return cached
    errors = []
    for wanted in ([f"{BUSYBOX_SH_PACKAGE}={version}"] if version else []) + [BUSYBOX_SH_PACKAGE]:
        run = subprocess.run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root",
                              wanted], cwd=tmp, capture_output=True, text=True)
        debs = sorted(tmp.glob(f"{BUSYBOX_SH_PACKAGE}_*.deb"))
        if run.returncode == 0 and len(debs) == 1:
            got = subprocess.run(["dpkg-deb", "-f", str(debs[0]), "Version"], check=True,
                                 capture_output=True, text=True).stdout.strip()
            try:
                BUSYBOX_SH_CACHE.mkdir(parents=True, exist_ok=True)
                keep = BUSYBOX_SH_CACHE / f"{BUSYBOX_SH_PACKAGE}_{got}.deb"
                shutil.copyfile(debs[0], keep.with_suffix(".tmp"))
                os.replace(keep.with_suffix(".tmp"), keep)
            except OSError:
                pass  # no cache: download again next time
            return debs[0]
        errors.append(f"`apt-get download {wanted}`: {(run.stderr or run.stdout).strip()}")
    raise BusyboxShError("; ".join(errors) + " (run `apt-get update` first; Debian's archive must"
                         " be reachable, or the .deb be in " + str(BUSYBOX_SH_CACHE) + ")")


@lru_cache(maxsize=1)
def busybox_sh() -> tuple[bytes, list[tuple[str, str]]]:
    """Debian's dynamically linked busybox, whose ash execs external commands from PATH
    (checked), and the shared libraries it loads: (the binary, [(path in the image, host
    file)]), the paths in the image being those ldd names (the ELF interpreter's included)."""
    with tempfile.TemporaryDirectory(prefix="testimages-busybox-") as tmp:
        deb, root = busybox_sh_deb(Path(tmp)), Path(tmp, "root")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        binary = next((p for p in (root / "bin/busybox", root / "usr/bin/busybox")
                       if p.is_file()), None)
        if binary is None:
            raise BusyboxShError(f"{deb.name} has no bin/busybox")
        # With FEATURE_SH_STANDALONE, ash would run `ls` as an applet whatever PATH is.
        check = subprocess.run([str(binary), "sh", "-c", "ls /"], capture_output=True, text=True,
                               env={"PATH": "/nonexistent"})
        if check.returncode != 127 or "ls: not found" not in check.stderr:
            raise BusyboxShError(f"{deb.name}'s sh runs applets without PATH (SH_STANDALONE):"
                                 f" `sh -c ls` with an empty PATH exited {check.returncode}")
        ldd = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True)
        libs = []
        for line in ldd.stdout.splitlines():
            path = line.split("=>")[-1].split("(")[0].strip()
            if path.startswith("/"):
                libs.append((path.lstrip("/"), os.path.realpath(path)))
            elif "vdso" not in line:
                raise BusyboxShError(f"ldd {binary.name}: cannot place {line.strip()!r}")
        if not libs:
            raise BusyboxShError(f"ldd {binary.name} named no libraries:\n{ldd.stdout}")
        return binary.read_bytes(), sorted(libs)


def busybox_linked_entries() -> list[Entry]:
    """Upstream busybox's layout, /bin/busybox and a hard link to it per applet in /bin, plus
    /usr/bin/ipcs and /usr/bin/pgrep; but /bin/sh and /bin/ash are Debian's dynamically linked
    busybox, beside the shared libraries it loads."""
    applets = subprocess.run([BUSYBOX_BIN, "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    sh, libs = busybox_sh()
    dirs = ["bin", "dev", "etc", "home", "proc", "sys", "usr", "usr/bin", "usr/sbin", "var",
            "var/log", "var/run", "var/spool", "var/spool/mail", "var/www"]
    for path, _ in libs:
        parents = Path(path).parents
        dirs += [str(p) for p in reversed(parents[:-1]) if str(p) not in dirs]
    entries = [d(p) for p in dirs] + [d("root", 0o700), d("tmp", 0o1777)]
    entries += [host_file("bin/busybox", BUSYBOX_BIN), f("etc/passwd", BUSYBOX_PASSWD),
                f("etc/group", BUSYBOX_GROUP)]
    entries += [f(f"usr/bin/{name}", script, 0o755) for name, script in
                (("ipcs", IPCS_SCRIPT), ("pgrep", PGREP_SCRIPT)) if name not in applets]
    entries += [f("bin/sh", sh, 0o755),
                Entry("bin/ash", tarfile.LNKTYPE, 0o755, linkname="bin/sh")]
    entries += [host_file(path, source) for path, source in libs]
    names = sorted(set(applets) - {"busybox", "sh", "ash"})
    return entries + [Entry(f"bin/{name}", tarfile.LNKTYPE, 0o755, linkname="bin/busybox")
                      for name in names if "/" not in name]


def tiny_elf(code: bytes) -> bytes:
    """A static x86-64 Linux executable of position-independent ``code``: the ELF header, a
    PT_LOAD segment mapping the whole file read+execute at 0x400000, a PT_GNU_STACK entry
    (stack not executable), and the code right after the headers as the entry point."""
    base, headers = 0x400000, 64 + 2 * 56
    size = headers + len(code)
    ehdr = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack(
        "<HHIQQQIHHHHHH", 2, 0x3E, 1, base + headers, 64, 0, 0, 64, 56, 2, 0, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    stack = struct.pack("<IIQQQQQQ", 0x6474E551, 6, 0, 0, 0, 0, 0, 16)
    return ehdr + load + stack + code


# nonewprivs' /usr/local/bin/nnp (setuid root): prints "Effective uid: <geteuid()>\n" in ONE
# write (two writes could become two CRI log lines) and exits 0.  Machine code of the listing
# beside it (GNU as, Intel syntax); busybox cannot do this, as it drops setuid privileges.
NNP_CODE = bytes.fromhex("".join([
    "b86b000000",      # 00 mov eax, 107             ; geteuid()
    "0f05",            # 05 syscall
    "4883ec40",        # 07 sub rsp, 64              ; a buffer on the stack
    "488d7c243f",      # 0b lea rdi, [rsp+63]        ; its last byte
    "c6070a",          # 10 mov byte [rdi], '\n'
    "b90a000000",      # 13 mov ecx, 10
    "31d2",            # 18 digit: xor edx, edx
    "f7f1",            # 1a div ecx                  ; eax /= 10, edx = eax % 10
    "80c230",          # 1c add dl, '0'
    "48ffcf",          # 1f dec rdi
    "8817",            # 22 mov [rdi], dl            ; digits right to left
    "85c0",            # 24 test eax, eax
    "75f0",            # 26 jnz digit
    "488d352d000000",  # 28 lea rsi, [rip+prefix]
    "b90f000000",      # 2f mov ecx, 15              ; len("Effective uid: ")
    "4829cf",          # 34 sub rdi, rcx
    "4989f8",          # 37 mov r8, rdi              ; start of the line
    "f3a4",            # 3a rep movsb                ; prefix before the digits
    "4c89c6",          # 3c mov rsi, r8
    "488d542440",      # 3f lea rdx, [rsp+64]
    "4829f2",          # 44 sub rdx, rsi             ; length up to and with '\n'
    "b801000000",      # 47 mov eax, 1               ; write(1, line, length)
    "bf01000000",      # 4c mov edi, 1
    "0f05",            # 51 syscall
    "31ff",            # 53 xor edi, edi
    "b8e7000000",      # 55 mov eax, 231             ; exit_group(0)
    "0f05",            # 5a syscall
])) + b"Effective uid: "  # 5c prefix

# pause's /pause: waits in pause(2) until SIGTERM or SIGINT, then exits 0 (its handler never
# returns, so the SA_RESTORER x86-64 wants can point anywhere: the handler itself).
PAUSE_CODE = bytes.fromhex("".join([
    "488d053b000000",  # 00 lea rax, [rip+handler]
    "6a00",            # 07 push 0                   ; struct sigaction, built downwards:
    "50",              # 09 push rax                 ;   sa_mask 0, sa_restorer,
    "6800000004",      # 0a push 0x04000000          ;   sa_flags SA_RESTORER,
    "50",              # 0f push rax                 ;   sa_handler
    "bf0f000000",      # 10 mov edi, 15              ; SIGTERM
    "e813000000",      # 15 call install
    "bf02000000",      # 1a mov edi, 2               ; SIGINT
    "e809000000",      # 1f call install
    "b822000000",      # 24 wait: mov eax, 34        ; pause()
    "0f05",            # 29 syscall
    "ebf7",            # 2b jmp wait
    "488d742408",      # 2d install: lea rsi, [rsp+8] ; the struct, above the return address
    "31d2",            # 32 xor edx, edx             ; no old action
    "41ba08000000",    # 34 mov r10d, 8              ; sizeof(sigset_t)
    "b80d000000",      # 3a mov eax, 13              ; rt_sigaction(edi, rsi, 0, 8)
    "0f05",            # 3f syscall
    "c3",              # 41 ret
    "31ff",            # 42 handler: xor edi, edi
    "b8e7000000",      # 44 mov eax, 231             ; exit_group(0)
    "0f05",            # 49 syscall
]))

# nginx stand-in.  critest wants of nginx: GET / answers 200 on the port; the container's first
# process writes /var/run/nginx.pid with its pid, is named nginx (`pidof nginx` from a
# host-PID container lists it) and has "master process" in /proc/<pid>/cmdline (with a
# container PID namespace it is pid 1; with a pod PID namespace it must not be pid 1).
NGINX_SCRIPT = r"""#!/bin/sh
# nginx stand-in written by pycri's hack/testimages.py: busybox httpd serves
# /usr/share/nginx/html on the port of the "listen" line of /etc/nginx/conf.d/default.conf.
# Like nginx, the master process (this script, named "nginx") writes /var/run/nginx.pid and
# shows "nginx: master process" in its command line, a worker process (also named "nginx")
# serves, and SIGTERM, SIGINT or SIGQUIT stop both.
if [ "$1" != --master ]; then
    # Re-exec as the master, in the same process: through /usr/lib/nginx/nginx, a link to
    # busybox named nginx (the process name), with an argv[0] that holds "master process"
    # and ends in /sh (busybox picks the applet from argv[0]'s last path component).
    exec -a "nginx: master process /bin/sh" /usr/lib/nginx/nginx /usr/sbin/nginx --master "$@"
fi
port=$(sed -n 's/^[[:space:]]*listen[[:space:]]*\([0-9][0-9]*\);.*/\1/p' \
    /etc/nginx/conf.d/default.conf | head -n 1)
port=${port:-80}
worker=
trap 'kill -TERM $worker 2>/dev/null; rm -f /var/run/nginx.pid; exit 0' TERM INT QUIT
mkdir -p /var/run
echo $$ >/var/run/nginx.pid.new && mv /var/run/nginx.pid.new /var/run/nginx.pid
echo "nginx: master process $$ serving /usr/share/nginx/html on port $port (busybox httpd)"
(exec -a "nginx: worker process /bin/httpd" /usr/lib/nginx/nginx -f -v -p "$port" \
    -h /usr/share/nginx/html) &
worker=$!
wait $worker
"""


def nginx_conf(port: int) -> str:
    return (f"server {{\n    listen       {port};\n    server_name  localhost;\n\n"
            "    location / {\n        root   /usr/share/nginx/html;\n"
            "        index  index.html index.htm;\n    }\n}\n")


NGINX_CONF_DIRS = [d("etc"), d("etc/nginx"), d("etc/nginx/conf.d")]
NGINX = Layer("critest-nginx", lambda: NGINX_CONF_DIRS + [
    d("usr"), d("usr/sbin"), d("usr/lib"), d("usr/lib/nginx"), d("usr/share"),
    d("usr/share/nginx"), d("usr/share/nginx/html"), d("var"), d("var/log"),
    d("var/log/nginx"), d("var/run"),
    f("usr/sbin/nginx", NGINX_SCRIPT, 0o755), symlink("usr/lib/nginx/nginx", "/bin/busybox"),
    f("etc/nginx/conf.d/default.conf", nginx_conf(80)),
    f("usr/share/nginx/html/index.html",
      "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n"
      "<body><h1>Welcome to nginx!</h1></body></html>\n")])
# images/hostnet-nginx of cri-tools: nginx with default.conf listening on 12003
NGINX_12003 = Layer("critest-nginx-12003", lambda: NGINX_CONF_DIRS + [
    f("etc/nginx/conf.d/default.conf", nginx_conf(12003))])

# httpd stand-in.  critest wants: GET / answers 200 on :80, the container log contains "httpd"
# (Apache's start-up warning does upstream), `echo` works in the container.
HTTPD_FOREGROUND = r"""#!/bin/sh
# Apache httpd stand-in written by pycri's hack/testimages.py: busybox httpd serves
# /usr/local/apache2/htdocs on port 80 and logs requests to stderr; SIGTERM or SIGINT stop it.
server=
trap 'kill -TERM $server 2>/dev/null; exit 0' TERM INT
echo "httpd: busybox httpd serving /usr/local/apache2/htdocs on port 80" >&2
/bin/httpd -f -v -p 80 -h /usr/local/apache2/htdocs &
server=$!
wait $server
"""
HTTPD = Layer("critest-httpd", lambda: [
    d("usr"), d("usr/local"), d("usr/local/bin"), d("usr/local/apache2"),
    d("usr/local/apache2/htdocs"), d("usr/local/apache2/logs"),
    f("usr/local/bin/httpd-foreground", HTTPD_FOREGROUND, 0o755),
    f("usr/local/apache2/htdocs/index.html", "<html><body><h1>It works!</h1></body></html>\n")])

NNP = Layer("critest-nonewprivs", lambda: [
    d("usr"), d("usr/local"), d("usr/local/bin"),
    f("usr/local/bin/nnp", tiny_elf(NNP_CODE), 0o4755)])
PAUSE = Layer("critest-pause", lambda: [f("pause", tiny_elf(PAUSE_CODE), 0o755)])

# cri-tools images/image-predefined-group: adduser -u 1000 -D default-user, addgroup -g 50000
# group-defined-in-image, addgroup default-user group-defined-in-image
PREDEFINED_GROUP = Layer("critest-predefined-group", lambda: [
    d("etc"), d("home"), d("home/default-user"),
    f("etc/passwd", BUSYBOX_PASSWD + "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n"),
    f("etc/group", BUSYBOX_GROUP + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n")])


def marker(name: str) -> Layer:
    """cri-tools images/image-test: `ADD <name> <name>`, an empty file named after the test."""
    return Layer(f"critest-file-{name}", lambda: [f(name, "")])


BUSYBOX_LINKED = Layer("busybox-hardlinks", busybox_linked_entries)


def listed(key: str, names: list[str], layers: list[Layer], **config: Any) -> ImageSpec:
    """A Docker manifest list holding one linux/amd64 image, the shape of the multi-arch
    upstream images."""
    return ImageSpec(key, names, platforms=[ImageSpec(key, [], layers, **config)])


def busybox_based(key: str, names: list[str], *layers: Layer, **config: Any) -> ImageSpec:
    return listed(key, names, [BUSYBOX_LINKED, *layers], **({"cmd": ["sh"]} | config))


CRITEST_IMAGES: list[ImageSpec] = [
    # The default image of nearly every spec.  Commands run in it: top, sh -c, sleep, echo,
    # id -u/-g/-G/-nu, hostname, cat, pgrep, pidof, ls -A, touch, mkdir, mount --bind, dd,
    # ipcs -m, brctl addbr, ping, netstat -ln, seq, grep, chmod, sync; user nobody.
    # public.ecr.aws/...busybox:1.35.0-glibc is the image the benchmarks pull.
    busybox_based("critest-busybox", [E2E + "busybox:1.29-2",
                                      "public.ecr.aws/docker/library/busybox:1.35.0-glibc"]),
    # Security Context (HostPID, PodPID, ContainerPID) and Networking/Streaming web server:
    # no command given, so CMD runs; port 80; nginx pid file, process name and command line.
    busybox_based("critest-nginx", [E2E + "nginx:1.14-2"], NGINX,
                  cmd=["nginx", "-g", "daemon off;"], exposed_ports=["80/tcp"]),
    # Streaming "portforward in host network": serves 12003 in the host's network namespace.
    # Upstream pushes it per architecture, a plain manifest.
    ImageSpec("critest-hostnet-nginx", [CRITEST + "hostnet-nginx-amd64:latest"],
              [BUSYBOX_LINKED, NGINX, NGINX_12003], cmd=["nginx", "-g", "daemon off;"],
              exposed_ports=["80/tcp"]),
    # Multiple Containers: web server on :80 whose log contains "httpd"; `echo httpd`.
    busybox_based("critest-httpd", [E2E + "httpd:2.4.39-4"], HTTPD, cmd=["httpd-foreground"],
                  env=["PATH=/usr/local/apache2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin"
                       ":/usr/bin:/sbin:/bin", "HTTPD_PREFIX=/usr/local/apache2"],
                  workdir="/usr/local/apache2", exposed_ports=["80/tcp"]),
    # NoNewPrivs: run as uid 1000, the setuid-root entrypoint prints "Effective uid: 1000"
    # with no_new_privs and "Effective uid: 0" without.
    busybox_based("critest-nonewprivs", [E2E + "nonewprivs:1.3"], NNP, cmd=None,
                  entrypoint=["/usr/local/bin/nnp"]),
    # Image Manager / Image Identifier Consistency: one image (one config digest) under both
    # names; it runs with no command, so its entrypoint must keep running.
    listed("critest-pause", ["registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"], [PAUSE],
           entrypoint=["/pause"], user="65535:65535"),
    # Image Manager, Image Consistency, Image Identifier Consistency, Image Volume: :test and
    # :all are two images; :test also runs with no command (CMD sh) and, in Image Volume,
    # `sh -c top`, ls, touch and its own /bin/ls from the mount.
    busybox_based("critest-tag-test", [CRITEST + "test-image-tag:test"], marker("test")),
    busybox_based("critest-tag-all", [CRITEST + "test-image-tag:all"], marker("all")),
    busybox_based("critest-latest", [CRITEST + "test-image-latest:latest"],
                  marker("test-image-latest")),
    # three distinct image ids, each listed with exactly its one tag
    *[busybox_based(f"critest-image-{n}", [CRITEST + f"test-image-{n}:latest"],
                    marker(f"test-image-{n}")) for n in (1, 2, 3)],
    # one image id under three tags
    busybox_based("critest-tags", [CRITEST + f"test-image-tags:{n}" for n in (1, 2, 3)],
                  marker("same-image")),
    # ImageStatus uid/username from the image's USER (cri-tools images/image-user)
    busybox_based("critest-user-uid", [CRITEST + "test-image-user-uid:latest"], user="1002"),
    busybox_based("critest-user-username", [CRITEST + "test-image-user-username:latest"],
                  user="www-data"),
    busybox_based("critest-user-uid-group", [CRITEST + "test-image-user-uid-group:latest"],
                  user="1003:1004"),
    busybox_based("critest-user-username-group",
                  [CRITEST + "test-image-user-username-group:latest"], user="www-data:1004"),
    # SupplementalGroupsPolicy (`id -G` of uid 1000 is "1000 1234 50000" with Merge) and Image
    # Volume subPath (its /etc holds passwd).
    busybox_based("critest-predefined-group", [CRITEST + "test-image-predefined-group:latest"],
                  PREDEFINED_GROUP, user="1000"),
]
IMAGES += CRITEST_IMAGES


# --------------------------------------------------------------------------- e2e.test images
#
# Images Kubernetes' e2e suite v1.37.2 pulls (test/utils/image/manifest.go; hack/conformance.sh
# runs the suite), under the upstream names. Not built by default (agnhost and busybox are
# binaries hack/build-e2e.sh builds; glibc-dns-testing is unpacked from Debian packages apt
# downloads): `hack/testimages.py --e2e`, or --only with their keys or names.
# What the specs need of each image is noted at its entry; the manifest's other images
# (perl, ipc-utils, resource-consumer, volume/nfs, ...) are not built yet.

E2E_BIN = Path(os.environ.get("PYCRI_E2E_BIN", "/usr/local/lib/pycri/kube/e2e"))


class E2eBinaryError(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(f"hack/testimages.py: e2e images: {message} (run hack/build-e2e.sh; "
                         f"PYCRI_E2E_BIN names its output directory, default {E2E_BIN})")


def e2e_file(name: str) -> str:
    """A file hack/build-e2e.sh installs in $PYCRI_E2E_BIN."""
    path = E2E_BIN / name
    if not path.is_file():
        raise E2eBinaryError(f"{path} is missing")
    return str(path)


def upstream_busybox_entries() -> list[Entry]:
    """Docker's busybox image (the base of registry.k8s.io's busybox:1.37.0-2): /bin/busybox
    (upstream busybox 1.37, static, of hack/images/busybox.sh, which hack/build-e2e.sh copies
    to $PYCRI_E2E_BIN) and a hard link to it per applet in /bin, /usr/bin/env, and the users
    and groups of its /etc.  Its sh is upstream's ash: it keeps environment variables whose
    names are not shell names (``data-1=value-1``), execs every external command from PATH,
    and words a failed redirection ``/bin/sh: can't create /file: Read-only file system``."""
    binary = e2e_file("busybox")
    applets = subprocess.run([binary, "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    dirs = ["bin", "dev", "etc", "home", "proc", "sys", "usr", "usr/bin", "usr/sbin", "var",
            "var/spool", "var/spool/mail", "var/www"]
    entries = [d(p) for p in dirs] + [d("root", 0o700), d("tmp", 0o1777)]
    entries += [host_file("bin/busybox", binary), f("etc/passwd", BUSYBOX_PASSWD),
                f("etc/group", BUSYBOX_GROUP), f("etc/nsswitch.conf", NSSWITCH),
                symlink("usr/bin/env", "../../bin/env")]
    return entries + [Entry(f"bin/{name}", tarfile.LNKTYPE, 0o755, linkname="bin/busybox")
                      for name in sorted(set(applets) - {"busybox"}) if "/" not in name]


NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n"
E2E_BUSYBOX = Layer("e2e-busybox", upstream_busybox_entries)


def e2e_busybox_based(key: str, names: list[str], *layers: Layer, **config: Any) -> ImageSpec:
    """An e2e image on Docker's busybox (E2E_BUSYBOX), CMD sh unless ``config`` says."""
    return listed(key, names, [E2E_BUSYBOX, *layers], **({"cmd": ["sh"]} | config))


def host_program(path: str, source: str) -> list[Entry]:
    """A dynamically linked program of this host at ``path`` in the image, with the shared
    libraries it loads at the paths ldd names (the ELF interpreter's included) and their
    parent directories."""
    ldd = subprocess.run(["ldd", source], check=True, capture_output=True, text=True)
    files = [(path, source)]
    for line in ldd.stdout.splitlines():
        lib = line.split("=>")[-1].split("(")[0].strip()
        if lib.startswith("/"):
            files.append((lib.lstrip("/"), os.path.realpath(lib)))
        elif "vdso" not in line:
            raise SystemExit(f"hack/testimages.py: ldd {source}: cannot place {line.strip()!r}")
    dirs = sorted({str(p) for image_path, _ in files for p in Path(image_path).parents[:-1]})
    return [d(p) for p in dirs] + [host_file(p, src) for p, src in sorted(set(files))]


DEBS_CACHE = Path(os.environ.get("PYCRI_DEBS_CACHE", "/var/cache/pycri/debs"))
# what Debian's slim images leave out (dpkg's path-exclude in debian:*-slim)
SLIM_EXCLUDE = ("usr/share/doc/", "usr/share/man/", "usr/share/info/", "usr/share/locale/",
                "usr/share/lintian/")


@lru_cache(maxsize=None)
def debian_root(name: str, packages: tuple[str, ...]) -> Path:
    """``packages`` and every package they depend on (Depends and Pre-Depends, recursively), as
    this host's apt resolves them (so: Debian's archive of this host's release), downloaded
    with `apt-get download` (nothing is installed) and unpacked into DEBS_CACHE/<name>, with
    /etc/ld.so.cache made by ldconfig; the root is reused while its stamp names the same
    packages, with no network."""
    root, stamp = DEBS_CACHE / name, DEBS_CACHE / f"{name}.stamp"
    if root.is_dir() and stamp.is_file() and stamp.read_text().split("\n")[0] == " ".join(packages):
        return root
    for tool in ("apt-cache", "apt-get", "dpkg-deb", "ldconfig"):
        if not shutil.which(tool):
            raise SystemExit(f"hack/testimages.py: {name}: {tool} not found (needs a Debian)")
    deps = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
         "--no-breaks", "--no-replaces", "--no-enhances", *packages],
        check=True, capture_output=True, text=True).stdout.splitlines()
    closure = sorted({line for line in deps if line and not line[0].isspace() and line[0] != "<"})
    archives = DEBS_CACHE / "archives"
    archives.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *closure],
                         cwd=archives, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"hack/testimages.py: {name}: apt-get download: {run.stderr.strip()} "
                         "(run `apt-get update` first)")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    unpacked = []
    for package in closure:
        debs = sorted(archives.glob(f"{package}_*.deb"), key=os.path.getmtime)
        if not debs:
            raise SystemExit(f"hack/testimages.py: {name}: no .deb of {package} in {archives}")
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
        unpacked.append(debs[-1].name)
    subprocess.run(["ldconfig", "-r", str(root)], check=True)
    stamp.write_text(" ".join(packages) + "\n" + "\n".join(unpacked) + "\n")
    return root


def tree_entries(root: Path, exclude: tuple[str, ...] = SLIM_EXCLUDE) -> list[Entry]:
    """The directories, files and symbolic links under ``root``, with their modes (hard links
    become copies); paths starting with one of ``exclude`` are left out."""
    entries = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any((rel + "/").startswith(prefix) for prefix in exclude):
            continue
        st = path.lstat()
        if path.is_symlink():
            entries.append(symlink(rel, os.readlink(path)))
        elif path.is_dir():
            entries.append(d(rel, st.st_mode & 0o7777))
        elif path.is_file():
            entries.append(host_file(rel, str(path), st.st_mode & 0o7777))
    return entries


# glibc-dns-testing: upstream is debian:bookworm-slim with dnsutils (and coredns 1.5, which no
# spec runs); the DNS specs (network/dns.go, createProbeCommand) loop in sh over `dig +notcp
# +noall +answer +search NAME A`, `dig +tcp ...` and `getent hosts NAME` (glibc's resolver),
# writing OK files. Here: E2E_BUSYBOX (sh, seq, test) under Debian's bind9-dnsutils and
# libc-bin (getent) with every package they depend on, unpacked from this host's Debian archive.
# (gzip -1: ~70 MB, most of it libicu, which gzip -9 takes half a minute over)
GLIBC_DNS = Layer("e2e-glibc-dns-testing", lambda: tree_entries(
    debian_root("glibc-dns-testing", ("bind9-dnsutils", "libc-bin"))), level=1)


# agnhost's upstream image is alpine with curl, nc, ip, bash and more (test/images/agnhost/
# Dockerfile). Here: Docker's busybox (E2E_BUSYBOX: sh, nc, ip and the other applets), agnhost
# built from the kubernetes module, statically (the image has no libc for it), and beside them:
# - /agnhost-2, a link to agnhost: the entrypoint-override specs (common/node/containers.go)
#   run it as the container's command and check which binary ran;
# - curl with its libraries (this host's): the exec lifecycle hooks run `sh -c "curl ..."`;
# - bash with its libraries (this host's): Probing container "should mark readiness on pods to
#   false ... while pod is in progress of terminating" runs `/bin/bash -c` (alpine's bash);
# - /localhost.crt and /localhost.key of agnhost's porter/: `netexec --https` serves them;
# - /uploads (netexec), user-defined-in-image (uid 1000) in group-defined-in-image
#   (gid 50000): the SupplementalGroups spec of a group defined in the image.
# - nc of netcat-openbsd (as /usr/bin/nc, before busybox's /bin/nc in PATH): the Services specs
#   check reachability with `nc -v -t -w 2` (busybox's nc has no -t), and dig and getent
#   (bind9-dnsutils, libc-bin): the DNS specs' probe loops; from this host's Debian archive,
#   as glibc-dns-testing's (AGNHOST_TOOLS).
# - /var/registry, what `agnhost fake-registry-server` serves: pause:3.10.2 as pause:testing
#   (FAKE_REGISTRY), which the Container Runtime blackbox spec "should be able to pull from
#   private registry with secret" pulls from it.
# Missing against upstream: socat, iperf, util-linux's ipcs (a stand-in is there) and the
# coredns binary; the specs that use them fail.
AGNHOST_PASSWD = BUSYBOX_PASSWD + ("user-defined-in-image:x:1000:1000:Linux User,,,:"
                                   "/home/user-defined-in-image:/bin/sh\n")
AGNHOST_GROUP = BUSYBOX_GROUP + ("user-defined-in-image:x:1000:\n"
                                 "group-defined-in-image:x:50000:user-defined-in-image\n")
AGNHOST = Layer("e2e-agnhost", lambda: [
    host_file("agnhost", e2e_file("agnhost")), symlink("agnhost-2", "agnhost"),
    host_file("localhost.crt", e2e_file("images/agnhost/porter/localhost.crt"), 0o644),
    host_file("localhost.key", e2e_file("images/agnhost/porter/localhost.key"), 0o644),
    d("uploads"), d("etc"), d("home"), d("home/user-defined-in-image"),
    f("etc/passwd", AGNHOST_PASSWD), f("etc/group", AGNHOST_GROUP)], level=1)  # 64 MB: gzip -1
def fake_registry_entries() -> list[Entry]:
    """agnhost's /var/registry (test/images/agnhost/fakeregistryserver: images.txt names
    `pause 3.10.2 testing`, prepare_registry.sh lays it out): the e2e pause image built here
    (e2e-pause, an index of one linux/amd64 image) stored under the tag `testing` as a file
    holding the index's digest, and each manifest and blob at
    <manifests|blobs>/sha256/<first two>/<hash>/data."""
    spec = next(s for s in E2E_IMAGES if s.key == "e2e-pause")
    files: dict[str, bytes] = {}

    def put(kind: str, blob: Blob) -> None:
        digest = blob.digest.removeprefix("sha256:")
        with blob.open() as fh:
            files[f"var/registry/pause/{kind}/sha256/{digest[:2]}/{digest}/data"] = fh.read()

    with tempfile.TemporaryDirectory(prefix="testimages-registry-") as tmp:
        index = Builder(Path(tmp)).build(spec)
        put("manifests", index.blob)
        for child in index.children:
            put("manifests", child.blob)
            for blob in child.blobs:
                put("blobs", blob)
    files["var/registry/pause/manifests/testing"] = (index.blob.digest + "\n").encode()
    dirs = {"/".join(parts[:i]) for path in files for parts in [path.split("/")]
            for i in range(1, len(parts))}
    return [d(path) for path in sorted(dirs)] + [f(path, data) for path, data in files.items()]


FAKE_REGISTRY = Layer("e2e-agnhost-fake-registry", fake_registry_entries)
AGNHOST_TOOLS = Layer("e2e-agnhost-tools", lambda: [
    *tree_entries(debian_root("agnhost-tools", ("bind9-dnsutils", "libc-bin", "netcat-openbsd"))),
    symlink("usr/bin/nc", "/bin/nc.openbsd")], level=1)  # the link Debian's alternatives make
CURL = Layer("e2e-curl", lambda: host_program("usr/bin/curl", "/usr/bin/curl"))
BASH = Layer("e2e-bash", lambda: host_program("bin/bash", "/usr/bin/bash"))
AGNHOST_CONFIG: dict[str, Any] = {
    "entrypoint": ["/agnhost"], "cmd": ["pause"],
    "exposed_ports": ["80/tcp", "8080/tcp", "8081/tcp", "9376/tcp", "5000/tcp"]}

# kitten and nautilus: agnhost's image with a picture and /data.json naming it, CMD
# test-webserver (test/images/kitten, nautilus; the module holds their html/ of 1.9, the
# manifest names 1.8). The Image Volume specs mount kitten and read its /data.json
# ("kitten.jpg") and /etc/os-release ("Alpine Linux": upstream's base is alpine, so the file
# is alpine's, though the image is not).
ALPINE_OS_RELEASE = """\
NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.22.0
PRETTY_NAME="Alpine Linux v3.22"
HOME_URL="https://alpinelinux.org/"
BUG_REPORT_URL="https://gitlab.alpinelinux.org/alpine/aports/-/issues"
"""


def web_pictures(name: str) -> Layer:
    return Layer(f"e2e-{name}", lambda: [
        d("etc"), f("etc/os-release", ALPINE_OS_RELEASE),
        host_file(f"{name}.jpg", e2e_file(f"images/{name}/html/{name}.jpg"), 0o644),
        host_file("data.json", e2e_file(f"images/{name}/html/data.json"), 0o644)])


# sample-apiserver and etcd: the aggregated API server specs ([sig-api-machinery] Aggregator
# "Should be able to support the 1.17 Sample API Server using the current Aggregator"
# [Conformance]; the protocol and OpenAPI v3 specs set up the same) run one pod of both
# (test/e2e/apimachinery/aggregator.go): sample-apiserver with no command (its ENTRYPOINT) and
# the args --etcd-servers=http://127.0.0.1:2379, --tls-cert-file and --tls-private-key-file
# under /apiserver.local.config/certificates (a Secret volume), --audit-log-path=- and
# --audit-log-maxage/maxbackup=0, ready when https :443 /readyz answers; and etcd with the
# command `/usr/local/bin/etcd --listen-client-urls http://127.0.0.1:2379
# --advertise-client-urls http://127.0.0.1:2379` (its data in ./default.etcd of the working
# directory, /).
# - sample-apiserver:1.29.2: upstream is alpine with /sample-apiserver (k8s.io/sample-apiserver
#   v0.29.2, static), ENTRYPOINT ["/sample-apiserver"]. Here: E2E_BUSYBOX (the shell and /tmp
#   alpine has) and the binary of hack/images/sample-apiserver.sh.
# - etcd:3.7.0-0: upstream (kubernetes' cluster/images/etcd) is distroless static with etcd's
#   binaries in /usr/local/bin, WORKDIR /, EXPOSE 2379 2380 4001 7001, no entrypoint; and its
#   migrate tooling (migrate, migrate-if-needed.sh, the bash-static it runs as /bin/sh, /bin/cp),
#   which no spec runs. Here: distroless's users, groups and /tmp, and etcd, etcdctl and etcdutl
#   of hack/images/etcd.sh.
SAMPLE_APISERVER = Layer("e2e-sample-apiserver", lambda: [
    host_file("sample-apiserver", e2e_file("images/sample-apiserver/sample-apiserver"))], level=1)
DISTROLESS_PASSWD = """\
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
"""
DISTROLESS_GROUP = "root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n"
ETCD = Layer("e2e-etcd", lambda: [
    d("etc"), d("home"), d("home/nonroot", 0o700), d("root", 0o700), d("tmp", 0o1777),
    d("usr"), d("usr/local"), d("usr/local/bin"), f("etc/passwd", DISTROLESS_PASSWD),
    f("etc/group", DISTROLESS_GROUP), f("etc/nsswitch.conf", NSSWITCH),
    *[host_file(f"usr/local/bin/{name}", e2e_file(f"images/etcd/{name}"))
      for name in ("etcd", "etcdctl", "etcdutl")]], level=1)  # 58 MB: gzip -1


# nginx stand-in of the critest images; 1.28 differs from 1.27 by a marker file, so the two
# are two images as upstream (specs update a pod from one to the other)
NGINX_CONFIG: dict[str, Any] = {"cmd": ["nginx", "-g", "daemon off;"], "exposed_ports": ["80/tcp"]}

E2E_IMAGES: list[ImageSpec] = [
    # agnhost 2.66.1 (Agnhost) and 2.55 (AgnhostPrev): one image under both tags; its
    # --version says 2.66.1.
    e2e_busybox_based("e2e-agnhost", [E2E + "agnhost:2.66.1", E2E + "agnhost:2.55"], AGNHOST_TOOLS, CURL,
                      BASH, AGNHOST, FAKE_REGISTRY, **AGNHOST_CONFIG),
    e2e_busybox_based("e2e-kitten", [E2E + "kitten:1.8"], CURL, BASH, AGNHOST,
                      web_pictures("kitten"), **(AGNHOST_CONFIG | {"cmd": ["test-webserver"]})),
    e2e_busybox_based("e2e-nautilus", [E2E + "nautilus:1.8"], CURL, BASH, AGNHOST,
                      web_pictures("nautilus"),
                      **(AGNHOST_CONFIG | {"cmd": ["test-webserver"]})),
    # nginx:1.27.0-2 (Nginx) and 1.28.0-2 (NginxNew): GET / answers 200 on :80
    e2e_busybox_based("e2e-nginx", [E2E + "nginx:1.27.0-2"], NGINX, **NGINX_CONFIG),
    e2e_busybox_based("e2e-nginx-new", [E2E + "nginx:1.28.0-2"], NGINX, marker("nginx-1.28"),
                      **NGINX_CONFIG),
    # nonewprivs: CMD nnp, a setuid-root program printing "Effective uid: <euid>" (critest's
    # nonewprivs:1.3 has it as its entrypoint)
    e2e_busybox_based("e2e-nonewprivs", [E2E + "nonewprivs:1.4"], NNP, cmd=["nnp"]),
    # nonroot: USER 1234 (runAsNonRoot specs)
    e2e_busybox_based("e2e-nonroot", [E2E + "nonroot:1.5"], user="1234"),
    # busybox, the default image of most [sig-node] specs (upstream: docker.io's busybox
    # 1.37.0, CMD sh): E2E_BUSYBOX alone. The specs need of it: `sh -c env` prints
    # `data-1=value-1` (ConfigMap/Secret env), /bin/sysctl, hexdump (ConfigMap binary data),
    # sh's "/bin/sh: can't create /file: Read-only file system" (readOnlyRootFilesystem).
    e2e_busybox_based("e2e-busybox", [E2E + "busybox:1.37.0-2"]),
    # glibc-dns-testing:2.1.1 (GlibcDnsTesting): dig and getent, see GLIBC_DNS
    e2e_busybox_based("e2e-glibc-dns-testing", [E2E + "glibc-dns-testing:2.1.1"], GLIBC_DNS),
    # the aggregated API server's pod (see SAMPLE_APISERVER and ETCD)
    e2e_busybox_based("e2e-sample-apiserver", [E2E + "sample-apiserver:1.29.2"], SAMPLE_APISERVER,
                      entrypoint=["/sample-apiserver"], cmd=None),
    listed("e2e-etcd", ["registry.k8s.io/etcd:3.7.0-0"], [ETCD], workdir="/",
           exposed_ports=["2379/tcp", "2380/tcp", "4001/tcp", "7001/tcp"]),
    # the pause image of every pod the specs create with no command of their own
    # (GetPauseImageName); critest's pause, under v1.37.2's tag
    listed("e2e-pause", ["registry.k8s.io/pause:3.10.2"], [PAUSE], entrypoint=["/pause"],
           user="65535:65535"),
]
ALL_IMAGES = IMAGES + E2E_IMAGES


# --------------------------------------------------------------------------- build

@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    path: Path | None = None
    data: bytes = b""

    def open(self) -> BinaryIO:
        return open(self.path, "rb") if self.path else io.BytesIO(self.data)


@dataclass(frozen=True)
class BuiltLayer:
    blob: Blob
    diff_id: str
    compression: str


@dataclass(frozen=True)
class Manifest:
    media_type: str
    blob: Blob  # the manifest bytes
    blobs: list[Blob] = field(default_factory=list)  # config + layers
    children: list[Manifest] = field(default_factory=list)

    def total_size(self) -> int:
        unique: dict[str, int] = {}
        stack = [self]
        while stack:
            m = stack.pop()
            unique.update({b.digest: b.size for b in [m.blob, *m.blobs]})
            stack.extend(m.children)
        return sum(unique.values())


class HashWriter:
    """A write-only file object that hashes and counts what passes through."""

    def __init__(self, sink: Any) -> None:
        self.sink, self.hash, self.size = sink, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def compressor(kind: str, level: int | None, sink: HashWriter) -> Any:
    if kind == "gzip":
        return gzip.GzipFile(filename="", mode="wb", compresslevel=level or 9, fileobj=sink,
                             mtime=0)
    if kind == "zstd":
        return zstandard.ZstdCompressor(level=level or 3).stream_writer(sink, closefd=False)
    if kind == "none":
        return sink
    raise ValueError(f"unknown compression {kind!r}")


def tar_info(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.type, info.mode, info.size = entry.type, entry.mode, entry.size
    info.linkname, info.mtime = entry.linkname, EPOCH
    info.uid, info.gid, info.uname, info.gname = 0, 0, "root", "root"
    return info


def write_layer(layer: Layer, path: Path) -> BuiltLayer:
    # Sorted by path, hard links last: a link's target must come earlier in the archive.
    entries = sorted(layer.entries(), key=lambda e: (e.type == tarfile.LNKTYPE, e.path))
    paths = [e.path for e in entries]
    if len(set(paths)) != len(paths):
        raise ValueError(f"layer {layer.name}: duplicate paths")
    with open(path, "wb") as out:
        blob_hash = HashWriter(out)
        comp = compressor(layer.compression, layer.level, blob_hash)
        diff_hash = HashWriter(comp)
        with tarfile.open(fileobj=diff_hash, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for entry in entries:
                with entry.opener() if entry.opener else nullcontext(None) as src:
                    tar.addfile(tar_info(entry), src)
        comp.close()
    blob = Blob(blob_hash.digest, blob_hash.size, path=path)
    return BuiltLayer(blob, diff_hash.digest, layer.compression)


def json_blob(doc: dict[str, Any], compact: bool = False) -> Blob:
    if compact:
        data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    else:
        data = json.dumps(doc, indent=2).encode()
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), data=data)


def descriptor(media_type: str, blob: Blob) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": blob.digest, "size": blob.size}


def image_config(spec: ImageSpec, diff_ids: list[str]) -> dict[str, Any]:
    fields = {"Entrypoint": spec.entrypoint, "Cmd": spec.cmd, "Env": spec.env, "User": spec.user,
              "WorkingDir": spec.workdir, "Labels": spec.labels,
              "ExposedPorts": {port: {} for port in spec.exposed_ports}}
    history = [{"created": CREATED, "created_by": f"hack/testimages.py layer {layer.name}"}
               for layer in spec.layers]
    return spec.platform.as_dict() | {
        "created": CREATED, "config": {k: v for k, v in fields.items() if v},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history}


def layer_media(media: str, compression: str) -> str:
    if compression not in MEDIA_TYPES[media]:
        raise ValueError(f"{media} manifests have no media type for {compression} layers")
    return MEDIA_TYPES[media][compression]


class Builder:
    """Builds manifests for specs; layer blobs are cached as files in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.layers: dict[tuple[str, str, int | None], BuiltLayer] = {}

    def layer(self, layer: Layer) -> BuiltLayer:
        key = (layer.name, layer.compression, layer.level)
        if key not in self.layers:
            self.layers[key] = write_layer(layer, self.workdir / f"layer-{len(self.layers)}")
        return self.layers[key]

    def build(self, spec: ImageSpec) -> Manifest:
        types = MEDIA_TYPES[spec.media]
        if spec.platforms:
            children = [self.build(dataclasses.replace(child, media=spec.media))
                        for child in spec.platforms]
            entries = [descriptor(c.media_type, c.blob) | {"platform": s.platform.as_dict()}
                       for c, s in zip(children, spec.platforms)]
            doc = {"schemaVersion": 2, "mediaType": types["index"], "manifests": entries}
            return Manifest(types["index"], json_blob(doc), children=children)
        layers = [self.layer(layer) for layer in spec.layers]
        config = json_blob(image_config(spec, [layer.diff_id for layer in layers]), compact=True)
        doc = {"schemaVersion": 2, "mediaType": types["manifest"],
               "config": descriptor(types["config"], config),
               "layers": [descriptor(layer_media(spec.media, layer.compression), layer.blob)
                          for layer in layers]}
        return Manifest(types["manifest"], json_blob(doc), [config] + [b.blob for b in layers])


# --------------------------------------------------------------------------- push

class Registry:
    """A minimal Distribution v2 client over plain HTTP."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.stats: Counter[str] = Counter()
        self.seen: dict[str, str] = {}  # blob digest -> a repository holding it

    def request(self, method: str, url: str, body: Any = None,
                headers: dict[str, str] | None = None,
                expect: int | None = None) -> tuple[int, Message]:
        """One request on a fresh connection; fails unless the status is ``expect`` (if given)."""
        conn = http.client.HTTPConnection(self.host, timeout=600, blocksize=CHUNK)
        try:
            conn.request(method, url, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if expect is not None and response.status != expect:
            raise RuntimeError(f"{method} {url}: HTTP {response.status}: "
                               f"{data[:500].decode(errors='replace')}")
        return response.status, response.headers

    def push_blob(self, repo: str, blob: Blob) -> None:
        if self.request("HEAD", f"/v2/{repo}/blobs/{blob.digest}")[0] == 200:
            self.stats["blobs present"] += 1
            self.seen[blob.digest] = repo
            return
        query = ""
        if (source := self.seen.get(blob.digest)) and source != repo:
            query = "?" + urllib.parse.urlencode({"mount": blob.digest, "from": source})
        status, headers = self.request("POST", f"/v2/{repo}/blobs/uploads/{query}")
        if status == 201:
            self.stats["blobs mounted"] += 1
            return
        if status != 202:
            raise RuntimeError(f"starting upload to {repo}: HTTP {status}")
        location = urllib.parse.urlsplit(headers["Location"])
        url = location.path + (f"?{location.query}&" if location.query else "?")
        url += "digest=" + urllib.parse.quote(blob.digest)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)}
        with blob.open() as body:
            self.request("PUT", url, body, headers, expect=201)
        self.stats["blobs uploaded"] += 1
        self.stats["bytes uploaded"] += blob.size
        self.seen[blob.digest] = repo

    def push_manifest(self, repo: str, ref: str, manifest: Manifest) -> None:
        url = f"/v2/{repo}/manifests/{ref}"
        status, headers = self.request("HEAD", url, headers={"Accept": ACCEPT})
        if status == 200 and headers.get("Docker-Content-Digest") == manifest.blob.digest:
            self.stats["manifests present"] += 1
            return
        _, headers = self.request("PUT", url, manifest.blob.data,
                                  {"Content-Type": manifest.media_type}, expect=201)
        if (got := headers.get("Docker-Content-Digest")) != manifest.blob.digest:
            raise RuntimeError(f"{repo}:{ref}: registry says {got}, built {manifest.blob.digest}")
        self.stats["manifests put"] += 1

    def push(self, repo: str, ref: str, manifest: Manifest) -> None:
        for child in manifest.children:
            self.push(repo, child.blob.digest, child)
        for blob in manifest.blobs:
            self.push_blob(repo, blob)
        self.push_manifest(repo, ref, manifest)


def split_reference(name: str) -> tuple[str, str]:
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return name, "latest"
    return repo, tag


# --------------------------------------------------------------------------- main

def select(only: list[str], e2e: bool = False) -> list[ImageSpec]:
    """IMAGES, or E2E_IMAGES with ``e2e``; with ``only``, those of either list it names."""
    if not only:
        return E2E_IMAGES if e2e else IMAGES
    chosen = [s for s in ALL_IMAGES if s.key in only or set(s.names) & set(only)]
    known = {s.key for s in ALL_IMAGES} | {n for s in ALL_IMAGES for n in s.names}
    if unknown := sorted(set(only) - known):
        sys.exit(f"unknown image(s): {', '.join(unknown)} (see --list)")
    return chosen


def print_table(rows: list[tuple[str, str, int, int]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"\n{'REFERENCE':<{width}}  {'DIGEST':<71}  {'MANIFEST':>8}  {'TOTAL':>11}")
    for name, digest, size, total in rows:
        print(f"{name:<{width}}  {digest:<71}  {size:>8}  {total:>11}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default="127.0.0.1:5000", help="host:port of the registry")
    parser.add_argument("--only", nargs="+", action="extend", default=[], metavar="NAME",
                        help="build only these images (key or full upstream name)")
    parser.add_argument("--list", action="store_true", help="list the images and exit")
    parser.add_argument("--e2e", action="store_true",
                        help="the e2e.test images instead (agnhost needs hack/build-e2e.sh)")
    args = parser.parse_args(argv)
    specs = select(args.only, args.e2e)
    if args.list:
        for spec in specs:
            print(f"{spec.key:<16} {spec.media:<6} {' '.join(spec.names)}")
        return 0

    registry, rows = Registry(args.registry), []
    with tempfile.TemporaryDirectory(prefix="testimages-") as tmp:
        builder = Builder(Path(tmp))
        for spec in specs:
            started = time.monotonic()
            manifest = builder.build(spec)
            built = time.monotonic()
            for name in spec.names:
                registry.push(*split_reference(name), manifest)
                rows.append((name, manifest.blob.digest, manifest.blob.size, manifest.total_size()))
            print(f"{spec.key}: built in {built - started:.2f}s, "
                  f"pushed in {time.monotonic() - built:.2f}s", flush=True)
    print_table(rows)
    print("\n" + ", ".join(f"{k}: {v}" for k, v in sorted(registry.stats.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
