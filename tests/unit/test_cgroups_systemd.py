"""The systemd cgroup driver's naming (runc's ExpandSlice and unit names), cgroupsPath parsing,
the unit's cgroup directories, the properties of the scope, and start/stop through a fake bus."""
from __future__ import annotations

import pytest

from pycri import cgroups
from pycri.cgroups import CgroupError, systemd
from pycri.cgroups.resources import Resources
from pycri.cgroups.systemd_fake import FakeSystemd


@pytest.mark.parametrize("name, path", [
    ("-.slice", "/"),
    ("system.slice", "/system.slice"),
    ("kubepods.slice", "/kubepods.slice"),
    ("kubepods-besteffort.slice", "/kubepods.slice/kubepods-besteffort.slice"),
    ("kubepods-besteffort-pod1234.slice",
     "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice"),
    ("a-b-c.slice", "/a.slice/a-b.slice/a-b-c.slice"),
    ("kubepods-pod0b6c_42f1.slice", "/kubepods.slice/kubepods-pod0b6c_42f1.slice"),
])
def test_expand_slice(name: str, path: str) -> None:
    assert systemd.expand_slice(name) == path
    assert systemd.is_valid_slice(name)


@pytest.mark.parametrize("name", [
    "", ".slice", "slice", "kubepods", "kubepods.scope", "a--b.slice", "-a.slice", "a-.slice",
    "kubepods.slice/kubepods-besteffort.slice", "/kubepods.slice", "--.slice",
])
def test_expand_slice_refuses(name: str) -> None:
    with pytest.raises(CgroupError, match="invalid slice name"):
        systemd.expand_slice(name)
    assert not systemd.is_valid_slice(name)


def test_unit_names() -> None:
    assert systemd.unit_name("pycri", "abc") == "pycri-abc.scope"
    assert systemd.unit_name("cri-containerd", "abc") == "cri-containerd-abc.scope"
    assert systemd.unit_name("ignored", "mine.slice") == "mine.slice"
    assert systemd.scope_name("pycri", "sandbox1") == "pycri-sandbox1.scope"


def test_parse_path() -> None:
    path = systemd.parse_path("kubepods-besteffort-pod1.slice:pycri:c1", "c1")
    assert (path.slice, path.prefix, path.name, path.unit) == ("kubepods-besteffort-pod1.slice", "pycri", "c1",
                                                               "pycri-c1.scope")
    assert path.cgroup == "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/pycri-c1.scope"
    assert str(path) == "kubepods-besteffort-pod1.slice:pycri:c1"
    # runc's defaults: no slice -> system.slice; no path at all -> system.slice, the container id
    assert systemd.parse_path(":runc:x", "x").slice == "system.slice"
    assert systemd.parse_path("", "c9", "pycri-runtime").unit == "pycri-runtime-c9.scope"


@pytest.mark.parametrize("bad", [
    "/kubepods/pod1", "kubepods.slice", "kubepods.slice:pycri", "a:b:c:d", "kubepods.slice:pycri:",
    "bad--name.slice:pycri:c1", "kubepods.slice:pycri:a/b", "kubepods.slice::c1",
])
def test_parse_path_refuses(bad: str) -> None:
    with pytest.raises(CgroupError):
        systemd.parse_path(bad, "c1")


def test_init_cgroups_cut_init_scope(tmp_path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("9:name=systemd:/docker/abc/init.scope\n4:memory:/docker/abc/init.scope\n"
                    "3:cpuset:/docker/abc\n15:hugetlb:/\n0::/docker/abc/init.scope\n")
    assert systemd.init_cgroups(str(proc)) == {
        "name=systemd": "/docker/abc", "memory": "/docker/abc", "cpuset": "/docker/abc", "hugetlb": "/",
        "": "/docker/abc"}


def _v1_tree(root, names=("cpu,cpuacct", "cpuset", "memory", "pids", "systemd", "unified")) -> None:
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "cgroup.procs").write_text("")


def test_v1_manager_paths_below_systemds_root(tmp_path) -> None:
    _v1_tree(tmp_path)
    path = systemd.parse_path("kubepods-pod1.slice:pycri:c1", "c1")
    init = {"cpu,cpuacct": "/docker/abc", "memory": "/docker/abc", "name=systemd": "/docker/abc", "": "/docker/abc"}
    manager = systemd.new_manager(path, root=str(tmp_path), init=init)
    unit = "/kubepods.slice/kubepods-pod1.slice/pycri-c1.scope"
    assert manager.paths() == {
        "cpu,cpuacct": f"{tmp_path}/cpu,cpuacct/docker/abc{unit}",
        "cpuset": f"{tmp_path}/cpuset{unit}",  # PID 1 shows no cgroup of its own there
        "memory": f"{tmp_path}/memory/docker/abc{unit}",
        "pids": f"{tmp_path}/pids{unit}",
        "systemd": f"{tmp_path}/systemd/docker/abc{unit}",
        "unified": f"{tmp_path}/unified/docker/abc{unit}",
    }
    state = manager.to_state()
    assert systemd.unit_of_state(state) == "pycri-c1.scope"
    again = cgroups.manager_from_state(state)
    assert again.paths() == manager.paths() and again.systemd == manager.systemd
    assert systemd.unit_of_state(cgroups.new_manager("/a/b", "b", root=str(tmp_path), own={}).to_state()) is None


def test_v2_manager_path(tmp_path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    manager = systemd.new_manager(systemd.parse_path("kubepods.slice:pycri:c2", "c2"), root=str(tmp_path),
                                  init={"": "/"})
    assert manager.paths() == {"": f"{tmp_path}/kubepods.slice/pycri-c2.scope"}
    assert manager.to_state()["systemd"]["unit"] == "pycri-c2.scope"


def test_quota_per_sec_rounds_up_to_10ms() -> None:
    assert systemd.quota_per_sec(50_000, 100_000) == 500_000
    assert systemd.quota_per_sec(12_345, 100_000) == 130_000
    assert systemd.quota_per_sec(20_000, None) == 200_000
    assert systemd.quota_per_sec(-1, 100_000) == systemd.USEC_INFINITY
    assert systemd.quota_per_sec(None, 50_000) == systemd.USEC_INFINITY


def test_resource_properties() -> None:
    resources = Resources.from_spec({"memory": {"limit": 64 << 20, "swap": 128 << 20},
                                     "cpu": {"shares": 512, "quota": 25_000, "period": 100_000, "cpus": "0"},
                                     "pids": {"limit": 100}})
    assert systemd.resource_properties(resources, 1) == [
        ("MemoryMax", "t", 64 << 20), ("CPUShares", "t", 512), ("CPUQuotaPeriodUSec", "t", 100_000),
        ("CPUQuotaPerSecUSec", "t", 250_000), ("TasksMax", "t", 100)]
    v2 = dict((name, value) for name, _, value in systemd.resource_properties(resources, 2))
    assert v2["CPUWeight"] == 20 and "CPUShares" not in v2
    unlimited = Resources.from_spec({"memory": {"limit": -1}, "pids": {"limit": -1}})
    assert systemd.resource_properties(unlimited, 1) == [("MemoryMax", "t", systemd.UNLIMITED),
                                                          ("TasksMax", "t", systemd.UNLIMITED)]
    assert systemd.resource_properties(Resources(), 1) == []


def test_scope_properties() -> None:
    props = systemd.scope_properties("pycri container c1", "kubepods.slice", [42])
    assert props[:4] == [("Description", "s", "pycri container c1"), ("Slice", "s", "kubepods.slice"),
                         ("Delegate", "b", True), ("PIDs", "au", [42])]
    assert ("DefaultDependencies", "b", False) in props


def test_start_and_stop_scope(tmp_path) -> None:
    _v1_tree(tmp_path, ("cpuset", "memory", "systemd"))
    for name in ("cpuset",):
        for f in ("cpuset.cpus", "cpuset.mems"):
            (tmp_path / name / f).write_text("0\n")
    bus = FakeSystemd()
    manager = systemd.new_manager(systemd.parse_path("kubepods.slice:pycri:c3", "c3"), root=str(tmp_path), init={})
    joined: list[int] = []
    manager.add = joined.append  # a fake tree's directories have no cgroup.procs of their own
    systemd.start_scope(bus, manager, [1234], Resources.from_spec({"memory": {"limit": 1 << 20}}))
    assert bus.units["pycri-c3.scope"]["Slice"] == "kubepods.slice"
    assert bus.units["pycri-c3.scope"]["Delegate"] is True
    assert bus.units["pycri-c3.scope"]["PIDs"] == [1234]
    assert bus.units["pycri-c3.scope"]["MemoryMax"] == 1 << 20
    # the hierarchies systemd does not realise are made by hand, and the pid joined
    assert all((tmp_path / directory).is_dir() for directory in manager.paths().values())
    assert joined == [1234]
    systemd.stop_scope(bus, manager)
    assert bus.called("stop_unit") == [("pycri-c3.scope",)]
    assert "pycri-c3.scope" not in bus.units


def test_start_scope_failure_is_a_cgroup_error(tmp_path) -> None:
    _v1_tree(tmp_path, ("memory",))
    bus = FakeSystemd()
    bus.failures["start_transient_unit"] = RuntimeError("Access denied")
    manager = systemd.new_manager(systemd.parse_path("kubepods.slice:pycri:c4", "c4"), root=str(tmp_path), init={})
    with pytest.raises(CgroupError, match="start systemd unit pycri-c4.scope: Access denied"):
        systemd.start_scope(bus, manager, [1])
    assert not any((tmp_path / p).exists() for p in manager.paths().values())


def test_device_properties(tmp_path) -> None:
    from pycri.cgroups.resources import DEFAULT_ALLOWED_DEVICES, DeviceRule

    devices = tmp_path / "devices"
    devices.write_text("Character devices:\n  1 mem\n136 pts\n\nBlock devices:\n  8 sd\n")
    rules = [DeviceRule(False), DeviceRule(True, "c", 10, 200, "rw"), DeviceRule(True, "b", 8, None, "r"),
             DeviceRule(True, "c", 99, None), DeviceRule(True, "c", None, 5)] + list(DEFAULT_ALLOWED_DEVICES)
    props = dict((name, value) for name, _, value in systemd.device_properties(rules, str(devices)))
    assert props["DevicePolicy"] == "strict"
    allowed = props["DeviceAllow"]
    assert allowed[:2] == [("/dev/char/10:200", "rw"), ("block-sd", "r")]  # major 99: no name; c *:5: no spelling
    assert ("char-*", "m") in allowed and ("block-*", "m") in allowed and ("char-pts", "rwm") in allowed
    assert ("/dev/char/1:3", "rwm") in allowed
    # a later deny takes an earlier allow back; allowing all is systemd's default policy
    assert systemd.device_properties([DeviceRule(False), DeviceRule(True, "c", 1, 3), DeviceRule(False, "c", 1, 3)],
                                     str(devices)) == [("DevicePolicy", "s", "strict"), ("DeviceAllow", "a(ss)", [])]
    assert systemd.device_properties([DeviceRule(True)], str(devices)) == [
        ("DevicePolicy", "s", "auto"), ("DeviceAllow", "a(ss)", [])]
    # the scope of a container with device rules carries them
    resources = Resources(devices=[DeviceRule(False), DeviceRule(True, "c", 1, 3)])
    names = [name for name, _, _ in systemd.scope_properties("d", "x.slice", [1], resources)]
    assert "DevicePolicy" in names and "DeviceAllow" in names


def test_pod_slice_takes_kubelets_expanded_form() -> None:
    assert systemd.pod_slice("kubepods-burstable-pod1.slice") == "kubepods-burstable-pod1.slice"
    assert systemd.pod_slice("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice") == \
        "kubepods-burstable-pod1.slice"
    for bad in ("/kubepods/burstable/pod1", "/a.slice/kubepods-pod1.slice", "kubepods", "/kubepods.slice/",
                "kubepods.slice/kubepods-pod1.slice", ""):
        assert systemd.pod_slice(bad) is None, bad
    assert systemd.is_systemd_path("/kubepods.slice/kubepods-pod1.slice")
    assert not systemd.is_systemd_path("/kubepods/pod1") and not systemd.is_systemd_path("/kubepods/pod1/c1")
    assert systemd.path_of("/kubepods.slice/kubepods-pod1.slice", "x").cgroup == "/kubepods.slice/kubepods-pod1.slice"
