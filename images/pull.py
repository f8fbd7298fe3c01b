"""Pulling an image: resolve the name on an endpoint, fetch manifest and config, and
download and unpack the layers in one streaming pass each.

Every byte is verified: the manifest against the digest asked for, each blob
against its descriptor (size and digest), each unpacked layer against the diff_id
the config promises. Work on one digest runs once at a time (`KeyedLocks`), so
concurrent pulls of one image download it once; what a pull is using is leased,
so a concurrent RemoveImage never deletes it.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import zstandard

from pycri.common.errors import (DISK_FULL_ERRNOS, Cancelled, DataLoss, NotFound, PermissionDenied, PycriError,
                           ResourceExhausted, Unavailable)
from pycri.common.fs import Usage
from pycri.images import manifest as mf
from pycri.images.config import RegistryConfig
from pycri.images.content import ContentStore, Ingest
from pycri.images.layers import LayerStore
from pycri.images.reference import Reference
from pycri.images.registry import Credentials, FetchedManifest, Repository, read_exactly
from pycri.images.unpack import GuardedStream, UnpackLimits, unpack_layer

CHUNK = 1 << 20
# Layers downloaded and unpacked at once by all pulls together (each pull has its own
# max_concurrent_downloads too): on a small node, dozens of concurrent decompressing threads
# only make every pull slow; a bound lets the earlier pulls finish first.
MAX_LAYERS_IN_FLIGHT = 8


class Aborted(Exception):
    """Another layer of the same pull failed, or the client gave up: this one stops reading."""


def _check(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise Aborted()


@dataclass(frozen=True)
class PulledLayer:
    blob_digest: str
    blob_size: int
    diff_id: str
    usage: Usage


@dataclass(frozen=True)
class PulledImage:
    image_id: str  # the config digest
    repo_digest: str  # what the name resolved to: the index or the manifest digest
    manifest_digest: str
    config: dict[str, Any]
    layers: list[PulledLayer]
    blobs: list[str]  # every blob the image holds on to
    size: int  # manifest + config + compressed layers


class KeyedLocks:
    """One lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold_all(self, *keys: str) -> Iterator[None]:
        """Hold the locks of `keys`, each once (an uncompressed layer's digest is its diff_id),
        taken in one global order so that two callers never wait for each other."""
        with contextlib.ExitStack() as stack:
            for key in sorted(set(keys)):
                stack.enter_context(self.hold(key))
            yield

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


class Leases:
    """Digests that pulls in progress rely on; GC leaves them alone."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # also held by GC while it deletes
        self._counts: dict[str, int] = {}

    @contextlib.contextmanager
    def hold(self, keys: list[str]) -> Iterator[None]:
        with self.lock:
            for key in keys:
                self._counts[key] = self._counts.get(key, 0) + 1
        try:
            yield
        finally:
            with self.lock:
                for key in keys:
                    self._counts[key] -= 1
                    if not self._counts[key]:
                        del self._counts[key]

    def leased(self) -> set[str]:
        """Call with `lock` held."""
        return set(self._counts)


class Puller:
    def __init__(self, config: RegistryConfig, content: ContentStore, layers: LayerStore) -> None:
        self.config = config
        self.content = content
        self.layers = layers
        self.locks = KeyedLocks()
        self.leases = Leases()
        self.platform = mf.host_platform()
        self.unpack_limits = UnpackLimits(config.max_layer_unpacked_bytes, config.max_layer_expansion_ratio)
        self.in_flight = threading.BoundedSemaphore(MAX_LAYERS_IN_FLIGHT)

    @contextlib.contextmanager
    def pull(self, ref: Reference, credentials: Credentials,
             cancel: threading.Event | None = None) -> Iterator[PulledImage]:
        """Pull `ref`; the content stays leased while the caller records the image. A full disk
        (ENOSPC, EDQUOT) is ResourceExhausted; what the pull wrote is removed by then. Once
        `cancel` is set (the client gave up) the pull stops between steps and within a read."""
        cancel = cancel if cancel is not None else threading.Event()
        try:
            with self._pull(ref, credentials, cancel) as pulled:
                yield pulled
        except Aborted:  # only ever raised once `cancel` was set
            raise Cancelled(f"pull of {ref} cancelled by the client") from None
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:
                raise ResourceExhausted(f"cannot pull {ref}: out of disk space ({exc.strerror})") from exc
            raise

    @contextlib.contextmanager
    def _pull(self, ref: Reference, credentials: Credentials, cancel: threading.Event) -> Iterator[PulledImage]:
        repository, fetched = self._resolve(ref, credentials)
        _check(cancel)
        blobs = [fetched.digest]
        doc = mf.load_json(fetched.data, f"manifest of {ref}")
        manifest_digest = fetched.digest
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.leases.hold([fetched.digest]))
            self._store_blob(fetched.digest, fetched.data)
            depth = 0
            while mf.kind_of(fetched.media_type, doc) == "index":
                depth += 1
                if depth > mf.MAX_INDEX_DEPTH:
                    raise ResourceExhausted(
                        f"{ref}: indexes nested more than {mf.MAX_INDEX_DEPTH} deep; pycri does not follow them")
                chosen = mf.select_platform(doc, self.platform)
                mf.check_size(chosen, mf.MAX_MANIFEST_BYTES, f"manifest of {ref}")
                fetched = repository.get_manifest(chosen.digest, mf.ACCEPT, mf.MAX_MANIFEST_BYTES)
                manifest_digest = fetched.digest
                doc = mf.load_json(fetched.data, f"manifest {chosen.digest}")
                stack.enter_context(self.leases.hold([manifest_digest]))
                self._store_blob(manifest_digest, fetched.data)
                blobs.append(manifest_digest)
            image = mf.parse_manifest(doc, fetched.media_type)
            mf.check_size(image.config, mf.MAX_CONFIG_BYTES, f"image config of {ref}")
            stack.enter_context(self.leases.hold([image.config.digest]))
            _check(cancel)
            config_bytes = self._fetch_config(repository, image.config)
            config = mf.load_json(config_bytes, f"image config {image.config.digest}")
            diff_ids = mf.diff_ids_of(config, len(image.layers))
            stack.enter_context(self.leases.hold([d.digest for d in image.layers] + diff_ids))
            _check(cancel)
            pulled_layers = self._fetch_layers(repository, image.layers, diff_ids, cancel)
            blobs += [image.config.digest] + [d.digest for d in image.layers]
            size = len(fetched.data) + image.config.size + sum(d.size for d in image.layers)
            yield PulledImage(
                image_id=image.config.digest, repo_digest=blobs[0], manifest_digest=manifest_digest,
                config=config, layers=pulled_layers, blobs=list(dict.fromkeys(blobs)), size=size,
            )

    # -- resolution ---------------------------------------------------------

    def _resolve(self, ref: Reference, given: Credentials) -> tuple[Repository, FetchedManifest]:
        """Try each endpoint of the domain in turn; the first that has the manifest wins."""
        failures: list[PycriError] = []
        for endpoint in self.config.endpoints(ref.domain):
            credentials = self.config.credentials_for(endpoint, given, ref.domain)
            repository = Repository(endpoint, ref.path, credentials, self.config.timeout_seconds)
            try:
                return repository, repository.get_manifest(ref.pull_target, mf.ACCEPT)
            except (NotFound, Unavailable) as exc:
                failures.append(exc)
            except PermissionDenied as exc:  # a mirror that wants credentials it was not given
                if not endpoint.mirror:
                    raise
                failures.append(exc)
        details = "; ".join(str(f) for f in failures)
        if any(isinstance(f, NotFound) for f in failures):
            raise NotFound(f"image {ref} not found: {details}")
        raise Unavailable(f"cannot pull {ref}: {details}")

    # -- blobs --------------------------------------------------------------

    def _store_blob(self, digest: str, data: bytes) -> None:
        with self.locks.hold(digest):
            if not self.content.has(digest):
                self.content.write(digest, data)

    def _fetch_config(self, repository: Repository, desc: mf.Descriptor) -> bytes:
        with self.locks.hold(desc.digest):
            if not self.content.has(desc.digest):
                with repository.open_blob(desc.digest, desc.size) as response:
                    data = read_exactly(response, desc.size)
                self.content.write(desc.digest, data)
        return self.content.read(desc.digest)

    def _fetch_layers(self, repository: Repository, descs: list[mf.Descriptor], diff_ids: list[str],
                      cancel: threading.Event | None = None) -> list[PulledLayer]:
        """Fetch the layers, a few at a time; the first failure stops the others at once (their
        reads raise), so a failed pull reports and cleans up without waiting for them. `cancel`
        (this pull's own event) stops them all the same way."""
        workers = max(1, min(self.config.max_concurrent_downloads, len(descs)))
        abort = cancel if cancel is not None else threading.Event()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pull") as pool:
            futures = [pool.submit(self._fetch_layer, repository, d, i, abort) for d, i in zip(descs, diff_ids)]
            wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.done() and not f.cancelled() and f.exception() is not None for f in futures):
                abort.set()
                for future in futures:
                    future.cancel()
            wait(futures)
            failures = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
            first = next((e for e in failures if not isinstance(e, Aborted)), None)
            if first is not None:
                raise first
            if failures:  # every layer stopped: the pull was cancelled
                raise failures[0]
            return [f.result() for f in futures]

    def _fetch_layer(self, repository: Repository, desc: mf.Descriptor, diff_id: str,
                     abort: threading.Event | None = None) -> PulledLayer:
        abort = abort or threading.Event()
        with self.locks.hold_all(desc.digest, diff_id), self.in_flight:
            if abort.is_set():
                raise Aborted()
            have_blob, have_layer = self.content.has(desc.digest), self.layers.has(diff_id)
            if not have_blob and have_layer:
                with repository.open_blob(desc.digest, desc.size) as response, \
                        self.content.ingest(desc.digest, desc.size) as ingest:
                    _copy(_Abortable(response, abort), ingest)
                    ingest.commit()
            elif not have_layer:
                compression = mf.COMPRESSION_BY_MEDIA_TYPE[desc.media_type]
                if have_blob:
                    with open(self.content.path(desc.digest), "rb") as blob:
                        self.unpack_blob(_Abortable(blob, abort), None, desc, compression, diff_id)
                else:
                    with repository.open_blob(desc.digest, desc.size) as response, \
                            self.content.ingest(desc.digest, desc.size) as ingest:
                        self.unpack_blob(_Abortable(response, abort), ingest, desc, compression, diff_id)
        # outside the locks: the layer is leased, so it stays; the walk is disk I/O that other
        # pulls of this layer need not wait for (it is done once, then read from the layer's record)
        return PulledLayer(desc.digest, desc.size, diff_id, self.layers.usage(diff_id))

    def unpack_blob(self, source: Any, ingest: Ingest | None, desc: mf.Descriptor, compression: str,
                    diff_id: str) -> None:
        """Unpack the layer blob `desc` read from `source` (copied to `ingest` if given) into the
        layer store as `diff_id`, verifying the blob's size and digest and the layer's diff_id."""
        compressed = HashingReader(source, ingest)
        with self.layers.create(diff_id) as target:
            guarded = GuardedStream(_decompressor(compressed, compression), lambda: compressed.size,
                                    self.unpack_limits, f"layer {desc.digest}")
            tar_stream = HashingReader(guarded)
            try:
                unpack_layer(tar_stream, target)
                tar_stream.drain()
                compressed.drain()
            except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
                if isinstance(exc, OSError) and not isinstance(exc, gzip.BadGzipFile) and exc.errno:
                    raise  # a local I/O error (disk full), not bad content
                raise DataLoss(f"layer blob {desc.digest} is corrupt: cannot decompress it ({exc})") from exc
            if compressed.size != desc.size or compressed.digest != desc.digest:
                raise DataLoss(
                    f"layer blob {desc.digest} does not match its descriptor "
                    f"(got {compressed.digest}, {compressed.size} bytes)"
                )
            if tar_stream.digest != diff_id:
                raise DataLoss(f"layer {desc.digest} unpacks to {tar_stream.digest}, the config promises {diff_id}")
            if ingest is not None:
                ingest.commit()


class HashingReader:
    """A reader that hashes what passes through it, and copies it to `sink` if given."""

    def __init__(self, source: Any, sink: Ingest | None = None) -> None:
        self._source = source
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n if n is not None and n >= 0 else CHUNK)
        if data:
            self._hash.update(data)
            self.size += len(data)
            if self._sink is not None:
                self._sink.write(data)
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def _decompressor(stream: HashingReader, compression: str) -> Any:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[arg-type]
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True, read_size=CHUNK)
    return stream


class _Abortable:
    """A reader that raises Aborted once `abort` is set. It returns what has arrived rather than
    waiting for a whole chunk, so a slow transfer notices the abort at its next bytes."""

    def __init__(self, source: Any, abort: threading.Event) -> None:
        self._source = source
        self._abort = abort
        self._read = getattr(source, "read1", source.read)

    def read(self, n: int = -1) -> bytes:
        if self._abort.is_set():
            raise Aborted()
        return self._read(n)


def _copy(source: Any, ingest: Ingest) -> None:
    while chunk := source.read(CHUNK):
        ingest.write(chunk)

