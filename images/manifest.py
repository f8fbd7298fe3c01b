"""Manifests, indexes and image configs: media types, parsing and platform selection."""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from typing import Any

from pycri.common.errors import DataLoss, InvalidArgument, NotFound, ResourceExhausted
from pycri.images.reference import validate_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST]

# Bounds on what a registry can make pycri read and hold (a 600 MB config once took 4.5 GiB):
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # a manifest or an index (registries accept no larger on push)
MAX_CONFIG_BYTES = 8 * 1024 * 1024  # an image config (real ones are KiB; a long history some 100 KiB)
MAX_INDEX_ENTRIES = 1024  # manifests in one index (real ones: a few platforms plus attestations)
MAX_INDEX_DEPTH = 2  # an index may name one more index, no deeper
MAX_LAYERS = 256  # layers of one image (docker stops at 127; overlayfs mount options bound it too)

COMPRESSION_BY_MEDIA_TYPE = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, raw: Any, what: str) -> "Descriptor":
        if not isinstance(raw, dict):
            raise DataLoss(f"{what}: descriptor is not an object")
        try:
            digest = validate_digest(str(raw["digest"]))
            size = raw["size"]
            if type(size) is not int:  # an int64 in JSON; not a float (Infinity, 1e400), string or bool
                raise TypeError(f"size {size!r}")
        except (KeyError, ValueError, TypeError, InvalidArgument) as exc:
            raise DataLoss(f"{what}: bad descriptor {raw!r}") from exc
        if size < 0:
            raise DataLoss(f"{what}: negative size in descriptor {digest}")
        return cls(str(raw.get("mediaType", "")), digest, size, raw.get("platform"))


@dataclass(frozen=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""


def host_platform() -> Platform:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)
    return Platform("linux", arch, "v7" if arch == "arm" else "")


def load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
        raise DataLoss(f"{what} is not valid JSON") from exc
    if not isinstance(doc, dict):
        raise DataLoss(f"{what} is not a JSON object")
    return doc


def kind_of(media_type: str, doc: dict[str, Any]) -> str:
    """'index' or 'manifest' for a document fetched with `media_type`."""
    media_type = doc.get("mediaType") or media_type
    if media_type in INDEX_TYPES or (not media_type and "manifests" in doc):
        return "index"
    if media_type in MANIFEST_TYPES or (not media_type and "config" in doc):
        return "manifest"
    if media_type in DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
        raise InvalidArgument("Docker schema 1 manifests are not supported; push the image again with a current client")
    raise DataLoss(f"unsupported manifest media type {media_type!r}")


def check_size(desc: Descriptor, limit: int, what: str) -> None:
    """Refuse a descriptor that declares more than `limit` bytes, before anything is fetched."""
    if desc.size > limit:
        raise ResourceExhausted(f"{what} {desc.digest} is {desc.size} bytes; pycri accepts at most {limit}")


def _descriptors(doc: dict[str, Any], key: str, limit: int, owner: str, each: str) -> list[Descriptor]:
    """The descriptors listed under `key` of `owner` (an index's manifests, a manifest's layers),
    refused past `limit` before any of them is parsed."""
    raw = doc.get(key) or []
    if not isinstance(raw, list):
        raise DataLoss(f"{owner}: {key} is not a list")
    if len(raw) > limit:
        raise ResourceExhausted(f"{owner} lists {len(raw)} {key}; pycri accepts at most {limit}")
    return [Descriptor.from_json(item, each) for item in raw]


def select_platform(doc: dict[str, Any], wanted: Platform) -> Descriptor:
    """The index entry for `wanted` (an exact variant first, then any variant of the architecture,
    then a nested index that names the platform). An index with more than MAX_INDEX_ENTRIES
    entries is refused."""
    entries = _descriptors(doc, "manifests", MAX_INDEX_ENTRIES, "index", "index")
    matching = [
        d for d in entries
        if isinstance(d.platform, dict)
        and d.platform.get("os") == wanted.os
        and d.platform.get("architecture") == wanted.architecture
    ]
    candidates = [d for d in matching if d.media_type in MANIFEST_TYPES + ("",)]
    for d in candidates:
        if d.platform.get("variant", "") == wanted.variant:  # type: ignore[union-attr]
            return d
    if candidates:
        return candidates[0]
    nested = [d for d in matching if d.media_type in INDEX_TYPES]
    if nested:
        return nested[0]
    available = sorted({
        "/".join(filter(None, [str((d.platform if isinstance(d.platform, dict) else {}).get(k, ""))
                               for k in ("os", "architecture", "variant")]))
        for d in entries
    })
    raise NotFound(
        f"no image for platform {wanted.os}/{wanted.architecture} in the index (has: {', '.join(available) or 'none'})"
    )


def parse_manifest(doc: dict[str, Any], media_type: str) -> ImageManifest:
    config = Descriptor.from_json(doc.get("config"), "manifest config")
    layers = _descriptors(doc, "layers", MAX_LAYERS, "manifest", "manifest layer")
    for layer in layers:
        if layer.media_type not in COMPRESSION_BY_MEDIA_TYPE:
            raise DataLoss(f"layer {layer.digest} has unsupported media type {layer.media_type!r}")
    return ImageManifest(doc.get("mediaType") or media_type, config, layers)


def diff_ids_of(config: dict[str, Any], layers: int) -> list[str]:
    """The uncompressed layer digests the image config promises, one per manifest layer."""
    rootfs = config.get("rootfs") or {}
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids") or [], list):
        raise DataLoss("image config: rootfs is not an object with a list of diff_ids")
    if not isinstance(config.get("config") or {}, dict):
        raise DataLoss("image config: config is not an object")
    raw = rootfs.get("diff_ids") or []
    if not all(isinstance(d, str) for d in raw):
        raise DataLoss("image config: a diff_id is not a string")
    try:
        diff_ids = [validate_digest(d) for d in raw]
    except InvalidArgument as exc:
        raise DataLoss(f"image config: {exc}") from exc
    if len(diff_ids) != layers:
        raise DataLoss(f"image config lists {len(diff_ids)} diff_ids for {layers} layers")
    return diff_ids
