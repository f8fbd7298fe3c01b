"""runtime/cgroup_lock.py: which cgroup.procs the early no-op migration writes, and that the
write moves nothing (the process stays in its own cgroup)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pycri.runtime import cgroup_lock


def tree(tmp_path: Path, *dirs: str) -> str:
    for d in dirs:
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
        (tmp_path / d / "cgroup.procs").write_text("")
    return str(tmp_path)


def proc_cgroup(tmp_path: Path, text: str) -> str:
    path = tmp_path / "self-cgroup"
    path.write_text(text)
    return str(path)


def test_the_unified_hierarchy_first_on_a_hybrid_host(tmp_path: Path) -> None:
    root = tree(tmp_path, "unified/pod", "pids/pod", "memory/pod")
    text = "12:pids:/pod\n11:memory:/pod\n1:name=systemd:/pod\n0::/pod\n"
    assert cgroup_lock.own_procs_file(proc_cgroup(tmp_path, text), root) == f"{root}/unified/pod/cgroup.procs"


def test_cgroup_v2_and_its_root(tmp_path: Path) -> None:
    root = tree(tmp_path, ".")
    assert cgroup_lock.own_procs_file(proc_cgroup(tmp_path, "0::/\n"), root) == f"{root}/cgroup.procs"


def test_a_v1_hierarchy_when_no_unified_one_is_mounted(tmp_path: Path) -> None:
    root = tree(tmp_path, "pids/a/b")
    text = "5:cpu,cpuacct:/a/b\n4:pids:/a/b\n1:name=systemd:/a/b\n0::/a/b\n"
    assert cgroup_lock.own_procs_file(proc_cgroup(tmp_path, text), root) == f"{root}/pids/a/b/cgroup.procs"


@pytest.mark.parametrize("text", ["", "garbage\n", "0::/../x\n", "3:pids:relative\n"])
def test_nothing_usable_means_no_write(tmp_path: Path, text: str) -> None:
    root = tree(tmp_path, "unified", "pids")
    assert cgroup_lock.own_procs_file(proc_cgroup(tmp_path, text), root) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_the_warm_write_leaves_the_process_in_its_cgroup() -> None:
    program = ("import sys, time\n"
               "from pycri.runtime import cgroup_lock\n"
               "before = open('/proc/self/cgroup').read()\n"
               "path = cgroup_lock.warm()\n"
               "assert cgroup_lock.warm() == path, 'once per process'\n"
               "time.sleep(0.5)\n"
               "assert open('/proc/self/cgroup').read() == before\n"
               "print(path)\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("cgroup.procs")
