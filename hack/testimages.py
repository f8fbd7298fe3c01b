#!/usr/bin/env python3
"""Build pycri's test images from local files and push them to a v2 registry.

Usage:
    .venv/bin/python hack/testimages.py --registry 127.0.0.1:5000 [--only NAME ...] [--list]

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
    ImageSpec("busybox", ["docker.io/library/busybox:latest", "docker.io/library/busybox:1.36",
                          "registry.k8s.io/e2e-test-images/busybox:1.29-2"], [BUSYBOX], cmd=["sh"]),
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
    entries = sorted(layer.entries(), key=lambda e: e.path)
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

def select(only: list[str]) -> list[ImageSpec]:
    if not only:
        return IMAGES
    chosen = [s for s in IMAGES if s.key in only or set(s.names) & set(only)]
    known = {s.key for s in IMAGES} | {n for s in IMAGES for n in s.names}
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
    args = parser.parse_args(argv)
    specs = select(args.only)
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
