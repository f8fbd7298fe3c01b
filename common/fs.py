"""File-system helpers the domain packages share: disk usage of a tree and rm -rf.

Used by images (layers), containers (a container's writable layer and its removal) and
sandbox (a pod's directories).
"""
from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Usage:
    bytes: int
    inodes: int


def usage(path: Path) -> Usage:
    """Disk blocks in bytes and inodes used under `path` (hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
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
