"""The image service: what criserver's ImageService calls. Pull, list, status, remove, usage.

Files are written before rows and rows deleted before files, so a crash leaves at
worst unreferenced files, which `recover()` removes at start-up.
"""
from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from pycri.common.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound
from pycri.common.ids import numeric, parse_id
from pycri.images import archive, reference
from pycri.images.config import RegistryConfig
from pycri.images.content import ContentStore
from pycri.images.layers import LayerStore
from pycri.images.pull import HashingReader, Puller
from pycri.images.registry import Credentials
from pycri.images.records import Catalog, ImageRecord, ImageTable
from pycri.store.db import Database

log = structlog.get_logger("images")


@dataclass(frozen=True)
class ImportedImage:
    id: str
    repo_tags: list[str]
    repo_digest: str  # what the names point at: the archive's index entry or the image's manifest


@dataclass(frozen=True)
class FsUsage:
    mountpoint: str
    used_bytes: int
    inodes_used: int


class ImageService:
    def __init__(self, db: Database, root: Path, config: RegistryConfig) -> None:
        self.root = root
        self.content = ContentStore(root / "content")
        self.layers = LayerStore(root / "layers")
        self.table = ImageTable(db)
        self.db = db
        self.puller = Puller(config, self.content, self.layers)
        # images a container being created is about to mount; one lock makes resolving and
        # holding an image, or checking and removing one, a single step
        self._use_lock = threading.Lock()
        self._held: Counter[str] = Counter()

    # -- CRI operations -----------------------------------------------------

    def pull(self, name: str, credentials: Credentials, cancel: threading.Event | None = None) -> str:
        """Pull `name` and return the image id; setting `cancel` (the client gave up) stops it."""
        ref = reference.parse(name)
        try:
            image_id = self._pull(ref, credentials, cancel)
        except BaseException:
            self.collect_garbage()  # the blobs and layers of a failed pull are referenced by nothing
            raise
        return image_id

    def _pull(self, ref: reference.Reference, credentials: Credentials, cancel: threading.Event | None) -> str:
        with self.puller.locks.hold(f"pull:{ref}"), self.puller.pull(ref, credentials, cancel) as pulled:
            record = ImageRecord(
                id=pulled.image_id, manifest_digest=pulled.manifest_digest, size=pulled.size,
                config=pulled.config, pulled_at=time.time_ns(),
                repo_tags=[ref.tagged] if ref.tagged else [],
                repo_digests=[ref.with_digest(pulled.repo_digest)],
                diff_ids=[layer.diff_id for layer in pulled.layers],
            )
            usage = {layer.diff_id: (layer.usage.bytes, layer.usage.inodes) for layer in pulled.layers}
            with self.table.transaction() as tx:
                self.table.add(tx, record, usage, pulled.blobs)
        log.info("image pulled", image=str(ref), image_id=pulled.image_id, size=pulled.size)
        return pulled.image_id

    def import_archive(self, chunks: Iterable[bytes]) -> list[ImportedImage]:
        """Import the image archive (a docker save or OCI layout tar) whose bytes `chunks`
        yields: every image in it, for this node's platform, with every name it gives. The
        archive is spooled to disk and checked whole before any image is recorded; a bad one
        is InvalidArgument and leaves nothing behind."""
        spool = self.content.ingest_dir / f"import-{uuid.uuid4().hex}.tar"
        try:
            with open(spool, "xb") as out:
                archive.spool(chunks, out)
            try:
                return self._import(spool)
            except BaseException:
                self.collect_garbage()  # what the failed import stored is referenced by nothing
                raise
        except DataLoss as exc:  # a blob or layer that does not match its digest: the archive is bad
            raise InvalidArgument(f"bad image archive: {exc}") from exc
        finally:
            spool.unlink(missing_ok=True)

    def _import(self, spool: Path) -> list[ImportedImage]:
        with archive.Archive(spool) as source:
            images = archive.plan(source, self.puller.platform)
            layers = {layer.diff_id: layer for image in images for layer in image.layers}
            leased = [d for image in images for d in image.blobs] + \
                [key for layer in layers.values() for key in (layer.desc.digest, layer.diff_id)]
            with self.puller.leases.hold(leased):
                for image in images:
                    for digest, data in image.blobs.items():
                        with self.puller.locks.hold(digest):
                            if not self.content.has(digest):
                                self.content.write(digest, data)
                for layer in layers.values():
                    self._import_layer(source, layer)
                now = time.time_ns()
                with self.table.transaction() as tx:
                    for image in images:
                        record = ImageRecord(
                            id=image.config_digest, manifest_digest=image.manifest_digest, size=image.size,
                            config=image.config, pulled_at=now, repo_tags=list(image.names),
                            repo_digests=[reference.parse(n).with_digest(image.repo_digest) for n in image.names],
                            diff_ids=[layer.diff_id for layer in image.layers],
                        )
                        usage = {}
                        for layer in image.layers:
                            measured = self.layers.usage(layer.diff_id)
                            usage[layer.diff_id] = (measured.bytes, measured.inodes)
                        self.table.add(tx, record, usage, list(image.blobs))
        for image in images:
            log.info("image imported", image_id=image.config_digest, tags=image.names, size=image.size)
        return [ImportedImage(i.config_digest, list(i.names), i.repo_digest) for i in images]

    def _import_layer(self, source: archive.Archive, layer: archive.LayerSource) -> None:
        """Unpack a layer of the archive into the layer store, or, if the store has it (pulled
        or imported before), verify the archive's blob without unpacking it again."""
        with self.puller.locks.hold_all(layer.desc.digest, layer.diff_id), self.puller.in_flight, \
                source.open(layer.member) as stream:
            if not self.layers.has(layer.diff_id):
                self.puller.unpack_blob(stream, None, layer.desc, layer.compression, layer.diff_id)
                return
            hashed = HashingReader(stream)
            hashed.drain()
            if hashed.digest != layer.desc.digest or hashed.size != layer.desc.size:
                raise InvalidArgument(f"layer {layer.desc.digest} in the image archive does not match its "
                                      f"descriptor (got {hashed.digest}, {hashed.size} bytes)")

    def tag(self, source: str, target: str) -> str:
        """Give the image `source` denotes (an id or a name) the name `target` (name:tag), moving
        the name from any image that has it; return the image id."""
        ref = reference.parse(target)
        if ref.digest or not ref.tagged:
            raise InvalidArgument(f"{target!r} is not a name with a tag")
        with self._use_lock:  # as remove: the image cannot go between resolving and tagging it
            record = self.get(source)
            with self.table.transaction() as tx:
                self.table.add_tag(tx, ref.tagged, record.id)
        log.info("image tagged", image_id=record.id, tag=ref.tagged)
        return record.id

    def resolve(self, name: str) -> ImageRecord | None:
        """The image that `name` (an id, a name:tag or a name@digest) denotes, if any."""
        image_id = self._resolve_id(name)
        return self.table.get(image_id) if image_id else None

    def get(self, name: str) -> ImageRecord:
        record = self.resolve(name)
        if record is None:
            raise NotFound(f"image {name!r} not found")
        return record

    def list(self, name_filter: str = "") -> list[ImageRecord]:
        if name_filter:
            record = self.resolve(name_filter)
            return [record] if record else []
        return self.table.all()

    def catalog(self) -> Catalog:
        """Every image, decoded: the same object until the next write of an image, a tag or a
        digest (so what is made of it may be kept as long as it is the current one). Its
        records are shared: read them, never change them."""
        return self.table.catalog()

    @contextlib.contextmanager
    def holding(self, names: list[str]) -> Iterator[list[ImageRecord | None]]:
        """The images `names` denote (None where a name denotes none), kept from `remove` until
        the block ends; by then their user has recorded its use where `remove`'s `in_use` looks."""
        with self._use_lock:
            records = [self.resolve(name) for name in names]
            held = Counter(r.id for r in records if r is not None)
            self._held += held
        try:
            yield records
        finally:
            with self._use_lock:
                self._held -= held

    def remove(self, name: str, in_use: Callable[[str], list[str]] = lambda image_id: []) -> None:
        """Remove the image with all its names; removing an absent image succeeds. An image in
        use stays: `in_use` names its users (containers) by image id, `holding` holds it."""
        with self._use_lock:
            record = self.resolve(name)
            if record is None:
                return
            users = in_use(record.id) or (["a container being created"] if self._held[record.id] else [])
            if users:
                raise FailedPrecondition(f"image {name!r} ({record.id}) is in use by {', '.join(users)}")
            with self.table.transaction() as tx:
                self.table.delete(tx, record.id)
                self.table.delete_unused_layers(tx)
        self.collect_garbage()
        log.info("image removed", image_id=record.id, tags=record.repo_tags)

    def fs_usage(self) -> FsUsage:
        size, inodes = self.table.layer_usage()
        return FsUsage(str(self.layers.root), size, inodes)

    # -- start-up and garbage collection ------------------------------------

    def recover(self) -> None:
        """Drop what a crash left half-made: partial blobs and layers, files without rows."""
        self.content.clear_ingest()
        self.layers.clear_tmp()
        self.collect_garbage()

    def collect_garbage(self) -> None:
        """Delete blobs and layer directories that no image refers to and no pull is using."""
        with self.puller.leases.lock:
            leased = self.puller.leases.leased()
            used_blobs = self.table.used_blobs() | leased
            used_layers = self.table.used_layers() | leased
            for digest in list(self.content.digests()):
                if digest not in used_blobs:
                    self.content.delete(digest)
            for diff_id in list(self.layers.diff_ids()):
                if diff_id not in used_layers:
                    self.layers.delete(diff_id)

    def _resolve_id(self, name: str) -> str | None:
        if reference.is_image_id(name):
            image_id = name if name.startswith("sha256:") else f"sha256:{name}"
            return image_id if self.table.get(image_id) else None
        try:
            ref = reference.parse(name)
        except InvalidArgument:
            return None
        if ref.digest:
            return self.table.id_by_digest(ref.with_digest(ref.digest))
        return self.table.id_by_tag(ref.tagged or "")


def image_user(record: ImageRecord) -> tuple[int | None, str]:
    """(uid, username) from the image config's User, the way kubelet reads them. A numeric
    user (ASCII digits) out of 0..MAX_ID gives neither: kubelet then takes the image for one
    that runs as root (and CreateContainer refuses it), and one image never breaks a List."""
    config = record.config.get("config") if isinstance(record.config, dict) else None
    user = str(config.get("User") or "") if isinstance(config, dict) else ""  # as CreateContainer reads it
    name = user.split(":", 1)[0]
    if not name:
        return None, ""
    if numeric(name):
        return parse_id(name), ""
    return None, name
