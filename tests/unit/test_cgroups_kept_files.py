"""cgroups/kept_files.py: a manager's usage files read by descriptors kept open (pread at offset
0), within a shared budget, and closed when asked. On plain files in a tmp dir; the real cgroup
files are read in tests/integration/test_cgroup_usage.py."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycri.cgroups.base import PLAIN, CgroupManager, read_int, read_keyed
from pycri.cgroups.kept_files import KeptFiles


@pytest.fixture
def cap() -> Iterator[None]:
    saved = KeptFiles.cap
    yield
    KeptFiles.cap = saved


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_kept_file_is_read_afresh_each_time(tmp_path: Path) -> None:
    (tmp_path / "pids.current").write_text("2\n")
    (tmp_path / "memory.stat").write_text("rss 10\ncache 20\n")
    files = KeptFiles()
    try:
        assert read_int(str(tmp_path), "pids.current", files=files) == 2
        assert read_keyed(str(tmp_path), "memory.stat", files) == {"rss": 10, "cache": 20}
        assert len(files) == 2
        before = open_fds()
        (tmp_path / "pids.current").write_text("3\n")  # (the same inode, as the kernel's own text changes)
        assert read_int(str(tmp_path), "pids.current", files=files) == 3
        assert open_fds() == before  # no descriptor opened again
    finally:
        files.close()
    assert len(files) == 0


def test_a_file_that_is_gone_reads_as_a_plain_read_does(tmp_path: Path) -> None:
    files = KeptFiles()
    assert read_int(str(tmp_path), "missing", default=7, files=files) == 7
    assert len(files) == 0
    with pytest.raises(FileNotFoundError):
        files.read(str(tmp_path / "missing"))


def test_past_the_budget_files_are_read_without_keeping_them(tmp_path: Path, cap: None) -> None:
    for name in "abc":
        (tmp_path / name).write_text(name)
    KeptFiles.cap = KeptFiles._open + 1
    first, second = KeptFiles(), KeptFiles()
    try:
        assert first.read(str(tmp_path / "a")) == "a" and len(first) == 1
        assert second.read(str(tmp_path / "b")) == "b" and len(second) == 0  # the budget is spent
        first.close()  # its descriptor goes back to the budget
        assert second.read(str(tmp_path / "c")) == "c" and len(second) == 1
    finally:
        first.close()
        second.close()


def test_a_closed_reader_keeps_nothing_more(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    files = KeptFiles()
    files.close()
    assert files.read(str(tmp_path / "a")) == "a"
    assert len(files) == 0


def test_a_manager_keeps_its_files_until_it_closes_them() -> None:
    manager = CgroupManager()
    assert manager.files is PLAIN
    manager.keep_files()
    kept = manager.files
    assert isinstance(kept, KeptFiles)
    manager.keep_files()
    assert manager.files is kept  # (once)
    manager.close_files()
    assert manager.files is PLAIN and CgroupManager.files is PLAIN
