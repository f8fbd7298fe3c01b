"""File-system helpers the domain packages share: disk usage of a tree, rm -rf, and a trash
directory whose contents are removed in the background.

Used by images (layers), containers (a container's writable layer and its removal) and
sandbox (a pod's directories).
"""
from __future__ import annotations

import contextlib
import os
import queue
import shutil
import stat
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Usage:
    bytes: int
    inodes: int


def usage(path: Path) -> Usage:
    """Disk blocks in bytes and inodes used under `path` (hard links counted once). A file
    removed while this walks (a container at work, or one being removed) is left out.

    A scandir walk: each entry's lstat comes from its DirEntry (no path joined and looked up
    again, as os.walk + os.lstat would), about half the cost for the small writable layers that
    kubelet's stats calls ask about every 10 s per container. Symbolic links are not followed;
    a directory reached twice (only through a bind mount) is counted and walked once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    pending = [os.fspath(path)]
    while pending:
        try:
            directory = os.scandir(pending.pop())
        except (FileNotFoundError, NotADirectoryError):
            continue
        with directory as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    pending.append(entry.path)
    return Usage(total, len(seen) + 1)


def remove_tree(path: Path) -> None:
    """rm -rf, also for directories without write permission (unpacked layers keep their modes)."""
    if not os.path.lexists(path):
        return

    def make_writable(func, p, _exc):  # type: ignore[no-untyped-def]
        parent = os.path.dirname(p)
        with contextlib.suppress(OSError):
            os.chmod(parent, 0o700)
        func(p)

    shutil.rmtree(path, onerror=make_writable)


class Trash:
    """A directory whose contents are removed in the background: `discard` takes a tree away
    at once (a rename into the trash, on the same file system) and one thread removes it
    there. What a stop left in the trash is removed when it is made."""

    def __init__(self, directory: Path, name: str = "trash") -> None:
        self.directory = directory
        self.name = name  # the remover thread's
        with contextlib.suppress(OSError):  # what a stop left to delete (what cannot go stays)
            remove_tree(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._doomed: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self._remover: threading.Thread | None = None
        self._lock = threading.Lock()

    def discard(self, path: Path) -> bool:
        """Take `path` away into the trash, to be removed in the background; False (and nothing
        done) when there is no `path`. OSError when it cannot be moved (another file system)."""
        doomed = self.directory / uuid.uuid4().hex
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            if os.path.lexists(path):  # the trash is what is missing
                raise
            return False
        self._doomed.put(doomed)
        with self._lock:
            if self._remover is None:
                self._remover = threading.Thread(target=self._remove_doomed, name=self.name, daemon=True)
                self._remover.start()
        return True

    def remove(self, path: Path) -> None:
        """rm -rf `path`: in the background when it can be moved into the trash, here otherwise."""
        try:
            self.discard(path)
        except OSError:
            remove_tree(path)

    def _remove_doomed(self) -> None:
        while True:
            doomed = self._doomed.get()
            with contextlib.suppress(OSError):
                remove_tree(doomed)
