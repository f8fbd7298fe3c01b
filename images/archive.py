"""Image archives: what `docker save` writes (docker's manifest.json layout, and the OCI layout
newer dockers write), and OCI image layout tars, read into the stores a pull fills.

An archive is hostile until proven otherwise. It is spooled to disk first (never held in
memory) and read as a tar with random access: member names must be relative and clean (no
"/" at the start, no ".." component), only files, directories and links whose targets are
members of the archive itself are accepted, and the number of members and the size of every
JSON document read are bounded. Every blob is verified against its digest (a docker save
layer against the diff_id its config promises), and a layer unpacks under the same limits and
checks as a pulled one, into the same layer store: a layer pycri already has is verified but
not unpacked again.

`plan()` reads what the archive holds without writing anything; the image service then stores
blobs and layers under the pull's locks and leases and records all the images in one
transaction, so a failed import leaves no rows (and its files are garbage).
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pycri.common.errors import DataLoss, InvalidArgument, NotFound, ResourceExhausted
from pycri.images import manifest as mf
from pycri.images import reference
from pycri.images.reference import validate_digest

MAX_MEMBERS = 20_000  # entries of one archive (docker save: about 4 per layer)
MAX_MEMBER_NAME = 4096
MAX_IMAGES = mf.MAX_INDEX_ENTRIES  # images in one manifest.json or index.json
MAX_JSON_BYTES = mf.MAX_MANIFEST_BYTES  # manifest.json, index.json, oci-layout, a manifest or index
MAX_LINK_HOPS = 8
MAX_HEADER_BYTES = 1 << 20  # a pax extended header or GNU long name, which tarfile reads whole
CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
IMAGE_NAME_ANNOTATION = "io.containerd.image.name"  # a full reference (containerd, docker 25+)
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"  # a full reference, or only a tag


@dataclass(frozen=True)
class LayerSource:
    member: str  # the archive member holding the blob
    desc: mf.Descriptor  # the blob: its size and digest (a docker save layer's digest is computed)
    compression: str
    diff_id: str


@dataclass
class ArchivedImage:
    """One image of an archive, read and checked but not stored yet."""

    config_digest: str  # the image id
    config: dict[str, Any]
    config_bytes: bytes
    manifest_digest: str
    manifest_bytes: bytes
    repo_digest: str  # what its names point at: the archive's index entry, or the manifest
    layers: list[LayerSource]
    blobs: dict[str, bytes] = field(default_factory=dict)  # index(es), manifest and config, by digest
    names: list[str] = field(default_factory=list)  # domain/path:tag

    @property
    def size(self) -> int:
        return len(self.manifest_bytes) + len(self.config_bytes) + sum(layer.desc.size for layer in self.layers)


def spool(chunks: Iterable[bytes], out: IO[bytes]) -> None:
    """Write the archive `chunks` hold to `out`, decompressing it on the way if it is gzip'd
    (`docker save | gzip`): the tar is then read with random access, which gzip has not."""
    source = iter(chunks)
    head = b""
    for chunk in source:
        head += chunk
        if len(head) >= len(GZIP_MAGIC):
            break
    if not head.startswith(GZIP_MAGIC):
        out.write(head)
        for chunk in source:
            out.write(chunk)
        return
    inflate, fed = zlib.decompressobj(16 + zlib.MAX_WBITS), False
    try:
        for chunk in itertools.chain([head], source):
            data = chunk
            while data:
                fed = True
                out.write(inflate.decompress(data, CHUNK))  # at most CHUNK bytes held at once
                data = inflate.unconsumed_tail
                if inflate.eof:  # one gzip member ends; another may follow (as gzip -c a b writes)
                    data, inflate, fed = inflate.unused_data, zlib.decompressobj(16 + zlib.MAX_WBITS), False
            while fed and not inflate.eof and (rest := inflate.decompress(b"", CHUNK)):
                out.write(rest)
    except zlib.error as exc:
        raise InvalidArgument(f"the image archive is not valid gzip ({exc})") from exc
    if fed and not inflate.eof:
        raise InvalidArgument("the image archive's gzip stream is truncated")


class _GuardedTarInfo(tarfile.TarInfo):
    """tarfile reads a pax header or a GNU long name whole into memory: refuse a huge one first."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                         tarfile.GNUTYPE_LONGLINK) and self.size > MAX_HEADER_BYTES:
            raise ResourceExhausted(f"the image archive has a {self.size}-byte extended tar header; "
                                    f"pycri reads at most {MAX_HEADER_BYTES}")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


class Archive:
    """A tar on disk, its members by clean name, opened for reading one at a time."""

    def __init__(self, path: Path) -> None:
        try:
            self._tar = tarfile.open(path, "r:", tarinfo=_GuardedTarInfo)  # spool() decompressed a gzip'd one
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise InvalidArgument(f"the image archive is not a tar file ({exc})") from exc
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            self._index()
        except BaseException:
            self._tar.close()
            raise

    def _index(self) -> None:
        count = 0
        try:
            for member in self._tar:
                count += 1
                if count > MAX_MEMBERS:
                    raise ResourceExhausted(f"the image archive has more than {MAX_MEMBERS} entries")
                name = clean_name(member.name)
                if member.isdir():
                    continue
                if not (member.isreg() or member.issym() or member.islnk()):
                    raise InvalidArgument(f"image archive entry {name!r} is not a file, directory or link")
                if name in self.members:
                    raise InvalidArgument(f"image archive entry {name!r} appears twice")
                self.members[name] = member
        except (tarfile.TarError, EOFError) as exc:
            raise InvalidArgument(f"the image archive is not a valid tar file ({exc})") from exc

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def has(self, name: str) -> bool:
        return name in self.members

    def member(self, name: str) -> tarfile.TarInfo:
        """The regular file `name` denotes, following links within the archive only."""
        seen = name
        for _ in range(MAX_LINK_HOPS + 1):
            member = self.members.get(name)
            if member is None:
                if name == seen:
                    raise InvalidArgument(f"the image archive has no {seen!r}")
                raise InvalidArgument(f"image archive entry {seen!r} links to {name!r}, which it does not hold")
            if member.isreg():
                return member
            if member.issym():
                target = member.linkname
                if target.startswith("/"):
                    raise InvalidArgument(f"image archive entry {name!r} links out of the archive ({target!r})")
                name = _link_target(name, target)
            else:  # a hard link names another entry of the archive
                name = clean_name(member.linkname, f"link {name!r} -> ")
        raise InvalidArgument(f"image archive entry {seen!r}: more than {MAX_LINK_HOPS} links in a row")

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        member = self.member(name)
        stream = self._tar.extractfile(member)
        assert stream is not None  # a regular file
        with stream:
            yield stream

    def size(self, name: str) -> int:
        return self.member(name).size

    def read(self, name: str, limit: int) -> bytes:
        """The whole of a small member (a JSON document), refused past `limit` bytes."""
        size = self.size(name)
        if size > limit:
            raise ResourceExhausted(f"image archive entry {name!r} is {size} bytes; pycri reads at most {limit}")
        with self.open(name) as stream:
            data = stream.read(limit + 1)
        if len(data) != size:
            raise InvalidArgument(f"image archive entry {name!r} is truncated")
        return data

    def read_json(self, name: str) -> Any:
        """A JSON document of the archive (at most MAX_JSON_BYTES)."""
        try:
            return json.loads(self.read(name, MAX_JSON_BYTES))
        except (ValueError, RecursionError) as exc:
            raise InvalidArgument(f"image archive entry {name!r} is not valid JSON") from exc

    def read_blob(self, desc: mf.Descriptor, limit: int, what: str) -> bytes:
        """An OCI layout blob (blobs/<algorithm>/<hex>), checked against its descriptor."""
        mf.check_size(desc, limit, what)
        name = blob_path(desc.digest)
        if not self.has(name):
            raise InvalidArgument(f"the image archive lacks {what} {desc.digest}")
        data = self.read(name, limit)
        check_blob(data, desc, what)
        return data


def clean_name(name: str, what: str = "") -> str:
    """An archive member's name without "./" parts and trailing "/"; absolute names, ".."
    components and overlong names are refused."""
    if len(name) > MAX_MEMBER_NAME:
        raise InvalidArgument(f"image archive entry {what}{name[:64]!r}... has a name over {MAX_MEMBER_NAME} bytes")
    if name.startswith("/") or "\0" in name:
        raise InvalidArgument(f"image archive entry {what}{name!r} has an absolute name")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"image archive entry {what}{name!r} has a '..' component")
    if not parts:
        raise InvalidArgument(f"image archive entry {what}{name!r} has an empty name")
    return "/".join(parts)


def _link_target(name: str, target: str) -> str:
    """The member a symbolic link `name` -> `target` (relative to its directory) points at; one
    that climbs out of the archive, or is absolute, is refused."""
    if target.startswith("/") or "\0" in target or len(target) > MAX_MEMBER_NAME:
        raise InvalidArgument(f"image archive entry {name!r} links out of the archive ({target[:256]!r})")
    parts: list[str] = name.split("/")[:-1]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise InvalidArgument(f"image archive entry {name!r} links out of the archive ({target!r})")
            parts.pop()
        else:
            parts.append(part)
    return clean_name("/".join(parts), f"link {name!r} -> ")


def blob_path(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64:
        raise InvalidArgument(f"unsupported digest {digest!r} in the image archive")
    return f"blobs/sha256/{hexdigest}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_blob(data: bytes, desc: mf.Descriptor, what: str) -> None:
    actual = sha256(data)
    if actual != desc.digest or len(data) != desc.size:
        raise InvalidArgument(
            f"{what} {desc.digest} in the image archive does not match its descriptor "
            f"(got {actual}, {len(data)} bytes for {desc.size})")


def hash_member(archive: Archive, name: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with archive.open(name) as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


# -- reading an archive ------------------------------------------------------


def plan(archive: Archive, platform: mf.Platform) -> list[ArchivedImage]:
    """The images of the archive, their names, configs and layer sources, all checked except
    the layers' bytes (read once, when unpacked or verified). Images with the same config are
    one image with all their names."""
    if archive.has("index.json"):
        images = _oci_images(archive, platform)
    elif archive.has("manifest.json"):
        images = _docker_images(archive, platform)
    else:
        raise InvalidArgument("the image archive has neither index.json (OCI layout) nor manifest.json (docker save)")
    merged: dict[str, ArchivedImage] = {}
    for image in images:
        if image.config_digest in merged:
            kept = merged[image.config_digest]
            kept.names += [n for n in image.names if n not in kept.names]
        else:
            merged[image.config_digest] = image
    if not merged:
        raise InvalidArgument("the image archive holds no image")
    return list(merged.values())


def _docker_images(archive: Archive, platform: mf.Platform) -> list[ArchivedImage]:
    """docker save's own layout: manifest.json lists each image's config file, tags and layer
    tars; the manifest is made here (as containerd does), with the layers as they are stored."""
    entries = _list(archive.read_json("manifest.json"), "manifest.json")
    images = []
    for number, entry in enumerate(entries):
        what = f"manifest.json entry {number}"
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise InvalidArgument(f"{what} has no Config")
        layer_names = entry.get("Layers") or []
        if not isinstance(layer_names, list) or not all(isinstance(n, str) for n in layer_names):
            raise InvalidArgument(f"{what}: Layers is not a list of names")
        if len(layer_names) > mf.MAX_LAYERS:
            raise ResourceExhausted(f"{what} lists {len(layer_names)} layers; pycri accepts at most {mf.MAX_LAYERS}")
        config_name = clean_name(entry["Config"])
        config_bytes = archive.read(config_name, mf.MAX_CONFIG_BYTES)
        config_digest = sha256(config_bytes)
        config = _config(config_bytes, config_digest, len(layer_names), platform)
        diff_ids = mf.diff_ids_of(config, len(layer_names))
        layers = [_docker_layer(archive, clean_name(name), diff_id) for name, diff_id in zip(layer_names, diff_ids)]
        manifest = {
            "schemaVersion": 2, "mediaType": mf.DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config_bytes), "digest": config_digest},
            "layers": [{"mediaType": layer.desc.media_type, "size": layer.desc.size, "digest": layer.desc.digest}
                       for layer in layers],
        }
        manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
        manifest_digest = sha256(manifest_bytes)
        images.append(ArchivedImage(
            config_digest=config_digest, config=config, config_bytes=config_bytes,
            manifest_digest=manifest_digest, manifest_bytes=manifest_bytes, repo_digest=manifest_digest,
            layers=layers, blobs={manifest_digest: manifest_bytes, config_digest: config_bytes},
            names=_names(entry.get("RepoTags"), what),
        ))
    return images


def _docker_layer(archive: Archive, name: str, diff_id: str) -> LayerSource:
    """A docker save layer: an uncompressed tar whose digest is its diff_id, or (as docker load
    also accepts) a compressed one, hashed here to learn its digest."""
    with archive.open(name) as stream:
        magic = stream.read(4)
    if magic[:2] == b"\x1f\x8b":
        digest, size = hash_member(archive, name)
        return LayerSource(name, mf.Descriptor(DOCKER_LAYER_GZIP, digest, size), "gzip", diff_id)
    if magic == b"\x28\xb5\x2f\xfd":
        digest, size = hash_member(archive, name)
        return LayerSource(name, mf.Descriptor(OCI_LAYER_ZSTD, digest, size), "zstd", diff_id)
    return LayerSource(name, mf.Descriptor(DOCKER_LAYER, diff_id, archive.size(name)), "none", diff_id)


def _oci_images(archive: Archive, platform: mf.Platform) -> list[ArchivedImage]:
    """An OCI image layout: index.json names each image (a manifest or an index) with its
    annotations; a docker save that writes this layout adds manifest.json with RepoTags."""
    if archive.has("oci-layout"):
        layout = archive.read_json("oci-layout")
        if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != "1.0.0":
            raise InvalidArgument("the image archive's oci-layout is not imageLayoutVersion 1.0.0")
    index = archive.read_json("index.json")
    if not isinstance(index, dict):
        raise InvalidArgument("index.json is not a JSON object")
    entries = _list(index.get("manifests") or [], "index.json manifests")
    tags_by_config = _docker_tags(archive) if archive.has("manifest.json") else {}
    images = []
    for number, raw in enumerate(entries):
        what = f"index.json entry {number}"
        desc = _descriptor(raw, what)
        annotations = raw.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise InvalidArgument(f"{what}: annotations is not an object")
        image = _oci_image(archive, desc, platform, what)
        image.names = _annotated_names(annotations, desc.digest, what)
        image.names += [n for n in tags_by_config.get(image.config_digest, []) if n not in image.names]
        images.append(image)
    return images


def _oci_image(archive: Archive, desc: mf.Descriptor, platform: mf.Platform, what: str) -> ArchivedImage:
    blobs: dict[str, bytes] = {}
    data = archive.read_blob(desc, mf.MAX_MANIFEST_BYTES, f"{what}:")
    doc = _load(data, f"{what} {desc.digest}")
    blobs[desc.digest] = data
    chosen = desc
    depth = 0
    while mf.kind_of(chosen.media_type, doc) == "index":
        depth += 1
        if depth > mf.MAX_INDEX_DEPTH:
            raise ResourceExhausted(f"{what}: indexes nested more than {mf.MAX_INDEX_DEPTH} deep")
        present = dict(doc, manifests=[
            m for m in _list(doc.get("manifests") or [], f"index {chosen.digest}")
            if not isinstance(m, dict) or _holds(archive, m.get("digest"))
        ])
        try:
            chosen = mf.select_platform(present, platform)
        except NotFound as exc:
            raise InvalidArgument(f"{what}: the image archive holds no image for this node's platform: {exc}") from exc
        data = archive.read_blob(chosen, mf.MAX_MANIFEST_BYTES, "manifest")
        doc = _load(data, f"manifest {chosen.digest}")
        blobs[chosen.digest] = data
    image = mf.parse_manifest(doc, chosen.media_type)
    config_bytes = archive.read_blob(image.config, mf.MAX_CONFIG_BYTES, "image config")
    config = _config(config_bytes, image.config.digest, len(image.layers), platform)
    diff_ids = mf.diff_ids_of(config, len(image.layers))
    blobs[image.config.digest] = config_bytes
    layers = []
    for layer, diff_id in zip(image.layers, diff_ids):
        name = blob_path(layer.digest)
        if not archive.has(name):
            raise InvalidArgument(f"the image archive lacks layer {layer.digest}")
        layers.append(LayerSource(name, layer, mf.COMPRESSION_BY_MEDIA_TYPE[layer.media_type], diff_id))
    return ArchivedImage(
        config_digest=image.config.digest, config=config, config_bytes=config_bytes,
        manifest_digest=chosen.digest, manifest_bytes=data, repo_digest=desc.digest, layers=layers, blobs=blobs,
    )


def _holds(archive: Archive, digest: Any) -> bool:
    try:
        return isinstance(digest, str) and archive.has(blob_path(digest))
    except InvalidArgument:
        return True  # let the descriptor's own check report it


def _docker_tags(archive: Archive) -> dict[str, list[str]]:
    """RepoTags of docker's manifest.json beside an OCI layout, by the config digest of their image."""
    tags: dict[str, list[str]] = {}
    for number, entry in enumerate(_list(archive.read_json("manifest.json"), "manifest.json")):
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise InvalidArgument(f"manifest.json entry {number} has no Config")
        config = clean_name(entry["Config"])
        if config.startswith("blobs/sha256/"):
            tags.setdefault("sha256:" + config.rsplit("/", 1)[1], []).extend(
                _names(entry.get("RepoTags"), f"manifest.json entry {number}"))
    return tags


def _annotated_names(annotations: dict[str, Any], digest: str, what: str) -> list[str]:
    """The names an index entry's annotations give: containerd's full image name, or the OCI
    ref.name when it is a whole reference (with a '/' or ':'; a bare tag names no repository)."""
    name = annotations.get(IMAGE_NAME_ANNOTATION)
    if not name:
        ref_name = annotations.get(REF_NAME_ANNOTATION)
        if isinstance(ref_name, str) and ("/" in ref_name or ":" in ref_name):
            name = ref_name
    if not name:
        return []
    if not isinstance(name, str):
        raise InvalidArgument(f"{what}: the image name annotation is not a string")
    ref = _parse(name, what)
    if ref.digest and ref.digest != digest:
        raise InvalidArgument(f"{what}: the name {name!r} names another digest than the entry's {digest}")
    return [ref.tagged] if ref.tagged else []


def _names(raw: Any, what: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise InvalidArgument(f"{what}: RepoTags is not a list of names")
    if len(raw) > MAX_IMAGES:
        raise ResourceExhausted(f"{what} has {len(raw)} RepoTags; pycri accepts at most {MAX_IMAGES}")
    names = []
    for name in raw:
        ref = _parse(name, what)
        if ref.tagged and ref.tagged not in names:
            names.append(ref.tagged)
    return names


def _parse(name: str, what: str) -> reference.Reference:
    try:
        return reference.parse(name)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{what}: {exc}") from exc


def _config(data: bytes, digest: str, layers: int, platform: mf.Platform) -> dict[str, Any]:
    config = _load(data, f"image config {digest}")
    os_name, arch = config.get("os"), config.get("architecture")
    if isinstance(os_name, str) and isinstance(arch, str) and os_name and arch and \
            (os_name, arch) != (platform.os, platform.architecture):
        raise InvalidArgument(
            f"image {digest} is for {os_name}/{arch}; this node runs {platform.os}/{platform.architecture}")
    try:
        mf.diff_ids_of(config, layers)
    except DataLoss as exc:
        raise InvalidArgument(f"image config {digest}: {exc}") from exc
    return config


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        return mf.load_json(data, what)
    except DataLoss as exc:
        raise InvalidArgument(str(exc)) from exc


def _list(raw: Any, what: str) -> list[Any]:
    if not isinstance(raw, list):
        raise InvalidArgument(f"{what} is not a list")
    if len(raw) > MAX_IMAGES:
        raise ResourceExhausted(f"{what} lists {len(raw)} entries; pycri accepts at most {MAX_IMAGES}")
    return raw


def _descriptor(raw: Any, what: str) -> mf.Descriptor:
    try:
        desc = mf.Descriptor.from_json(raw, what)
        validate_digest(desc.digest)
    except (DataLoss, InvalidArgument) as exc:
        raise InvalidArgument(str(exc)) from exc
    blob_path(desc.digest)
    return desc
