"""The systemd cgroup driver above cgroups/: the containers' cgroupsPath (oci_spec), the cgroup
parent's validation, the pod cgroups and infra scope of SandboxService, the runtimes' global
--systemd-cgroup, pycri-runtime's update and its lazy import of jeepney, and the daemon's
start-up check. systemd itself is cgroups.systemd_fake.FakeSystemd."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.cgroups import systemd_dbus
from pycri.cgroups.systemd_fake import FakeSystemd
from pycri.common.errors import InvalidArgument
from pycri.containers.conmon import ConmonHandler
from pycri.containers.oci import OciCli
from pycri.criserver import oci_spec, server, validation
from pycri.runtime import commands
from pycri.runtime.args import Flags
from pycri.runtime.state import ContainerState, StateStore, read_proc_stat
from pycri.sandbox.fake import FakeCgroups, FakeInfra, FakeNetwork, FakePins
from pycri.sandbox.host import HostPodCgroups, SystemdPodCgroups
from pycri.sandbox.service import NewSandbox, SandboxService
from pycri.store.db import Database

ROOT = Path(__file__).resolve().parents[2]


def pod(parent: str, systemd: bool | None = None) -> oci_spec.PodContext:
    return oci_spec.PodContext(id="p", hostname="h", namespaces={}, cgroup_parent=parent, systemd_cgroup=systemd)


def test_cgroups_path_by_driver() -> None:
    assert oci_spec.cgroups_path(pod("/kubepods/besteffort/pod1"), "c1") == "/kubepods/besteffort/pod1/c1"
    assert oci_spec.cgroups_path(pod("/pycri/p/"), "c1") == "/pycri/p/c1"
    slice_name = "kubepods-besteffort-pod0b6c.slice"
    assert oci_spec.cgroups_path(pod(slice_name), "c1") == f"{slice_name}:pycri:c1"
    assert oci_spec.cgroups_path(pod(slice_name, True), "c1") == f"{slice_name}:pycri:c1"
    assert oci_spec.cgroups_path(pod("kubepods.slice", False), "c1") == "kubepods.slice/c1"
    assert oci_spec.cgroups_path(pod(KUBELET_PARENT), "c1") == f"{slice_name}:pycri:c1"
    with pytest.raises(InvalidArgument):
        oci_spec.cgroups_path(pod("/kubepods/pod1", True), "c1")
    # what a unit name may not hold becomes a digest
    odd = oci_spec.cgroups_path(pod(slice_name), "p-my name-0-1")
    assert odd.startswith(f"{slice_name}:pycri:") and len(odd.rsplit(":", 1)[1]) == 64
    assert len(oci_spec.cgroups_path(pod(slice_name), "x" * 300).rsplit(":", 1)[1]) == 64


KUBELET_PARENT = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0b6c.slice"  # ToSystemd()


def test_cgroup_parent_validation() -> None:
    validation.cgroup_parent("kubepods-besteffort-pod1.slice", driver="systemd")
    validation.cgroup_parent("kubepods.slice", driver="systemd")
    validation.cgroup_parent(KUBELET_PARENT, driver="systemd")  # what kubelet really sends
    validation.cgroup_parent("/kubepods.slice", driver="systemd")
    validation.cgroup_parent("", driver="systemd")
    for bad in ("/kubepods/besteffort/pod1", "kubepods", "kubepods--pod1.slice", "a.slice/b.slice", "-x.slice",
                "/kubepods.slice/kubepods-pod1.slice/", "/x.slice/kubepods-pod1.slice", "kubepods.slice/kubepods-a.slice"):
        with pytest.raises(InvalidArgument, match="not a systemd slice"):
            validation.cgroup_parent(bad, driver="systemd")
    validation.cgroup_parent("/kubepods/besteffort/pod1")  # cgroupfs: unchanged
    with pytest.raises(InvalidArgument, match=r"'\.\.' component"):
        validation.cgroup_parent("/kubepods/../x")
    config = cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name="n", namespace="ns", uid="u"),
                                  linux=cri.LinuxPodSandboxConfig(cgroup_parent="/kubepods/pod1"))
    validation.pod_sandbox_config(config)
    with pytest.raises(InvalidArgument):
        validation.pod_sandbox_config(config, cgroup_driver="systemd")


def new_sandbox(parent: str, shared_pid: bool = False) -> NewSandbox:
    return NewSandbox(name="n", namespace="ns", uid="u", attempt=0, handler="", hostname="h", log_directory="",
                      dns=None, port_mappings=[], cgroup_parent=parent, host_network=True, host_ipc=True,
                      host_pid=False, shared_pid=shared_pid)


def service(tmp_path: Path, cgroups: FakeCgroups, driver: str) -> tuple[SandboxService, FakeInfra]:
    infra = FakeInfra()
    return SandboxService(Database(tmp_path / "db.sqlite"), tmp_path / "sandboxes", tmp_path / "state",
                          FakeNetwork(), pins=FakePins(), infra=infra, cgroups=cgroups,
                          cgroup_driver=driver), infra


def test_sandbox_under_systemd(tmp_path: Path) -> None:
    cgroups = FakeCgroups(parent_format="pycri-{}.slice")
    sandboxes, infra = service(tmp_path, cgroups, "systemd")
    with pytest.raises(InvalidArgument, match="not a systemd slice"):
        sandboxes.run(new_sandbox("/kubepods/pod1"))
    assert cgroups.calls == []
    # kubelet's pod slice: not pycri's to make; the infra process goes in a scope in it
    record = sandboxes.run(new_sandbox("kubepods-besteffort-pod1.slice", shared_pid=True))
    assert not record.own_cgroup and cgroups.called("create") == []
    assert cgroups.called("join_infra") == [("kubepods-besteffort-pod1.slice", record.id, record.infra.pid)]
    sandboxes.remove(record.id)
    # at stop, and again (idempotent, as the infra's stop) at remove
    assert set(cgroups.called("leave_infra")) == {("kubepods-besteffort-pod1.slice", record.id)}
    assert cgroups.called("destroy") == [] and infra.running == {}
    # kubelet's form of the parent: the slice's expanded path
    kubelet = sandboxes.run(new_sandbox(KUBELET_PARENT, shared_pid=True))
    assert kubelet.cgroup_parent == KUBELET_PARENT and cgroups.called("join_infra")[-1][0] == KUBELET_PARENT
    sandboxes.remove(kubelet.id)
    # no parent: a slice of pycri's own, made and removed
    own = sandboxes.run(new_sandbox(""))
    assert own.cgroup_parent == f"pycri-{own.id}.slice" and own.own_cgroup
    assert cgroups.called("create") == [(own.cgroup_parent, own.id)] and len(cgroups.called("join_infra")) == 2
    sandboxes.remove(own.id)
    assert cgroups.called("destroy") == [(own.cgroup_parent, own.id)] and cgroups.existing == set()


def test_sandbox_under_cgroupfs_is_unchanged(tmp_path: Path) -> None:
    cgroups = FakeCgroups()
    sandboxes, _ = service(tmp_path, cgroups, "cgroupfs")
    record = sandboxes.run(new_sandbox("", shared_pid=True))
    assert record.cgroup_parent == f"/pycri/{record.id}"
    assert HostPodCgroups().default_parent("x") == "/pycri/x"
    # the fake records the call; the host's cgroupfs implementation does nothing with it
    assert cgroups.called("join_infra") == [(record.cgroup_parent, record.id, record.infra.pid)]
    HostPodCgroups().join_infra("/pycri/x", "x", 1)
    HostPodCgroups().leave_infra("/pycri/x", "x")


def test_systemd_pod_cgroups(tmp_path: Path) -> None:
    for name in ("cpuset", "memory", "systemd"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cgroup.procs").write_text("")
    for f in ("cpuset.cpus", "cpuset.mems"):
        (tmp_path / "cpuset" / f).write_text("0\n")
    bus = FakeSystemd()
    cgroups = SystemdPodCgroups(lambda: bus, root=str(tmp_path), init={})
    assert cgroups.default_parent("s1") == "pycri-s1.slice"
    cgroups.create("pycri-s1.slice", "s1")
    assert bus.units["pycri-s1.slice"]["Description"] == "pycri pod s1"
    with pytest.raises(Exception, match="cgroup.procs"):  # the fake tree has no cgroup.procs to join
        cgroups.join_infra("kubepods-pod1.slice", "s1", 4321)
    unit = bus.units["pycri-s1.scope"]
    assert unit["Slice"] == "kubepods-pod1.slice" and unit["Delegate"] is True and unit["PIDs"] == [4321]
    assert (tmp_path / "cpuset/kubepods.slice/kubepods-pod1.slice/pycri-s1.scope").is_dir()
    cgroups.leave_infra("kubepods-pod1.slice", "s1")
    assert "pycri-s1.scope" not in bus.units
    with pytest.raises(Exception, match="cgroup.procs"):  # kubelet's form names the same slice
        cgroups.join_infra("/kubepods.slice/kubepods-pod1.slice", "s2", 4322)
    assert bus.units["pycri-s2.scope"]["Slice"] == "kubepods-pod1.slice"
    cgroups.leave_infra("/kubepods.slice/kubepods-pod1.slice", "s2")
    assert not (tmp_path / "cpuset/kubepods.slice/kubepods-pod1.slice/pycri-s1.scope").exists()
    cgroups.destroy("pycri-s1.slice", "s1")
    assert bus.units == {}


def test_runtimes_get_the_global_flag(tmp_path: Path) -> None:
    assert OciCli("runc", "/usr/bin/runc", tmp_path).command() == ["/usr/bin/runc", "--root", str(tmp_path)]
    assert OciCli("runc", "/usr/bin/runc", tmp_path, systemd_cgroup=True).command() == [
        "/usr/bin/runc", "--root", str(tmp_path), "--systemd-cgroup"]
    handler = ConmonHandler("runc", "/usr/bin/runc", tmp_path / "state", systemd_cgroup=True)
    assert handler.cli.global_flags() == ["--systemd-cgroup"]
    assert ConmonHandler("pycri", "/x", tmp_path / "s2").cli.global_flags() == []


def test_daemon_refuses_systemd_without_systemd(tmp_path: Path) -> None:
    server.check_cgroup_driver("cgroupfs", reachable=lambda: pytest.fail("asked systemd"))
    server.check_cgroup_driver("systemd", reachable=lambda: "257")

    def unreachable() -> str:
        raise systemd_dbus.SystemdError("systemd is not running as init (/run/systemd/system is missing)")

    with pytest.raises(SystemExit, match='driver = "systemd" but systemd cannot be used: systemd is not running'):
        server.check_cgroup_driver("systemd", reachable=unreachable)
    with pytest.raises(systemd_dbus.SystemdError, match="not running as init"):
        systemd_dbus.check_reachable(str(tmp_path / "no-systemd"))


def test_update_sets_the_units_properties(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cgroup = tmp_path / "cg"
    scope = cgroup / "kubepods.slice" / "pycri-c1.scope"
    scope.mkdir(parents=True)
    (cgroup / "cgroup.controllers").write_text("cpu memory pids\n")
    for name in ("memory.max", "pids.max"):
        (scope / name).write_text("max\n")
    bus = FakeSystemd()
    bus.units["pycri-c1.scope"] = {}
    monkeypatch.setattr(systemd_dbus, "connect", lambda: bus)
    store = StateStore(str(tmp_path / "state"))
    store.make_dir("c1")
    stat = read_proc_stat(os_pid := __import__("os").getpid())
    assert stat is not None
    store.save(ContainerState(id="c1", pid=os_pid, pid_start=stat.start_time, bundle="/b", rootfs="/b/r",
                              created="2026-01-01T00:00:00Z", cgroup={
                                  "version": 2, "root": str(cgroup), "path": "/kubepods.slice/pycri-c1.scope",
                                  "systemd": {"slice": "kubepods.slice", "prefix": "pycri", "name": "c1",
                                              "unit": "pycri-c1.scope"}}))
    commands.update(store, "c1", "", Flags({"memory": "64m", "pids-limit": "100"}))
    assert bus.called("set_unit_properties") == [
        ("pycri-c1.scope", [("MemoryMax", "t", 64 << 20), ("TasksMax", "t", 100)])]
    assert (scope / "memory.max").read_text() == str(64 << 20)
    assert (scope / "pids.max").read_text() == "100"


def test_jeepney_found_without_site(tmp_path: Path) -> None:
    """pycri-runtime runs with -I -S: no site-packages on sys.path until the systemd driver puts
    the one beside pycri (a wheel install) or the checkout's venv there."""
    script = (
        "import sys\n"
        "pycri = type(sys)('pycri')\n"
        f"pycri.__path__ = [{str(ROOT)!r}]\n"
        "sys.modules['pycri'] = pycri\n"
        "from pycri.cgroups import systemd_dbus\n"
        "assert 'jeepney' not in sys.modules\n"
        "systemd_dbus._import_jeepney()\n"
        "import jeepney.io.blocking\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr
