"""cgroup v2 manager on fake unified trees."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycri.cgroups import CgroupError, manager_from_state, new_manager
from pycri.cgroups.resources import Resources
from pycri.cgroups.devices_bpf import PROGRAM_NAME, device_filter
from pycri.cgroups.resources import DeviceRule
from pycri.cgroups.v2 import V2Manager, blkio_weight_to_io_weight, shares_to_weight, swap_v2, weight_to_shares
from tests.unit.test_cgroups_v1 import METRIC_STATS, PRESSURE, write_files

CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"
FILES = ["cgroup.procs", "cgroup.controllers", "cgroup.subtree_control", "cpu.weight", "cpu.max", "cpuset.cpus",
         "cpuset.mems", "memory.max", "memory.low", "memory.swap.max", "pids.max", "hugetlb.2MB.max", "io.weight",
         "memory.high", "cpu.stat", "memory.current", "memory.stat", "pids.current"]


def fake_tree(root: Path, path: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text(CONTROLLERS + "\n")
    (root / "cgroup.subtree_control").write_text("")
    current = root
    for part in path.strip("/").split("/"):
        current = current / part
        current.mkdir(exist_ok=True)
        for name in FILES:
            (current / name).write_text("")
        (current / "cgroup.controllers").write_text(CONTROLLERS + "\n")
    return root


def test_create_enables_controllers_on_the_way_down(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "cg", "/kubepods/pod1/c1")
    manager = new_manager("/kubepods/pod1/c1", "c1", root=str(root), own={"": "/"})
    assert isinstance(manager, V2Manager) and manager.paths() == {"": f"{root}/kubepods/pod1/c1"}
    manager.create()
    wanted = "+cpuset +cpu +io +memory +hugetlb +pids +rdma +misc"
    assert (root / "cgroup.subtree_control").read_text() == wanted
    assert (root / "kubepods" / "pod1" / "cgroup.subtree_control").read_text() == wanted
    assert (root / "kubepods" / "pod1" / "c1" / "cgroup.subtree_control").read_text() == ""  # the leaf: none
    manager.add(77)
    assert (root / "kubepods" / "pod1" / "c1" / "cgroup.procs").read_text() == "77"


def test_relative_path_below_own_cgroup(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "cg", "/x")
    manager = new_manager("c2", "c2", root=str(root), own={"": "/system.slice/pycri.service"})
    assert manager.paths()[""] == f"{root}/system.slice/pycri.service/c2"


class FakeBpf:
    """The bpf(2) calls of V2Manager.set_devices over a dict: cgroup directory -> attached
    (program id, name); fds are real (of /dev/null) so the manager may close them."""

    def __init__(self) -> None:
        self.attached: dict[str, list[tuple[int, str]]] = {}
        self.programs: dict[int, tuple[int, str, bytes]] = {}  # fd -> (id, name, instructions)
        self.next_id = 100
        self.calls: list[str] = []

    def _dir(self, fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}")

    def _fd(self, program_id: int, name: str, instructions: bytes) -> int:
        fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        self.programs[fd] = (program_id, name, instructions)
        return fd

    def load_device_program(self, instructions: bytes, license: str, name: str) -> int:
        self.calls.append("load")
        self.next_id += 1
        return self._fd(self.next_id, name, instructions)

    def attach_device_program(self, cgroup_fd: int, program_fd: int) -> None:
        self.calls.append("attach")
        program_id, name, _ = self.programs[program_fd]
        self.attached.setdefault(self._dir(cgroup_fd), []).append((program_id, name))

    def detach_device_program(self, cgroup_fd: int, program_fd: int) -> None:
        self.calls.append("detach")
        program_id, name, _ = self.programs[program_fd]
        self.attached[self._dir(cgroup_fd)].remove((program_id, name))

    def device_program_ids(self, cgroup_fd: int) -> list[int]:
        return [program_id for program_id, _ in self.attached.get(self._dir(cgroup_fd), [])]

    def program_fd(self, program_id: int) -> int:
        name = next(n for entries in self.attached.values() for i, n in entries if i == program_id)
        return self._fd(program_id, name, b"")

    def program_name(self, program_fd: int) -> str:
        return self.programs[program_fd][1]


def test_apply_converts_v1_values(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "cg", "/c1")
    manager = V2Manager(str(root), "/c1", bpf=FakeBpf())
    warnings = manager.apply(Resources.from_spec({
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "1", "mems": "0"},
        "memory": {"limit": 64 << 20, "reservation": 16 << 20, "swap": 96 << 20},
        "pids": {"limit": 0},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 2 << 20}],
        "unified": {"memory.high": "50000000"},
        "devices": [{"allow": False, "access": "rwm"}],
    }))
    c1 = lambda f: (root / "c1" / f).read_text()  # noqa: E731
    assert c1("cpu.weight") == "39"
    assert c1("cpu.max") == "50000 100000"
    assert c1("cpuset.cpus") == "1"
    assert c1("memory.max") == str(64 << 20)
    assert c1("memory.low") == str(16 << 20)
    assert c1("memory.swap.max") == str(32 << 20)
    assert c1("pids.max") == "max"
    assert c1("hugetlb.2MB.max") == str(2 << 20)
    assert c1("memory.high") == "50000000"
    assert warnings == []
    manager.apply(Resources.from_spec({"cpu": {"quota": -1, "period": 50000}, "memory": {"limit": -1}}))
    assert c1("cpu.max") == "max 50000" and c1("memory.max") == "max"


def test_conversions() -> None:
    assert shares_to_weight(2) == 1
    assert shares_to_weight(1024) == 39
    assert shares_to_weight(262144) == 10000
    assert swap_v2(100, 100) == "0"
    assert swap_v2(100, -1) == "max"
    assert swap_v2(100, None) is None
    with pytest.raises(CgroupError):
        swap_v2(100, 50)
    with pytest.raises(CgroupError):
        swap_v2(None, 50)


def test_stats_destroy_and_state(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "cg", "/c1")
    manager = new_manager("/c1", "c1", root=str(root), own={"": "/"})
    (root / "c1" / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\n")
    (root / "c1" / "memory.current").write_text("4096000\n")
    (root / "c1" / "memory.stat").write_text("anon 1\ninactive_file 96000\n")
    (root / "c1" / "memory.max").write_text("max\n")
    (root / "c1" / "pids.current").write_text("2\n")
    (root / "c1" / "pids.max").write_text("10\n")
    stats = manager.stats().to_dict()
    assert {k: stats[k] for k in ("cpu_usage_ns", "memory_usage", "memory_working_set", "memory_limit",
                                  "pids_current", "pids_limit")} == {
        "cpu_usage_ns": 1500000, "memory_usage": 4096000, "memory_working_set": 4000000, "memory_limit": 0,
        "pids_current": 2, "pids_limit": 10}
    again = manager_from_state(manager.to_state())
    assert again.version == 2 and again.paths() == manager.paths()
    for f in (root / "c1").iterdir():
        f.unlink()
    manager.destroy(timeout=0.1)
    assert not (root / "c1").exists()


def test_has_controller_on_v2_and_on_a_hybrid_v1(tmp_path: Path) -> None:
    from pycri.cgroups import has_controller

    v2 = fake_tree(tmp_path / "v2", "/c1")
    assert has_controller("hugetlb", str(v2)) and not has_controller("net_cls", str(v2))
    hybrid = tmp_path / "hybrid"  # v1 hierarchies; hugetlb only in the unified tree
    for name in ("memory", "cpu,cpuacct", "unified"):
        (hybrid / name).mkdir(parents=True)
    (hybrid / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    assert has_controller("memory", str(hybrid)) and not has_controller("hugetlb", str(hybrid))


def test_stats_for_metrics(tmp_path: Path) -> None:
    """v1's figures from v2's files, in v1's units (ns, shares, memory+swap)."""
    root = fake_tree(tmp_path / "cg", "/c1")
    write_files(root / "c1", {
        "cpu.stat": "usage_usec 4000000\nuser_usec 3000000\nsystem_usec 1000000\nnr_periods 10\nnr_throttled 4\n"
                    "throttled_usec 2500000",
        "cpu.weight": "39",  # what cpu.shares 1024 became; 998 back
        "cpu.max": "20000 100000", "memory.current": "1000", "memory.peak": "4000", "memory.swap.current": "100",
        "memory.stat": "anon 600\nfile 300\nkernel 40\nfile_mapped 50\ninactive_file 200\npgfault 7\npgmajfault 1",
        "memory.events": "low 0\nhigh 0\nmax 2\noom 1\noom_kill 3", "memory.max": "67108864",
        "memory.low": "1048576", "memory.swap.max": "0",
        "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n", "cpu.pressure": PRESSURE})
    stats = new_manager("/c1", "c1", root=str(root), own={"": "/"}).stats().to_dict()
    assert {k: v for k, v in stats.items() if k not in ("pids_current", "pids_limit")} == {
        **METRIC_STATS, "hierarchy_pgfault": 7, "hierarchy_pgmajfault": 1,  # v2 counts the whole subtree anyway
        "io": METRIC_STATS["io"][:1]}
    write_files(root / "c1", {"cpu.max": "max 100000", "memory.swap.max": "max"})
    stats = new_manager("/c1", "c1", root=str(root), own={"": "/"}).stats().to_dict()
    assert (stats["cpu_quota"], stats["memory_swap_limit"]) == (0, 0)  # none, and unlimited swap


def test_weight_to_shares_inverts_shares_to_weight() -> None:
    """Up to a weight step (about 26 shares): the weight scale is the coarser one."""
    for shares in (2, 1024, 4096, 262144):
        assert abs(weight_to_shares(shares_to_weight(shares)) - shares) <= 27
    assert (weight_to_shares(1), weight_to_shares(10000), weight_to_shares(0)) == (2, 262144, 0)


def test_device_rules_attach_a_filter_and_an_update_replaces_only_pycris(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "cg", "/c1")
    bpf = FakeBpf()
    c1 = os.path.realpath(root / "c1")
    bpf.attached[c1] = [(7, "someone_elses")]  # not pycri's: it stays
    manager = V2Manager(str(root), "/c1", bpf=bpf)
    deny_all = [DeviceRule(False)]
    manager.apply(Resources(devices=deny_all))
    assert bpf.attached[c1] == [(7, "someone_elses"), (101, PROGRAM_NAME)]
    loaded = [instructions for _, name, instructions in bpf.programs.values() if name == PROGRAM_NAME]
    assert loaded == [device_filter(deny_all)]
    manager.set_devices([DeviceRule(True)])
    # the new program is attached before the old one goes: never a moment without a filter
    assert bpf.calls == ["load", "attach", "load", "attach", "detach"]
    assert bpf.attached[c1] == [(7, "someone_elses"), (102, PROGRAM_NAME)]


def test_device_rules_that_v1_would_ignore_fail_and_attach_nothing(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "cg", "/c1")
    bpf = FakeBpf()
    manager = V2Manager(str(root), "/c1", bpf=bpf)
    with pytest.raises(CgroupError, match="punch a hole"):
        manager.apply(Resources(devices=[DeviceRule(False), DeviceRule(True, "c", None, None, "rwm"),
                                         DeviceRule(False, "c", 1, 3, "w")]))
    assert bpf.calls == [] and bpf.attached == {}


def test_a_failing_bpf_call_is_a_cgroup_error(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "cg", "/c1")

    class Refusing(FakeBpf):
        def load_device_program(self, instructions: bytes, license: str, name: str) -> int:
            raise PermissionError(1, "bpf(BPF_PROG_LOAD): Operation not permitted")

    with pytest.raises(CgroupError, match="device filter for .*Operation not permitted"):
        V2Manager(str(root), "/c1", bpf=Refusing()).set_devices([DeviceRule(False)])


def test_an_update_of_the_quota_alone_keeps_the_period(tmp_path: Path) -> None:
    # the kernel reads "20000" in cpu.max as a new quota with the cgroup's period unchanged;
    # "20000 100000" would reset a period of 50000 set at create
    root = fake_tree(tmp_path / "cg", "/c1")
    manager = V2Manager(str(root), "/c1", bpf=FakeBpf())
    manager.apply(Resources.from_spec({"cpu": {"quota": 20000}}))
    assert (root / "c1" / "cpu.max").read_text() == "20000"
    manager.apply(Resources.from_spec({"cpu": {"quota": 0, "period": 50000}}))
    assert (root / "c1" / "cpu.max").read_text() == "max 50000"


def test_block_io_weight_on_v2(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "cg", "/c1")
    manager = V2Manager(str(root), "/c1", bpf=FakeBpf())
    assert manager.apply(Resources.from_spec({"blockIO": {"weight": 500}})) == []
    assert (root / "c1" / "io.weight").read_text() == "4950"  # [10, 1000] -> [1, 10000]
    assert blkio_weight_to_io_weight(10) == 1 and blkio_weight_to_io_weight(1000) == 10000
    (root / "c1" / "io.bfq.weight").write_text("")
    manager.apply(Resources.from_spec({"blockIO": {"weight": 300}}))
    assert (root / "c1" / "io.bfq.weight").read_text() == "300"  # BFQ: v1's scale
    (root / "c1" / "io.bfq.weight").unlink()
    (root / "c1" / "io.weight").unlink()
    assert manager.apply(Resources.from_spec({"blockIO": {"weight": 300}})) == ["blockIO.weight: the cgroup has no io.weight"]


@pytest.mark.parametrize("key", ["../c2/memory.max", "/memory.max", "..", ".", "", "memory.max/x"])
def test_unified_keys_that_leave_the_cgroup_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(CgroupError, match="unified"):
        Resources.from_spec({"unified": {key: "1"}})


def test_unified_is_written_as_given(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "cg", "/c1")
    for name in ("memory.oom.group", "memory.high", "pids.max"):
        (root / "c1" / name).write_text("")
    manager = V2Manager(str(root), "/c1", bpf=FakeBpf())
    manager.apply(Resources.from_spec({"pids": {"limit": 10},
                                       "unified": {"memory.oom.group": "1", "memory.high": "max", "pids.max": "20"}}))
    c1 = lambda f: (root / "c1" / f).read_text()  # noqa: E731
    assert (c1("memory.oom.group"), c1("memory.high"), c1("pids.max")) == ("1", "max", "20")  # unified last: it wins


@pytest.mark.parametrize("unified", [["memory.max"], {"memory.max": 1}, {"memory.max\0": "1"}])
def test_unified_must_be_an_object_of_strings(unified: object) -> None:
    with pytest.raises(CgroupError, match="unified"):
        Resources.from_spec({"unified": unified})


def test_v1_only_memory_settings_are_warned_about(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "cg", "/c1")
    manager = V2Manager(str(root), "/c1", bpf=FakeBpf())
    assert manager.apply(Resources.from_spec({"memory": {"swappiness": -1}})) == []
    assert manager.apply(Resources.from_spec({"memory": {"swappiness": 60, "disableOOMKiller": True}})) == [
        "memory.swappiness: cgroup v2 has no per-cgroup swappiness",
        "memory.disableOOMKiller: cgroup v2 cannot turn the OOM killer off"]
