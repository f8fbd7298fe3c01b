"""The cgroup v2 device filter against the real kernel of this host: the verifier accepts
what cgroups.devices_bpf emits, and V2Manager.set_devices attaches it to a v2 cgroup, where
it decides a process's open() of device nodes. A hybrid (v1) host has the v2 hierarchy at
/sys/fs/cgroup/unified, and device programs attached there apply to its processes too; a v2
host has it at /sys/fs/cgroup. Only processes this test starts are moved, into a cgroup it
makes and removes."""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycri.cgroups.devices_bpf import LICENSE, PROGRAM_NAME, device_filter
from pycri.cgroups.resources import DEFAULT_ALLOWED_DEVICES, DeviceRule
from pycri.cgroups.v2 import V2Manager

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bpf(2) for cgroup device programs needs root")


def _v2_root() -> Path | None:
    for candidate in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (candidate / "cgroup.procs").exists() and (candidate / "cgroup.controllers").exists():
            return candidate
    return None


RULE_SETS = [
    [DeviceRule(False)] + list(DEFAULT_ALLOWED_DEVICES),
    [DeviceRule(True)],
    [DeviceRule(True), DeviceRule(False, "b", None, None, "rw"), DeviceRule(False, "c", 10, 200, "rwm")],
    [DeviceRule(False), DeviceRule(True, "c", 0xFFFFFFFF, 0x80000000, "w"), DeviceRule(True, "b", 7, None, "r")],
    [],
]


@pytest.mark.parametrize("rules", RULE_SETS, ids=range(len(RULE_SETS)))
def test_the_verifier_accepts_the_programs(rules: list[DeviceRule]) -> None:
    from pycri.kernel.bpf import LinuxBpf

    bpf = LinuxBpf()
    fd = bpf.load_device_program(device_filter(rules), LICENSE, PROGRAM_NAME)
    try:
        assert bpf.program_name(fd) == PROGRAM_NAME
    finally:
        os.close(fd)


@pytest.fixture
def v2_cgroup() -> Iterator[V2Manager]:
    root = _v2_root()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    manager = V2Manager(str(root), f"/pycri-it-devices-{uuid.uuid4().hex[:8]}")
    os.mkdir(manager.dir)
    yield manager
    leftover = manager.pids()
    for pid in leftover:  # only ever our own probe, should it have outlived its timeout
        os.kill(pid, 9)
    manager.destroy(timeout=60)
    assert not leftover, f"a probe process was left in {manager.dir}"


PROBE = """
import os, sys
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
results = []
for path in sys.argv[2:]:
    try:
        os.close(os.open(path, os.O_RDONLY))
        results.append("ok")
    except OSError as e:
        results.append(str(e.errno))
print(" ".join(results))
"""


def probe(cgroup: V2Manager, *paths: str) -> list[str]:
    """Open each path read-only from a new process in the cgroup: "ok" or the errno."""
    result = subprocess.run([sys.executable, "-c", PROBE, os.path.join(cgroup.dir, "cgroup.procs"), *paths],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def _block_device() -> str:
    for name in sorted(os.listdir("/dev")):
        path = f"/dev/{name}"
        try:
            if stat.S_ISBLK(os.stat(path).st_mode):
                return path
        except OSError:
            continue
    pytest.skip("no block device node in /dev")


def test_the_filter_decides_opens_and_an_update_replaces_it(v2_cgroup: V2Manager) -> None:
    from pycri.kernel.bpf import LinuxBpf

    disk = _block_device()
    denied = str(errno.EPERM)
    v2_cgroup.set_devices([DeviceRule(False)] + list(DEFAULT_ALLOWED_DEVICES))
    assert probe(v2_cgroup, "/dev/null", "/dev/zero", disk) == ["ok", "ok", denied]
    st = os.stat(disk)
    v2_cgroup.set_devices([DeviceRule(False), DeviceRule(True, "b", os.major(st.st_rdev), os.minor(st.st_rdev), "r")])
    assert probe(v2_cgroup, "/dev/null", disk) == [denied, "ok"]
    bpf = LinuxBpf()
    fd = os.open(v2_cgroup.dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ids = bpf.device_program_ids(fd)  # the first program was detached by the update
    finally:
        os.close(fd)
    assert len(ids) == 1
