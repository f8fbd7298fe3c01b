"""CgroupManager.usage(), the brief read ContainerStats uses, gives the same CRI figures as the
full stats() on a real cgroup (v1 here; v2 in the cgroup v2 guest): a process that has used
some memory and CPU, a memory limit, two pids."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from pycri import cgroups
from pycri.cgroups.resources import MemoryResources, Resources

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

# allocates ~8 MB, burns a little CPU, starts a child (2 pids), then waits
PROGRAM = ("import subprocess, sys, time\n"
           "x = bytearray(8 << 20)\n"
           "sum(range(300000))\n"
           "child = subprocess.Popen(['sleep', '60'])\n"
           "print('ready', flush=True)\n"
           "sys.stdin.read()\n"
           "child.kill()\n")


@pytest.fixture
def busy_cgroup() -> Iterator[cgroups.CgroupManager]:
    manager = cgroups.new_manager(f"/pycri-usage-test-{uuid.uuid4().hex[:8]}", "c")
    manager.create()
    manager.apply(Resources(memory=MemoryResources(limit=256 << 20)))
    process = subprocess.Popen([sys.executable, "-c", PROGRAM], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, preexec_fn=lambda: manager.add(os.getpid()))
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield manager
    finally:
        process.communicate("", timeout=60)
        manager.destroy()


def test_usage_matches_stats_on_what_cri_reports(busy_cgroup: cgroups.CgroupManager) -> None:
    brief, full = busy_cgroup.usage(), busy_cgroup.stats()
    assert brief.memory_limit == full.memory_limit == 256 << 20
    assert brief.pids_current == full.pids_current == 2
    assert 0 < brief.cpu_usage_ns <= full.cpu_usage_ns
    for name in ("memory_usage", "memory_working_set", "memory_rss"):  # idle now: a page or two apart at most
        assert abs(getattr(brief, name) - getattr(full, name)) <= 1 << 20, name
        assert getattr(brief, name) >= 8 << 20, name
    assert 0 < brief.pgfault <= full.pgfault and brief.pgmajfault <= full.pgmajfault


def test_kept_files_read_the_cgroups_figures_afresh(busy_cgroup: cgroups.CgroupManager) -> None:
    # cgroups/kept_files.py: a kept descriptor, read again at offset 0, gives the file's text as
    # the kernel makes it now (a third pid, a new limit), not the text of its first read
    busy_cgroup.keep_files()
    try:
        assert busy_cgroup.usage().pids_current == 2
        assert len(busy_cgroup.files) >= 4  # type: ignore[arg-type]
        extra = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: busy_cgroup.add(os.getpid()))
        try:
            busy_cgroup.apply(Resources(memory=MemoryResources(limit=128 << 20)))
            brief = busy_cgroup.usage()
            assert (brief.pids_current, brief.memory_limit) == (3, 128 << 20)
        finally:
            extra.kill()
            extra.wait()
        assert busy_cgroup.usage().pids_current == 2
    finally:
        busy_cgroup.close_files()
    assert busy_cgroup.files is cgroups.base.PLAIN


def test_a_kept_file_of_a_removed_cgroup_reads_as_a_plain_read_does() -> None:
    manager = cgroups.new_manager(f"/pycri-usage-test-{uuid.uuid4().hex[:8]}", "c")
    manager.create()
    manager.keep_files()
    try:
        assert manager.usage().pids_current == 0
        kept = len(manager.files)  # type: ignore[arg-type]
        manager.destroy()
        assert manager.usage().pids_current == 0  # (read_int's default: the file is gone)
        assert len(manager.files) < kept  # type: ignore[arg-type]  # the dead descriptors were let go
    finally:
        manager.close_files()
        manager.destroy()
