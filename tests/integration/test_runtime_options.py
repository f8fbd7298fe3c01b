"""Less common paths: --no-pivot, --preserve-fds, kill --all, update from stdin, a failure
after the init is ready (resources) and an init that dies before `start`."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.integration.conftest import LAYOUT, Runtime, cgroup_dirs, new_id, reap


def test_no_pivot(pycri: Runtime, make_bundle, tmp_path: Path, subreaper: set[int]) -> None:
    bundle = make_bundle("sh", "-c", "ls /; grep ' / / ' /proc/self/mountinfo | cut -d' ' -f5")
    cid = new_id()
    out = tmp_path / "out"
    with open(out, "wb") as stdout:
        pycri.create(cid, bundle, "--no-pivot", stdout=stdout)
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    pycri.run("start", cid, check=True)
    assert reap(pid) == 0
    listing = out.read_text().split()
    assert "bin" in listing and "etc" in listing and "busybox-lower" not in listing
    pycri.run("delete", cid, check=True)


def test_preserve_fds(pycri: Runtime, make_bundle, tmp_path: Path, subreaper: set[int]) -> None:
    bundle = make_bundle("sh", "-c", "cat <&3; ls /proc/self/fd")
    (tmp_path / "extra").write_text("through fd 3\n")
    cid = new_id()
    out = tmp_path / "out"
    with open(out, "wb") as stdout:  # a shell opens the file as fd 3 of `create`
        result = subprocess.run(["sh", "-c", f'exec "$@" 3<{tmp_path / "extra"}', "sh",
                                 *pycri.cmd("create", "--bundle", str(bundle.path), "--preserve-fds", "1", cid)],
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.DEVNULL, timeout=60)
    pycri.created.append(cid)
    pycri.cgroups[cid] = bundle.linux["cgroupsPath"]
    assert result.returncode == 0
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    pycri.run("start", cid, check=True)
    assert reap(pid) == 0
    lines = out.read_text().split()
    assert lines[:3] == ["through", "fd", "3"]
    assert sorted(lines[3:]) == ["0", "1", "2", "3", "4"]  # 4: ls's own directory fd
    pycri.run("delete", cid, check=True)


def test_kill_all_and_update_from_stdin(pycri: Runtime, make_bundle, subreaper: set[int]) -> None:
    bundle = make_bundle("sh", "-c", "sleep 1000 & sleep 1001 & wait")
    cid = new_id()
    pycri.create(cid, bundle)
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    pycri.run("start", cid, check=True)
    path = bundle.linux["cgroupsPath"]
    procs = LAYOUT.dir("pids", path) / "cgroup.procs"
    import time

    deadline = time.monotonic() + 60
    while len(procs.read_text().split()) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    result = pycri.run("update", "-r", "-", cid, input='{"pids": {"limit": 7}}')
    assert result.returncode == 0, result.stderr
    assert (LAYOUT.dir("pids", path) / "pids.max").read_text().strip() == "7"
    pycri.run("kill", "--all", cid, "KILL", check=True)
    assert reap(pid) == 137
    pycri.wait_status(cid, "stopped")
    deadline = time.monotonic() + 60
    while procs.read_text().split():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pycri.run("delete", cid, check=True)
    assert not cgroup_dirs(path)


def test_resource_failure_after_init_is_ready_cleans_up(pycri: Runtime, make_bundle, subreaper: set[int]) -> None:
    bundle = make_bundle("true")
    bundle.linux["resources"]["cpu"] = {"cpus": "63"}  # no such CPU: the kernel refuses it
    bundle.write()
    cid = new_id()
    result = pycri.create(cid, bundle, check=False)
    assert result.returncode == 1 and b"cpuset.cpus" in result.stderr
    assert not (pycri.root / cid).exists()
    assert not cgroup_dirs(bundle.linux["cgroupsPath"])


def test_start_after_the_init_died(pycri: Runtime, make_bundle, subreaper: set[int]) -> None:
    bundle = make_bundle("true")
    cid = new_id()
    pycri.create(cid, bundle)
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    os.kill(pid, 9)
    assert reap(pid) == 137
    assert pycri.state(cid)["status"] == "stopped"
    result = pycri.run("start", cid)
    assert result.returncode == 1 and "stopped" in result.stderr
    pycri.run("delete", cid, check=True)
