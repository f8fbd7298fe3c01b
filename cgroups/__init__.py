"""Linux control groups for containers, cgroupfs style: v1, hybrid and v2 (with the systemd
driver, cgroups.systemd names the unit and cgroups.systemd_dbus asks systemd for it; the
limits are still written here).

    manager = cgroups.new_manager("/kubepods/besteffort/pod1/ctr", "ctr")
    manager.create(); manager.add(pid); manager.apply(Resources.from_spec(spec_resources))
    manager.stats(); manager.process_stats(); manager.pids(); manager.destroy()
    cgroups.manager_from_state(manager.to_state())   # the same cgroup, in a later process

`detect(root)` tells v1 (with `unified` for hybrid) from v2 by /sys/fs/cgroup/cgroup.controllers.
Every class takes the mount root as a parameter, so tests use fake trees in a tmp dir.
This package imports only the light standard library (no dataclasses/typing: the runtime
CLI loads it on every `create`, `exec`, `delete` and `kill --all`); cgroups.resources, the
resource classes, is imported by `create` and `update` only.

Device rules: v1 writes them to devices.allow/deny; v2 has no devices controller, so they
become an eBPF program (cgroups.devices_bpf: rules -> instructions, v1's meaning, default
deny) that cgroups.v2 loads and attaches with bpf(2) (kernel.bpf).
"""
from __future__ import annotations

import os

from pycri.cgroups.base import CgroupError, CgroupManager, IoDevice, ProcessStats, Stats
from pycri.cgroups.paths import own_cgroups, resolve_path

DEFAULT_ROOT = "/sys/fs/cgroup"
V1, V2 = 1, 2

__all__ = ["CgroupError", "CgroupManager", "IoDevice", "ProcessStats", "Stats", "detect", "has_controller",
           "new_manager", "manager_from_state", "own_cgroups", "resolve_path", "DEFAULT_ROOT"]


def detect(root: str = DEFAULT_ROOT) -> int:
    """2 on a pure cgroup v2 host, 1 on a v1 or hybrid one."""
    return V2 if os.path.exists(os.path.join(root, "cgroup.controllers")) else V1


def has_controller(name: str, root: str = DEFAULT_ROOT) -> bool:
    """Whether containers' cgroups can use controller `name`: in the root's cgroup.controllers
    on v2, a hierarchy of its own on v1 (a hybrid host may bind it to the unified tree instead,
    where v1 containers do not live)."""
    if detect(root) == V2:
        try:
            with open(os.path.join(root, "cgroup.controllers")) as f:
                return name in f.read().split()
        except OSError:
            return False
    return os.path.isdir(os.path.join(root, name))


def new_manager(cgroups_path: str, container_id: str, *, root: str = DEFAULT_ROOT,
                own: dict[str, str] | None = None, driver: str | None = None) -> CgroupManager:
    """The manager for linux.cgroupsPath (absolute, relative to the caller's own cgroup, or
    empty for <own cgroup>/<container id>), picking v1 or v2 from the host. `driver` None tells
    the systemd driver's paths by their form (cgroups.systemd.is_systemd_path: `slice:prefix:name`,
    or a bare slice name such as a pod's kubepods-besteffort-pod<uid>.slice); "cgroupfs" never
    takes a path for systemd's, "systemd" always."""
    if driver != "cgroupfs":
        from pycri.cgroups import systemd

        if driver == "systemd" or systemd.is_systemd_path(cgroups_path):
            return systemd.new_manager(systemd.path_of(cgroups_path, container_id), root=root)
    own = own_cgroups() if own is None else own
    if detect(root) == V2:
        from pycri.cgroups.v2 import V2Manager

        return V2Manager(root, resolve_path(cgroups_path, container_id, own.get("", "/")))
    from pycri.cgroups.v1 import V1Manager

    return V1Manager.for_path(root, cgroups_path, container_id, own)


def manager_from_state(state: dict[str, object], *, root: str | None = None) -> CgroupManager:
    manager = _manager_from_state(state, root)
    systemd = state.get("systemd")
    if isinstance(systemd, dict):  # a systemd unit's cgroup (cgroups.systemd)
        manager.systemd = {str(k): str(v) for k, v in systemd.items()}
    return manager


def _manager_from_state(state: dict[str, object], root: str | None) -> CgroupManager:
    version = state.get("version")
    base = str(state.get("root", DEFAULT_ROOT)) if root is None else root
    if version == V2:
        from pycri.cgroups.v2 import V2Manager

        return V2Manager(base, str(state["path"]))
    if version == V1:
        from pycri.cgroups.v1 import V1Manager

        raw = state.get("hierarchies")
        if not isinstance(raw, dict):
            raise CgroupError(f"bad cgroup state {state!r}")
        hierarchies = {str(k): str(v) for k, v in raw.items()}
        unified = state.get("unified")
        return V1Manager(base, hierarchies, str(state["path"]), unified=str(unified) if unified else None)
    raise CgroupError(f"unknown cgroup state {state!r}")
