"""Unpacked layers: one directory per layer, <root>/<diff_id hex>/diff, an overlayfs lower dir.

A layer is unpacked into <root>/.tmp/<random>/diff and renamed into place only once
its diff_id has been verified; whatever is under .tmp at start-up is a crash's
leftover. Layers are keyed by diff_id, so images that share a layer share its directory.
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from pycri.common.fs import Trash, Usage, remove_tree, usage


class LayerStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / ".tmp"
        for directory in (root, self.tmp):  # root-only: layers keep their setuid binaries
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(directory, 0o700)
        self.trash = root / ".trash"
        self._trash = Trash(self.trash, "layer-remover")

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
        self._trash.discard(self.dir(diff_id))

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
