"""Device access of containers on cgroup v2 (the eBPF device filter of cgroups/devices_bpf.py):
a container with CAP_MKNOD and the default device rules makes a node of the host's disk
(mknod is allowed, as runc allows it) but cannot open it; /dev/null and /dev/zero work; an
allow rule for the disk opens it. Without a device filter on v2 (before it), root in the
container read the host's disk."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tests.integration.conftest import CGROUP_ROOT, Bundle, Runtime, new_id, reap

DISK_MARKER = "pycri-uml-disk"  # the first line of run-in-v2.sh's scratch disk
SCRIPT = """
mknod /dev/hostdisk b {major} {minor} && echo mknod-ok
head -n 1 /dev/hostdisk 2>&1
head -c 4 /dev/zero | wc -c
echo x > /dev/null && echo null-ok
"""


def host_disk() -> tuple[int, int]:
    """The major:minor of a block device of this host with the scratch disk's contents."""
    for name in sorted(os.listdir("/dev")):
        path = f"/dev/{name}"
        st = os.stat(path)
        if stat.S_ISBLK(st.st_mode):
            with open(path, "rb") as f:
                if f.read(len(DISK_MARKER)).decode(errors="replace") == DISK_MARKER:
                    return os.major(st.st_rdev), os.minor(st.st_rdev)
    raise AssertionError("no block device with the scratch disk's marker: is this run-in-v2.sh's guest?")


def run_container(runtime: Runtime, bundle: Bundle, tmp_path: Path, reaped: set[int]) -> str:
    cid = new_id()
    out = tmp_path / f"{cid}.out"
    with open(out, "wb") as stdout:
        runtime.create(cid, bundle, stdout=stdout, stderr=stdout)
    state = runtime.state(cid)
    reaped.add(state["pid"])
    cgroup = CGROUP_ROOT / bundle.linux["cgroupsPath"].lstrip("/")
    assert cgroup.is_dir()
    runtime.run("start", cid, check=True)
    assert reap(state["pid"], timeout=120) == 0
    runtime.wait_status(cid, "stopped", timeout=60)
    runtime.run("delete", cid, check=True)
    assert not cgroup.exists(), "the container's cgroup was left behind"
    return out.read_text()


def mknod_bundle(make_bundle, major: int, minor: int) -> Bundle:
    bundle = make_bundle("sh", "-c", SCRIPT.format(major=major, minor=minor))
    caps = bundle.config["process"]["capabilities"]
    for name in ("bounding", "effective", "permitted"):
        caps[name] = sorted(set(caps.get(name, [])) | {"CAP_MKNOD"})
    return bundle.write()


def test_the_default_rules_keep_the_hosts_disk_closed(pycri: Runtime, make_bundle, tmp_path: Path,
                                                      subreaper: set[int]) -> None:
    major, minor = host_disk()
    bundle = mknod_bundle(make_bundle, major, minor)
    assert bundle.linux["resources"]["devices"] == [{"allow": False, "access": "rwm"}]  # runc spec's
    output = run_container(pycri, bundle, tmp_path, subreaper).splitlines()
    assert output == ["mknod-ok", "head: /dev/hostdisk: Operation not permitted", "4", "null-ok"], output


def test_an_allow_rule_opens_the_disk(pycri: Runtime, make_bundle, tmp_path: Path, subreaper: set[int]) -> None:
    major, minor = host_disk()
    bundle = mknod_bundle(make_bundle, major, minor)
    bundle.linux["resources"]["devices"].append(
        {"allow": True, "type": "b", "major": major, "minor": minor, "access": "r"})
    output = run_container(pycri, bundle.write(), tmp_path, subreaper).splitlines()
    assert output == ["mknod-ok", DISK_MARKER, "4", "null-ok"], output


def test_update_replaces_the_filter(pycri: Runtime, make_bundle, subreaper: set[int]) -> None:
    """`update` with device rules attaches a program made from them alone (on v2 they are the
    whole list; v1 adds them to the earlier ones) and detaches the one from create."""
    from pycri.kernel.bpf import LinuxBpf

    major, minor = host_disk()
    bundle = make_bundle("sleep", "1000")
    caps = bundle.config["process"]["capabilities"]
    for name in ("bounding", "effective", "permitted"):
        caps[name] = sorted(set(caps.get(name, [])) | {"CAP_MKNOD"})
    bundle.write()
    cid = new_id()
    pycri.create(cid, bundle)
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    pycri.run("start", cid, check=True)
    probe = ("[ -e /dev/hostdisk ] || mknod /dev/hostdisk b {} {}; head -n 1 /dev/hostdisk 2>&1; "
             "echo x > /dev/null 2>&1 && echo null-ok").format(major, minor)
    before = pycri.run("exec", cid, "sh", "-c", probe, check=True).stdout.splitlines()
    assert before == ["head: /dev/hostdisk: Operation not permitted", "null-ok"], before
    rules = {"devices": [{"allow": False, "access": "rwm"},
                         {"allow": True, "type": "b", "major": major, "minor": minor, "access": "r"}]}
    pycri.run("update", "-r", "-", cid, input=json.dumps(rules), check=True)
    after = pycri.run("exec", cid, "sh", "-c", probe).stdout.splitlines()
    assert after[0] == DISK_MARKER and "null-ok" not in after, after
    cgroup = CGROUP_ROOT / bundle.linux["cgroupsPath"].lstrip("/")
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert len(LinuxBpf().device_program_ids(fd)) == 1
    finally:
        os.close(fd)
    pycri.run("kill", cid, "KILL", check=True)
    assert reap(pid, timeout=120) == 137
    pycri.wait_status(cid, "stopped", timeout=60)
    pycri.run("delete", cid, check=True)
    assert not cgroup.exists()
