"""Resolve a path inside the rootfs the way the container will see it.

Every symlink met on the way is followed as if the rootfs were `/`: absolute targets start
again at the rootfs and `..` stops at it, so a hostile image cannot point a mount target
at the host. Components that do not exist yet are kept as written (they will be created).
"""
from __future__ import annotations

import os
import stat

from pycri.runtime.errors import RuntimeFailure

MAX_SYMLINKS = 255


def secure_join(root: str, unsafe_path: str) -> str:
    root = os.path.abspath(root).rstrip("/") or "/"
    pending = [part for part in unsafe_path.split("/") if part]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise RuntimeFailure(f"{unsafe_path}: too many levels of symbolic links")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending = [p for p in target.split("/") if p] + pending
    return os.path.join(root, *resolved) if resolved else root


def within(root: str, path: str) -> bool:
    root = os.path.abspath(root).rstrip("/")
    return path == root or path.startswith(root + "/") or root == ""


def check_within(root: str, path: str) -> None:
    """Refuse a path whose real location (all symlinks followed by the kernel) is outside root."""
    real = os.path.realpath(path)
    if not within(os.path.realpath(root), real):
        raise RuntimeFailure(f"mount target {path} resolves outside the rootfs ({real})")
