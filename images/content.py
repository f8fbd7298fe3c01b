"""The content store: blobs by digest under <root>/blobs/sha256/<hex>.

A blob is written to <root>/ingest first, hashed while written, and renamed into
place only when its size and digest match, so a blob in the store is always
complete and correct. Whatever is in ingest at start-up is a crash's leftover.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from pycri.common.errors import DataLoss


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.blobs = root / "blobs" / "sha256"
        self.ingest_dir = root / "ingest"
        for directory in (root, root / "blobs", self.blobs, self.ingest_dir):  # root-only, as containerd's
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(directory, 0o700)

    def path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64:
            raise DataLoss(f"unsupported digest {digest!r}")
        return self.blobs / hexdigest

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def write(self, digest: str, data: bytes) -> None:
        with self.ingest(digest, len(data)) as writer:
            writer.write(data)
            writer.commit()

    def ingest(self, digest: str, size: int) -> "Ingest":
        return Ingest(self, digest, size)

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> Iterator[str]:
        for entry in os.scandir(self.blobs):
            yield f"sha256:{entry.name}"

    def clear_ingest(self) -> None:
        shutil.rmtree(self.ingest_dir, ignore_errors=True)
        self.ingest_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


class Ingest:
    """A blob being written. Use as a context manager; `commit()` verifies and publishes it."""

    def __init__(self, store: ContentStore, digest: str, size: int) -> None:
        self.store = store
        self.digest = digest
        self.size = size
        self.target = store.path(digest)
        self.temp = store.ingest_dir / f"{self.target.name}.{uuid.uuid4().hex[:8]}"
        self._file = os.fdopen(os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "wb")
        self._hash = hashlib.sha256()
        self.written = 0
        self.committed = False

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._file.write(data)
        self.written += len(data)
        if self.written > self.size:
            raise DataLoss(f"blob {self.digest} is larger than the {self.size} bytes its descriptor says")

    def commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self.written != self.size:
            raise DataLoss(f"blob {self.digest}: got {self.written} bytes, its descriptor says {self.size}")
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self.digest:
            raise DataLoss(f"blob digest mismatch: expected {self.digest}, got {actual}")
        os.rename(self.temp, self.target)
        self.committed = True

    def __enter__(self) -> "Ingest":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if not self._file.closed:
                self._file.close()  # flushes: on a full disk this raises too
        finally:
            if not self.committed:
                self.temp.unlink(missing_ok=True)
