"""common.fs: disk usage of a tree and rm -rf (images' layers, containers' writable layers,
pods' directories)."""
from __future__ import annotations

import os
from pathlib import Path

from pycri.common.fs import Usage, remove_tree, usage


def test_usage_counts_a_hard_link_once(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_bytes(b"x" * 10000)
    once = usage(tree)
    os.link(tree / "d" / "f", tree / "link")
    os.symlink("d/f", tree / "sym")
    twice = usage(tree)
    assert once.inodes == 3 and twice.inodes == 4  # tree itself, d, f; then the symlink
    assert once.bytes >= 10000 and twice.bytes >= once.bytes
    assert usage(tmp_path / "missing") == Usage(0, 1)


def test_remove_tree_without_write_permission(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "ro" / "sub").mkdir(parents=True)
    (tree / "ro" / "sub" / "f").write_text("x")
    os.chmod(tree / "ro" / "sub", 0o500)
    os.chmod(tree / "ro", 0o500)
    remove_tree(tree)
    assert not tree.exists()
    remove_tree(tree)  # nothing there: fine
