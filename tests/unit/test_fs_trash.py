"""common/fs.py's Trash: a tree is taken away at once and deleted in the background; what a
stop left in the trash goes when the trash is made again. RemoveContainer uses it."""
from __future__ import annotations

import os
import time
from pathlib import Path

from pycri.api.cri import api_pb2 as cri
from pycri.common.fs import Trash
from tests.unit.test_cri_service import new_test_cri_service


def wait_empty(directory: Path) -> list[str]:
    deadline = time.monotonic() + 30
    while os.listdir(directory) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.listdir(directory)


def make_tree(path: Path) -> None:
    (path / "a" / "b").mkdir(parents=True)
    (path / "a" / "b" / "file").write_text("x")
    (path / "locked").mkdir()
    (path / "locked" / "inside").write_text("y")
    os.chmod(path / "locked", 0o500)  # as unpacked layers keep their modes


def test_a_discarded_tree_is_gone_at_once_and_deleted_in_the_background(tmp_path: Path) -> None:
    trash = Trash(tmp_path / "trash")
    make_tree(tmp_path / "tree")
    assert trash.discard(tmp_path / "tree") is True
    assert not (tmp_path / "tree").exists()
    assert wait_empty(tmp_path / "trash") == []


def test_discarding_nothing_does_nothing(tmp_path: Path) -> None:
    trash = Trash(tmp_path / "trash")
    assert trash.discard(tmp_path / "absent") is False
    trash.remove(tmp_path / "absent")
    assert os.listdir(tmp_path / "trash") == []


def test_what_a_stop_left_goes_when_the_trash_is_made_again(tmp_path: Path) -> None:
    make_tree(tmp_path / "trash" / "left")
    Trash(tmp_path / "trash")
    assert os.listdir(tmp_path / "trash") == []


def test_remove_deletes_here_what_cannot_be_moved(tmp_path: Path) -> None:
    """A tree on another file system (here: a rename that fails) is removed in place."""
    trash = Trash(tmp_path / "trash")
    make_tree(tmp_path / "tree")
    os.rmdir(tmp_path / "trash")  # the rename has nowhere to go
    trash.remove(tmp_path / "tree")
    assert not (tmp_path / "tree").exists()


def test_a_removed_container_is_gone_at_once_and_its_files_deleted_after(tmp_path: Path) -> None:
    t = new_test_cri_service(tmp_path)
    container_id = t.create(t.run_pod())
    t.call("RemoveContainer", cri.RemoveContainerRequest(container_id=container_id))
    assert not (t.container_service.root / container_id).exists()
    assert wait_empty(t.container_service.trash.directory) == []
    assert t.container_service.trash.directory.parent == t.container_service.root.parent
