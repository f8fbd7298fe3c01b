"""cgroup v1 (and hybrid) manager on fake cgroupfs trees."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pycri import cgroups

from pycri.cgroups import CgroupError, detect, manager_from_state, new_manager
from pycri.cgroups.resources import DeviceRule, Resources
from pycri.cgroups import v1
from pycri.cgroups.v1 import V1Manager

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
    stats = manager.stats().to_dict()
    assert {k: stats[k] for k in ("cpu_usage_ns", "memory_usage", "memory_working_set", "memory_limit",
                                  "pids_current", "pids_limit")} == {
        "cpu_usage_ns": 123456789, "memory_usage": 1000000, "memory_working_set": 700000, "memory_limit": 0,
        "pids_current": 3, "pids_limit": 0}
    again = manager_from_state(manager.to_state())
    assert again.paths() == manager.paths() and again.version == 1


# What the CRI metrics read from a container's cgroup (test_cgroups_v2 writes the same in v2's files).
METRIC_STATS = {
    "cpu_usage_ns": 4_000_000_000, "cpu_user_ns": 3_000_000_000, "cpu_system_ns": 1_000_000_000, "cpu_periods": 10,
    "cpu_throttled_periods": 4, "cpu_throttled_ns": 2_500_000_000, "cpu_shares": 998, "cpu_period": 100000,
    "cpu_quota": 20000, "memory_usage": 1000, "memory_working_set": 800, "memory_limit": 64 << 20,
    "memory_max_usage": 4000, "memory_cache": 300, "memory_rss": 600, "memory_mapped_file": 50, "memory_swap": 100,
    "memory_kernel": 40, "memory_failcnt": 2, "pgfault": 7, "pgmajfault": 1, "hierarchy_pgfault": 70,
    "hierarchy_pgmajfault": 10, "oom_kills": 3, "memory_reservation": 1 << 20,
    "memory_swap_limit": 64 << 20,  # memory+swap: no swap
    "io": [{"major": 8, "minor": 0, "read_bytes": 4096, "write_bytes": 8192, "reads": 1, "writes": 2},
           {"major": 253, "minor": 1, "read_bytes": 0, "write_bytes": 512, "reads": 0, "writes": 0}],
    "pressure": {"cpu": (2500000, 7)},
}
PRESSURE = "some avg10=0.00 avg60=0.00 avg300=0.00 total=2500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n"


def write_files(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (directory / name).write_text(text + "\n")


def test_stats_for_metrics(tmp_path: Path) -> None:
    """cpuacct and cpu, memory (hierarchical totals), blkio by device, and the unified tree's
    pressure stall totals on a hybrid host."""
    root = fake_tree(tmp_path, "/c1")
    write_files(root / "cpu,cpuacct" / "c1", {
        "cpuacct.usage": "4000000000", "cpuacct.usage_user": "3000000000", "cpuacct.usage_sys": "1000000000",
        "cpu.stat": "nr_periods 10\nnr_throttled 4\nthrottled_time 2500000000", "cpu.shares": "998",
        "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "20000"})
    write_files(root / "memory" / "c1", {
        "memory.usage_in_bytes": "1000", "memory.max_usage_in_bytes": "4000", "memory.memsw.usage_in_bytes": "1100",
        "memory.stat": "pgfault 7\npgmajfault 1\ntotal_cache 300\ntotal_rss 600\ntotal_mapped_file 50\n"
                       "total_inactive_file 200\ntotal_pgfault 70\ntotal_pgmajfault 10",
        "memory.kmem.usage_in_bytes": "40", "memory.failcnt": "2",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3", "memory.limit_in_bytes": "67108864",
        "memory.soft_limit_in_bytes": "1048576", "memory.memsw.limit_in_bytes": "67108864"})
    write_files(root / "blkio" / "c1", {  # per-operation lines by device; Sync, Total and the grand total skipped
        "blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n"
                                                     "8:0 Total 12288\n253:1 Write 512\nTotal 12800",
        "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2"})
    write_files(root / "unified" / "c1", {"cpu.pressure": PRESSURE})
    stats = new_manager("/c1", "c1", root=str(root), own=OWN).stats().to_dict()
    assert {k: v for k, v in stats.items() if k not in ("pids_current", "pids_limit")} == METRIC_STATS


def test_stats_fallbacks_and_what_means_none(tmp_path: Path) -> None:
    """CPU times in clock ticks (older kernels), quota -1 and v1's huge "no limit" as 0."""
    root = fake_tree(tmp_path, "/c1", unified=False)
    write_files(root / "cpu,cpuacct" / "c1", {"cpuacct.stat": "user 150\nsystem 25", "cpu.cfs_quota_us": "-1"})
    write_files(root / "memory" / "c1", {"memory.soft_limit_in_bytes": "9223372036854771712"})
    stats = new_manager("/c1", "c1", root=str(root), own=OWN).stats()
    assert (stats.cpu_user_ns, stats.cpu_system_ns) == (1_500_000_000, 250_000_000)
    assert (stats.cpu_quota, stats.memory_reservation, stats.io, stats.pressure) == (0, 0, [], {})


def test_process_stats_count_processes_below_and_their_open_files(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "cg", "/c1/child", unified=False)
    proc = tmp_path / "proc"
    for pid, targets in ((10, ["/dev/null", "socket:[1]"]), (11, ["pipe:[2]"]), (12, None)):
        if targets is not None:
            (proc / str(pid) / "fd").mkdir(parents=True)
            for n, target in enumerate(targets):
                (proc / str(pid) / "fd" / str(n)).symlink_to(target)
    (root / "pids" / "c1" / "cgroup.procs").write_text("10\n")
    (root / "pids" / "c1" / "child" / "cgroup.procs").write_text("11\n12\n")  # 12 exited meanwhile
    manager = new_manager("/c1", "c1", root=str(root), own=OWN)
    assert manager.pids() == [10]
    assert manager.process_stats(proc=str(proc)).to_dict() == {"processes": 3, "file_descriptors": 3, "sockets": 1}


def test_device_rule_lines() -> None:
    assert DeviceRule(False).v1_line() == "a"
    assert DeviceRule(True, "c", None, None, "m").v1_line() == "c *:* m"
    assert DeviceRule(True, "c", 136, -1, "rwm").v1_line() == "c 136:* rwm"


def test_empty_unmounted_hierarchy_directories_are_not_hierarchies(tmp_path: Path) -> None:
    """In a kind node (a docker container), runc leaves empty directories for hierarchies the
    host has not mounted; making a cgroup there failed ("Read-only file system")."""
    for mounted in ("memory", "pids", "unified"):
        (tmp_path / mounted).mkdir()
        (tmp_path / mounted / "cgroup.procs").write_text("")
    for empty in ("cpu,cpuacct", "hugetlb"):
        (tmp_path / empty).mkdir()
    assert v1.list_hierarchies(str(tmp_path)) == ["memory", "pids"]
