#!/usr/bin/env python3
"""Assemble OCI images from static binaries and push them to a v2 registry (issue 13: the
control-plane images of a kind node, built here from source).

    binary-images.py --registry 127.0.0.1:5100 \\
        registry.k8s.io/kube-apiserver:v1.37.2=/usr/local/lib/pycri/kube/bin/kube-apiserver ...

Each NAME=BINARY[,entrypoint][,base=TAR] becomes a linux/amd64 image holding BINARY as
/usr/local/bin/<its name>, with PATH set (kubeadm's static pod manifests call the binary by name);
`entrypoint` makes the binary the image's Entrypoint (coredns' Deployment passes only args);
`base=TAR` puts an uncompressed root filesystem tarball below it as a first layer (kube-proxy
needs iptables). It is pushed to
<registry>/<NAME's repository, registry host included> (the path-prefixed mirror layout of
hack/pycri.toml: `"registry.k8s.io" = ["http://<registry>/registry.k8s.io"]`). The layer is
deterministic (mtime 0, uid/gid 0, gzip without name or time), so a rebuild gives the same
digests, and blobs already in the registry are not uploaded again. Standard library only.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import io
import json
import os
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    path: Path | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class Reference:
    repository: str  # registry.k8s.io/kube-apiserver
    tag: str

    @classmethod
    def parse(cls, text: str) -> Reference:
        repository, sep, tag = text.rpartition(":")
        if not sep or "/" in tag or "/" not in repository:
            raise ValueError(f"not REGISTRY/REPOSITORY:TAG: {text}")
        return cls(repository, tag)


def binary_layer(binary: Path, workdir: Path) -> tuple[Blob, str]:
    """The gzip layer holding `binary` as usr/local/bin/<name>, and its diff_id."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("usr", "usr/local", "usr/local/bin"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        info = tarfile.TarInfo(f"usr/local/bin/{binary.name}")
        info.size, info.mode, info.mtime = binary.stat().st_size, 0o755, 0
        with binary.open("rb") as f:
            tar.addfile(info, f)
    diff_id = "sha256:" + hashlib.sha256(raw.getbuffer()).hexdigest()
    out = workdir / f"{binary.name}.tar.gz"
    with out.open("wb") as f:
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=1) as gz:
            gz.write(raw.getbuffer())
    digest = "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest()
    return Blob(digest, out.stat().st_size, path=out), diff_id


def base_layer(tarball: Path, workdir: Path) -> tuple[Blob, str]:
    """An uncompressed root filesystem tarball as a gzip layer, and its diff_id."""
    plain = hashlib.sha256()
    out = workdir / (tarball.name + ".gz")
    with tarball.open("rb") as src, out.open("wb") as f:
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=1) as gz:
            while chunk := src.read(1 << 20):
                plain.update(chunk)
                gz.write(chunk)
    digest = hashlib.sha256()
    with out.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return Blob("sha256:" + digest.hexdigest(), out.stat().st_size, path=out), "sha256:" + plain.hexdigest()


def json_blob(document: dict) -> Blob:
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), data=data)


class Registry:
    """The v2 API calls a push needs, over plain HTTP (a registry on this machine)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def request(self, method: str, url: str, body=None, headers: dict | None = None) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection(self.address, timeout=300)
        conn.request(method, url, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response

    def has_blob(self, repository: str, blob: Blob) -> bool:
        return self.request("HEAD", f"/v2/{repository}/blobs/{blob.digest}").status == 200

    def push_blob(self, repository: str, blob: Blob) -> bool:
        if self.has_blob(repository, blob):
            return False
        started = self.request("POST", f"/v2/{repository}/blobs/uploads/")
        if started.status != 202:
            raise RuntimeError(f"upload to {repository}: HTTP {started.status}")
        location = started.headers["Location"]
        if location.startswith("http"):
            location = "/" + location.split("/", 3)[3]
        url = f"{location}{'&' if '?' in location else '?'}digest={blob.digest}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)}
        if blob.path is not None:
            with blob.path.open("rb") as f:
                done = self.request("PUT", url, body=f, headers=headers)
        else:
            done = self.request("PUT", url, body=blob.data, headers=headers)
        if done.status != 201:
            raise RuntimeError(f"blob {blob.digest} to {repository}: HTTP {done.status}")
        return True

    def push_manifest(self, ref: Reference, manifest: Blob) -> None:
        done = self.request("PUT", f"/v2/{ref.repository}/manifests/{ref.tag}", body=manifest.data,
                            headers={"Content-Type": OCI_MANIFEST})
        if done.status != 201:
            raise RuntimeError(f"manifest {ref.repository}:{ref.tag}: HTTP {done.status}")


def push_binary_image(registry: Registry, ref: Reference, binary: Path, workdir: Path, *,
                      entrypoint: bool = False, base: Path | None = None) -> str:
    layers = [base_layer(base, workdir)] if base is not None else []
    layers.append(binary_layer(binary, workdir))
    image_config: dict = {"Env": [PATH_ENV]}
    if entrypoint:
        image_config["Entrypoint"] = [f"/usr/local/bin/{binary.name}"]
    config = json_blob({
        "architecture": "amd64",
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]},
        "history": ([{"created_by": f"pycri hack/kind/binary-images.py: {base.name}"}] if base else []) +
                   [{"created_by": f"pycri hack/kind/binary-images.py: /usr/local/bin/{binary.name}"}],
    })
    manifest = json_blob({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}
                   for layer, _ in layers],
    })
    uploaded = [registry.push_blob(ref.repository, layer) for layer, _ in layers]
    registry.push_blob(ref.repository, config)
    registry.push_manifest(ref, manifest)
    for layer, _ in layers:
        layer.path.unlink()
    size = sum(layer.size for layer, _ in layers)
    print(f"{ref.repository}:{ref.tag} {manifest.digest} ({size} bytes, "
          f"{'uploaded' if any(uploaded) else 'already there'})", file=sys.stderr)
    return manifest.digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", required=True, help="HOST:PORT of a plain-HTTP v2 registry")
    parser.add_argument("images", nargs="+", metavar="NAME=BINARY[,entrypoint][,base=TAR]")
    args = parser.parse_args(argv)
    registry = Registry(args.registry)
    with tempfile.TemporaryDirectory(prefix="binary-images.") as tmp:
        for item in args.images:
            name, sep, rest = item.partition("=")
            binary, *options = rest.split(",")
            base = next((Path(o[5:]) for o in options if o.startswith("base=")), None)
            unknown = [o for o in options if o != "entrypoint" and not o.startswith("base=")]
            if not sep or not os.access(binary, os.X_OK) or unknown or (base and not base.is_file()):
                parser.error(f"not NAME=EXECUTABLE[,entrypoint][,base=TAR]: {item}")
            push_binary_image(registry, Reference.parse(name), Path(binary), Path(tmp),
                              entrypoint="entrypoint" in options, base=base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
