"""What SandboxService asks of the host besides the pod network: pinned namespaces, the infra
process of a shared PID namespace, and the pod cgroup. Each is a narrow interface with the real
implementation here (over sandbox/namespaces.py, sandbox/infra.py and cgroups); unit tests give
the service the fakes of sandbox/fake.py instead, and need no root.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog

from pycri import cgroups
from pycri.cgroups import systemd
from pycri.cgroups.systemd_dbus import SystemdBus, SystemdError

from pycri.sandbox import infra, namespaces
from pycri.sandbox.infra import Infra
from pycri.sandbox.namespaces import IdMaps
from pycri.sandbox.warm_launcher import WarmLauncherGone

log = structlog.get_logger("pycri.sandbox.host")


class NamespacePins(Protocol):
    """Makes a pod's namespaces and pins them by files in its directory."""

    def pin(self, kinds: list[str], directory: Path, hostname: str | None,
            id_maps: IdMaps | None) -> dict[str, Path]:
        """New namespaces of `kinds` pinned under `directory`; kind -> file."""
        ...

    def unpin(self, directory: Path) -> None:
        """Release every pin in `directory` and remove it; idempotent."""
        ...

    def is_pinned(self, path: Path) -> bool:
        """`path` still pins a namespace (false after a reboot)."""
        ...


class InfraProcesses(Protocol):
    """Starts and stops the infra process that holds a pod's shared PID namespace."""

    def start(self, pod_namespaces: dict[str, str], id_maps: IdMaps | None, sandbox_id: str) -> Infra: ...

    def stop(self, process: Infra) -> None: ...

    def stop_strays(self, sandbox_id: str) -> None:
        """Stop the infra processes of `sandbox_id` that no record names."""
        ...

    def warm_up(self) -> None:
        """Get ready to start infra processes fast (at daemon start-up); never fails."""
        ...


class PodCgroups(Protocol):
    """The pod cgroup as the cgroup driver has it: the one pycri owns when kubelet gave no parent
    (made and removed here), and the cgroup of a shared PID namespace's infra process."""

    def default_parent(self, sandbox_id: str) -> str:
        """The pod cgroup pycri makes for a pod whose config names none."""
        ...

    def create(self, cgroup_parent: str, sandbox_id: str) -> None: ...

    def destroy(self, cgroup_parent: str, sandbox_id: str) -> None: ...

    def remove_stale(self, sandbox_id: str) -> bool:
        """At start-up, for a pod no sandbox row names any more (a daemon killed, its database
        lost): remove the cgroup `default_parent` names if it is there and empty; one with
        processes or children stays, and nothing waits. True when one was removed."""
        ...

    def join_infra(self, cgroup_parent: str, sandbox_id: str, pid: int) -> None:
        """Put the pod's infra process in the pod cgroup, where the driver wants one."""
        ...

    def leave_infra(self, cgroup_parent: str, sandbox_id: str) -> None:
        """Undo join_infra once the infra process is gone; idempotent."""
        ...


class HostNamespacePins:
    """nsfs bind mounts of the namespaces of a short-lived child (sandbox/namespaces.py)."""

    def pin(self, kinds: list[str], directory: Path, hostname: str | None,
            id_maps: IdMaps | None) -> dict[str, Path]:
        return namespaces.pin(kinds, directory, hostname, id_maps=id_maps)

    def unpin(self, directory: Path) -> None:
        namespaces.unpin(directory)

    def is_pinned(self, path: Path) -> bool:
        return namespaces.is_pinned(path)


class HostInfraProcesses:
    """catatonit, started by sandbox/pause.py (sandbox/infra.py), through a warm launcher
    (sandbox/warm_launcher.py) started at daemon start-up (`warm_up`)."""

    def __init__(self, warm: bool = True) -> None:
        self.warm = infra.WarmLauncher(infra.PYTHON, infra.SRC_ROOT, infra.START_TIMEOUT) if warm else None

    def start(self, pod_namespaces: dict[str, str], id_maps: IdMaps | None, sandbox_id: str) -> Infra:
        return infra.start(pod_namespaces, id_maps.to_dict() if id_maps is not None else None, sandbox_id=sandbox_id,
                           warm=self.warm)

    def warm_up(self) -> None:
        """Start the warm launcher now, at daemon start-up: one process for the daemon's life, so
        that it counts with the idle daemon and not against the first pods (a failure is logged:
        pods then start with cold launchers until one starts)."""
        if self.warm is not None:
            try:
                self.warm.start()
            except WarmLauncherGone as exc:
                log.warning("no warm infra launcher", error=str(exc))

    def stop(self, process: Infra) -> None:
        infra.stop(process)

    def stop_strays(self, sandbox_id: str) -> None:
        infra.stop_strays(sandbox_id)


class HostPodCgroups:
    """The cgroupfs driver: the host's cgroup hierarchy (v1 or v2, as cgroups.new_manager picks).
    The infra process stays in pycri's own cgroup, as it always has."""

    def default_parent(self, sandbox_id: str) -> str:
        return f"/pycri/{sandbox_id}"

    def create(self, cgroup_parent: str, sandbox_id: str) -> None:
        cgroups.new_manager(cgroup_parent, sandbox_id, driver="cgroupfs").create()

    def destroy(self, cgroup_parent: str, sandbox_id: str) -> None:
        cgroups.new_manager(cgroup_parent, sandbox_id, driver="cgroupfs").destroy()

    def remove_stale(self, sandbox_id: str) -> bool:
        manager = cgroups.new_manager(self.default_parent(sandbox_id), sandbox_id, driver="cgroupfs")
        if not manager.exists():
            return False
        try:
            manager.destroy(timeout=0)  # (rmdir: refused while a process or a child cgroup is in it)
        except cgroups.CgroupError as exc:
            log.warning("a stale pod cgroup is in use: left alone", pod_sandbox_id=sandbox_id, error=str(exc))
            return False
        return True

    def join_infra(self, cgroup_parent: str, sandbox_id: str, pid: int) -> None:
        pass

    def leave_infra(self, cgroup_parent: str, sandbox_id: str) -> None:
        pass


class SystemdPodCgroups:
    """The systemd driver: the pod cgroup is a slice. kubelet makes its pod slices itself
    (kubepods-<qos>-pod<uid>.slice); pycri never mkdirs in systemd's tree, and asks systemd for
    what it owns: the slice pycri-<sandbox id>.slice of a pod without a parent (below
    pycri.slice), and the delegated scope pycri-<sandbox id>.scope in the pod slice that holds
    the infra process of a shared PID namespace (outside pycri.service, which a restart of pycri
    would otherwise kill with it). `bus` connects to systemd (cgroups.systemd_dbus), once a call."""

    def __init__(self, bus: Callable[[], SystemdBus], *, root: str = cgroups.DEFAULT_ROOT,
                 init: dict[str, str] | None = None) -> None:
        self.bus = bus
        self.root = root  # the cgroup mounts and PID 1's cgroups: a tmp tree in tests
        self.init = init

    def default_parent(self, sandbox_id: str) -> str:
        return f"pycri-{sandbox_id}.slice"

    def create(self, cgroup_parent: str, sandbox_id: str) -> None:
        self._call(lambda bus: bus.start_transient_unit(
            _slice(cgroup_parent), [("Description", "s", f"pycri pod {sandbox_id}")]))

    def destroy(self, cgroup_parent: str, sandbox_id: str) -> None:
        # systemd removes the slice where it manages the hierarchy; the slice's directory in the
        # others (made as the parent of a scope's) is removed here
        manager = systemd.new_manager(systemd.slice_path(_slice(cgroup_parent)), root=self.root, init=self.init)
        self._call(lambda bus: systemd.stop_scope(bus, manager))

    def remove_stale(self, sandbox_id: str) -> bool:
        # a slice is stopped through systemd, which kills what is in it: never for a pod this
        # daemon cannot vouch for; an empty transient slice costs systemd a unit, nothing more
        return False

    def _infra_manager(self, cgroup_parent: str, sandbox_id: str) -> cgroups.CgroupManager:
        return systemd.new_manager(systemd.SystemdPath(_slice(cgroup_parent), "pycri", sandbox_id), root=self.root,
                                   init=self.init)

    def join_infra(self, cgroup_parent: str, sandbox_id: str, pid: int) -> None:
        manager = self._infra_manager(cgroup_parent, sandbox_id)
        self._call(lambda bus: systemd.start_scope(bus, manager, [pid], description=f"pycri pod {sandbox_id} infra"))

    def leave_infra(self, cgroup_parent: str, sandbox_id: str) -> None:
        manager = self._infra_manager(cgroup_parent, sandbox_id)
        self._call(lambda bus: systemd.stop_scope(bus, manager))

    def _call(self, action: Callable[[SystemdBus], None]) -> None:
        try:
            bus = self.bus()
        except SystemdError as e:
            raise cgroups.CgroupError(f"connect to systemd: {e}") from None
        with bus:
            try:
                action(bus)
            except SystemdError as e:
                raise cgroups.CgroupError(str(e)) from None


def _slice(cgroup_parent: str) -> str:
    """The pod slice of a parent (a slice name, or kubelet's expanded path of one)."""
    slice_name = systemd.pod_slice(cgroup_parent)
    if slice_name is None:
        raise cgroups.CgroupError(f"{cgroup_parent!r} is not a systemd slice")
    return slice_name
