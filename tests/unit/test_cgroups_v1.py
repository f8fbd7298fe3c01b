"""cgroup v1 (and hybrid) manager on fake cgroupfs trees."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import cgroups
from cgroups import CgroupError, detect, manager_from_state, new_manager
from cgroups.resources import DeviceRule, Resources
from cgroups.v1 import V1Manager

HIERARCHIES = ("cpu,cpuacct", "cpuset", "memory", "pids", "devices", "hugetlb", "blkio", "freezer", "systemd")
FILES = {
    "cpu,cpuacct": ["cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.rt_period_us", "cpu.rt_runtime_us",
                    "cpuacct.usage"],
    "cpuset": ["cpuset.cpus", "cpuset.mems"],
    "memory": ["memory.limit_in_bytes", "memory.soft_limit_in_bytes", "memory.memsw.limit_in_bytes",
               "memory.swappiness", "memory.usage_in_bytes", "memory.stat", "memory.oom_control"],
    "pids": ["pids.max", "pids.current"],
    "devices": ["devices.allow", "devices.deny"],
    "hugetlb": ["hugetlb.2MB.limit_in_bytes"],
    "blkio": ["blkio.weight"],
}


def fake_tree(root: Path, path: str = "", unified: bool = True) -> Path:
    """A v1 tree with co-mounted cpu,cpuacct (+ links), like many distributions; `path`
    directories pre-made with their control files, as the kernel would."""
    for h in HIERARCHIES:
        (root / h).mkdir(parents=True, exist_ok=True)
        (root / h / "cgroup.procs").write_text("")
    (root / "cpu").symlink_to("cpu,cpuacct")
    (root / "cpuacct").symlink_to("cpu,cpuacct")
    (root / "cpuset" / "cpuset.cpus").write_text("0-3\n")
    (root / "cpuset" / "cpuset.mems").write_text("0\n")
    if unified:
        (root / "unified").mkdir()
        (root / "unified" / "cgroup.procs").write_text("")
        (root / "unified" / "cgroup.controllers").write_text("")
    if path:
        for h in HIERARCHIES + (("unified",) if unified else ()):
            d = root / h
            for part in path.strip("/").split("/"):
                d = d / part
                d.mkdir(exist_ok=True)
                for name in FILES.get(h, []) + ["cgroup.procs"]:
                    (d / name).write_text("")
    return root


OWN = {"cpu,cpuacct": "/", "cpuset": "/", "memory": "/user.slice", "pids": "/", "devices": "/", "hugetlb": "/",
       "blkio": "/", "freezer": "/", "name=systemd": "/init.scope", "": "/init.scope"}


def test_detect(tmp_path: Path) -> None:
    assert detect(str(fake_tree(tmp_path / "v1"))) == 1
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cgroup.controllers").write_text("cpu memory\n")
    assert detect(str(tmp_path / "v2")) == 2


def test_paths_absolute_relative_and_default(tmp_path: Path) -> None:
    root = fake_tree(tmp_path)
    manager = new_manager("/kubepods/pod1/c1", "c1", root=str(root), own=OWN)
    assert isinstance(manager, V1Manager)
    assert sorted(manager.hierarchies) == sorted(HIERARCHIES)  # symlinks and unified are not hierarchies
    assert manager.paths()["memory"] == f"{root}/memory/kubepods/pod1/c1"
    assert manager.paths()["unified"] == f"{root}/unified/kubepods/pod1/c1"
    assert manager.controller("cpuacct") == manager.controller("cpu") == f"{root}/cpu,cpuacct/kubepods/pod1/c1"
    relative = new_manager("group/c1", "c1", root=str(root), own=OWN)
    assert relative.paths()["memory"] == f"{root}/memory/user.slice/group/c1"
    assert relative.paths()["systemd"] == f"{root}/systemd/init.scope/group/c1"
    default = new_manager("", "c9", root=str(root), own=OWN)
    assert default.paths()["pids"] == f"{root}/pids/c9"
    with pytest.raises(ValueError):
        new_manager("/", "c1", root=str(root), own=OWN)


def test_create_copies_cpusets_down(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "/a/b")
    manager = new_manager("/a/b", "b", root=str(root), own=OWN)
    manager.create()
    assert (root / "cpuset" / "a" / "cpuset.cpus").read_text() == "0-3"
    assert (root / "cpuset" / "a" / "b" / "cpuset.mems").read_text() == "0"


def test_create_add_destroy(tmp_path: Path) -> None:
    root = fake_tree(tmp_path)
    manager = new_manager("/pods/c1", "c1", root=str(root), own=OWN)
    manager.create()
    assert all(Path(p).is_dir() for p in manager.paths().values()) and manager.exists()
    for p in manager.paths().values():  # what the kernel would have
        (Path(p) / "cgroup.procs").write_text("")
    manager.add(4242)
    assert all((Path(p) / "cgroup.procs").read_text() == "4242" for p in manager.paths().values())
    assert manager.pids() == [4242]
    for p in manager.paths().values():
        (Path(p) / "cgroup.procs").unlink()
    manager.destroy(timeout=0.1)
    assert not manager.exists()
    assert (root / "memory" / "pods").is_dir()  # only the container's own directory goes
    manager.destroy(timeout=0.1)  # gone already: fine


def test_apply_resources(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "/c1")
    manager = new_manager("/c1", "c1", root=str(root), own=OWN)
    (root / "memory" / "c1" / "memory.limit_in_bytes").write_text("9223372036854771712")
    warnings = manager.apply(Resources.from_spec({
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 64 << 20, "swappiness": 10},
        "pids": {"limit": 100},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
        "blockIO": {"weight": 300},
        "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
                    {"allow": True, "type": "b", "major": 8, "access": "m"}],
    }))
    assert warnings == []
    c1 = lambda h, f: (root / h / "c1" / f).read_text()  # noqa: E731
    assert c1("cpu,cpuacct", "cpu.shares") == "512"
    assert c1("cpu,cpuacct", "cpu.cfs_quota_us") == "50000"
    assert c1("cpu,cpuacct", "cpu.cfs_period_us") == "100000"
    assert c1("cpuset", "cpuset.cpus") == "0-1"
    assert c1("memory", "memory.limit_in_bytes") == str(64 << 20)
    assert c1("memory", "memory.memsw.limit_in_bytes") == str(64 << 20)
    assert c1("memory", "memory.soft_limit_in_bytes") == str(32 << 20)
    assert c1("memory", "memory.swappiness") == "10"
    assert c1("pids", "pids.max") == "100"
    assert c1("hugetlb", "hugetlb.2MB.limit_in_bytes") == str(4 << 20)
    assert c1("blkio", "blkio.weight") == "300"
    assert c1("devices", "devices.allow") == "b 8:* m"  # the last write (the fake file keeps one)
    assert c1("devices", "devices.deny") == "a"
    manager.apply(Resources.from_spec({"pids": {"limit": -1}, "memory": {"limit": -1}}))
    assert c1("pids", "pids.max") == "max"
    assert c1("memory", "memory.limit_in_bytes") == "-1" and c1("memory", "memory.memsw.limit_in_bytes") == "-1"


def test_hugepage_limits_without_a_v1_hugetlb_hierarchy_are_a_warning(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "/c1")
    shutil.rmtree(root / "hugetlb")  # a hybrid host with hugetlb bound to the unified hierarchy
    manager = new_manager("/c1", "c1", root=str(root), own=OWN)
    warnings = manager.apply(Resources.from_spec({"hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
                                                  "pids": {"limit": 10}}))
    assert warnings == ["hugepage limits ignored: no hugetlb controller in the v1 hierarchy"]
    assert (root / "pids" / "c1" / "pids.max").read_text() == "10"


def test_memory_and_swap_write_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_tree(tmp_path, "/c1")
    manager = new_manager("/c1", "c1", root=str(root), own=OWN)
    writes: list[str] = []
    real = cgroups.v1.write_file
    monkeypatch.setattr(cgroups.v1, "write_file", lambda d, n, v: (writes.append(n), real(d, n, v)))
    (root / "memory" / "c1" / "memory.limit_in_bytes").write_text(str(100 << 20))
    manager.apply(Resources.from_spec({"memory": {"limit": 200 << 20, "swap": 300 << 20}}))  # growing: memsw first
    assert writes == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    writes.clear()
    manager.apply(Resources.from_spec({"memory": {"limit": 50 << 20, "swap": 60 << 20}}))  # shrinking: memory first
    assert writes == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]


def test_refusals(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "/c1")
    (root / "memory" / "c1" / "memory.memsw.limit_in_bytes").unlink()  # no swap accounting
    manager = new_manager("/c1", "c1", root=str(root), own=OWN)
    manager.apply(Resources.from_spec({"memory": {"limit": 10 << 20, "swap": 10 << 20}}))  # no swap: fine
    with pytest.raises(CgroupError, match="swap accounting"):
        manager.apply(Resources.from_spec({"memory": {"limit": 10 << 20, "swap": 20 << 20}}))
    with pytest.raises(CgroupError, match="cgroup v2"):
        manager.apply(Resources.from_spec({"unified": {"memory.high": "1"}}))
    with pytest.raises(CgroupError, match="must be an integer"):
        Resources.from_spec({"memory": {"limit": "1G"}})
    with pytest.raises(CgroupError, match="bad access"):
        Resources.from_spec({"devices": [{"allow": True, "access": "x"}]})


def test_stats_and_state_round_trip(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "/c1", unified=False)
    manager = new_manager("/c1", "c1", root=str(root), own=OWN)
    c1 = root / "memory" / "c1"
    (c1 / "memory.usage_in_bytes").write_text("1000000\n")
    (c1 / "memory.stat").write_text("cache 5\ntotal_inactive_file 300000\n")
    (c1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (root / "cpu,cpuacct" / "c1" / "cpuacct.usage").write_text("123456789\n")
    (root / "pids" / "c1" / "pids.current").write_text("3\n")
    (root / "pids" / "c1" / "pids.max").write_text("max\n")
    stats = manager.stats()
    assert stats.to_dict() == {"cpu_usage_ns": 123456789, "memory_usage": 1000000, "memory_working_set": 700000,
                               "memory_limit": 0, "pids_current": 3, "pids_limit": 0}
    again = manager_from_state(manager.to_state())
    assert again.paths() == manager.paths() and again.version == 1


def test_device_rule_lines() -> None:
    assert DeviceRule(False).v1_line() == "a"
    assert DeviceRule(True, "c", None, None, "m").v1_line() == "c *:* m"
    assert DeviceRule(True, "c", 136, -1, "rwm").v1_line() == "c 136:* rwm"
