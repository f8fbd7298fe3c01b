"""Unpacked layers: one directory per layer, <root>/<diff_id hex>/diff, an overlayfs lower dir.

A layer is unpacked into <root>/.tmp/<random>/diff and renamed into place only once
its diff_id has been verified; whatever is under .tmp at start-up is a crash's
leftover. Layers are keyed by diff_id, so images that share a layer share its directory.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from pycri.common.fs import Usage, remove_tree, usage


class LayerStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / ".tmp"
        self.trash = root / ".trash"
        for directory in (root, self.tmp):  # root-only: layers keep their setuid binaries
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(directory, 0o700)
        remove_tree(self.trash)  # what a stop left to delete
        self.trash.mkdir(mode=0o700)
        self._doomed: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self._remover: threading.Thread | None = None
        self._remover_lock = threading.Lock()

    def dir(self, diff_id: str) -> Path:
        return self.root / diff_id.partition(":")[2]

    def diff(self, diff_id: str) -> Path:
        """The directory to use as an overlayfs lower layer."""
        return self.dir(diff_id) / "diff"

    def has(self, diff_id: str) -> bool:
        return self.diff(diff_id).is_dir()

    def usage(self, diff_id: str) -> Usage:
        """The layer's disk usage, measured once when it was unpacked (a layer never changes)."""
        record = self.dir(diff_id) / USAGE_FILE
        try:
            raw = json.loads(record.read_text())
            return Usage(int(raw["bytes"]), int(raw["inodes"]))
        except (OSError, ValueError, KeyError, TypeError):
            measured = usage(self.diff(diff_id))  # a layer an older pycri unpacked
            with contextlib.suppress(OSError):
                _write_usage(record, measured)
            return measured

    @contextlib.contextmanager
    def create(self, diff_id: str) -> Iterator[Path]:
        """Yield an empty directory to unpack into; publish it if the block ends without error."""
        work = self.tmp / uuid.uuid4().hex
        (work / "diff").mkdir(parents=True)
        try:
            yield work / "diff"
            _write_usage(work / USAGE_FILE, usage(work / "diff"))
            os.rename(work, self.dir(diff_id))
        finally:
            if work.exists():
                remove_tree(work)

    def delete(self, diff_id: str) -> None:
        """Take the layer out of the store at once (a rename: garbage collection holds the pull
        leases' lock meanwhile), and delete its files in the background."""
        doomed = self.trash / uuid.uuid4().hex
        try:
            os.rename(self.dir(diff_id), doomed)
        except FileNotFoundError:
            return
        self._doomed.put(doomed)
        with self._remover_lock:
            if self._remover is None:
                self._remover = threading.Thread(target=self._remove_doomed, name="layer-remover", daemon=True)
                self._remover.start()

    def _remove_doomed(self) -> None:
        while True:
            doomed = self._doomed.get()
            with contextlib.suppress(OSError):
                remove_tree(doomed)

    def diff_ids(self) -> Iterator[str]:
        for entry in os.scandir(self.root):
            if not entry.name.startswith("."):
                yield f"sha256:{entry.name}"

    def clear_tmp(self) -> None:
        remove_tree(self.tmp)
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)


USAGE_FILE = "usage.json"


def _write_usage(path: Path, measured: Usage) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    temp.write_text(json.dumps({"bytes": measured.bytes, "inodes": measured.inodes}))
    os.rename(temp, path)
