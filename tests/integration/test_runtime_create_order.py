"""What `create` leaves, whatever order it does its work in (runtime/create.py: the first
stage imports its modules while the parent moves it into the cgroups): the init, and only
the init, in every cgroup of the container before `start`; a cgroup namespace whose root is
the container's cgroup; and the kernel's side of a shortcut of the rootfs set-up (after a
recursive rslave, rprivate or runbindable of `/` no mount is shared, so the rootfs's mount
need not be looked up to be made private)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import LAYOUT, Runtime, cgroup_dirs, new_id, ns_link, reap

HIERARCHY_LINE_PARTS = 3  # "id:controllers:path" in /proc/<pid>/cgroup


def cgroup_lines(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup as {controllers: path} ("" for the unified hierarchy)."""
    lines = (line.split(":", 2) for line in text.splitlines() if line)
    return {parts[1]: parts[2] for parts in lines if len(parts) == HIERARCHY_LINE_PARTS}


def mounted_keys() -> set[str]:
    """The /proc/self/cgroup keys of the hierarchies mounted under /sys/fs/cgroup (v1) or "" (v2)."""
    if LAYOUT.v2:
        return {""}
    keys = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if " - cgroup " in line and str(Path(fields[4]).parent) == str(LAYOUT.root):
            options = line.split(" - ", 1)[1].split()[2].split(",")
            keys.add(",".join(o for o in options if o not in ("rw", "ro", "xattr", "noprefix", "clone_children",
                                                               "cpuset_v2_mode", "favordynmods")
                              and not o.startswith("release_agent")))
        if " - cgroup2 " in line and fields[4] == str(LAYOUT.root / "unified"):
            keys.add("")
    return keys


@pytest.mark.parametrize("cgroupns", [False, True], ids=["own-cgroup-ns-off", "own-cgroup-ns"])
def test_the_created_init_alone_is_in_every_cgroup_of_the_container(pycri: Runtime, make_bundle,
                                                                   subreaper: set[int], cgroupns: bool) -> None:
    bundle = make_bundle("sleep", "100")
    namespaces = [ns for ns in bundle.linux["namespaces"] if ns["type"] != "cgroup"]
    if cgroupns:
        namespaces.append({"type": "cgroup"})
    bundle.linux["namespaces"] = namespaces
    bundle.write()
    path = bundle.linux["cgroupsPath"]
    cid = new_id()
    pycri.create(cid, bundle)
    state = pycri.state(cid)
    assert state["status"] == "created"
    pid = state["pid"]
    subreaper.add(pid)
    dirs = cgroup_dirs(path)
    assert dirs
    for directory in dirs:  # every hierarchy (v1, and the unified one of a hybrid host) or the one tree
        assert (directory / "cgroup.procs").read_text().split() == [str(pid)], directory
    seen = cgroup_lines(Path(f"/proc/{pid}/cgroup").read_text())
    keys = mounted_keys()
    assert keys and keys <= set(seen)
    if cgroupns:
        assert ns_link(pid, "cgroup") != ns_link("self", "cgroup")
        # read from inside its cgroup namespace, the init's cgroup is that namespace's root
        inside = subprocess.run(["nsenter", "-t", str(pid), "-C", "cat", f"/proc/{pid}/cgroup"],
                                capture_output=True, text=True, check=True).stdout
        assert {key: cgroup for key, cgroup in cgroup_lines(inside).items() if key in keys} == dict.fromkeys(keys, "/")
    else:
        assert ns_link(pid, "cgroup") == ns_link("self", "cgroup")
        assert {key: cgroup for key, cgroup in seen.items() if key in keys} == dict.fromkeys(keys, path)
    pycri.run("start", cid, check=True)
    pycri.run("kill", cid, "KILL", check=True)
    assert reap(pid) == 137


@pytest.mark.parametrize("propagation", ["rslave", "rprivate", "runbindable"])
def test_a_recursive_propagation_change_of_root_leaves_no_mount_shared(propagation: str) -> None:
    """runtime.rootfs.leaves_none_shared's premise, in a mount namespace of its own whose
    mounts are all made shared first (in it only: the host's stay as they are)."""
    script = (f"mount --make-rshared / && grep -c ' shared:' /proc/self/mountinfo; mount --make-{propagation} / && "
              "grep -c ' shared:' /proc/self/mountinfo || true")
    result = subprocess.run(["unshare", "--mount", "--propagation", "unchanged", "sh", "-c", script],
                            capture_output=True, text=True)
    before, after = result.stdout.split()
    assert int(before) > 0, result.stdout + result.stderr
    assert int(after) == 0, result.stdout
