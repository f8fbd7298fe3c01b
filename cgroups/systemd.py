"""The systemd cgroup driver's naming and properties (runc's `--systemd-cgroup`), no bus here.

With the systemd driver a container's linux.cgroupsPath is `slice:prefix:name`
("kubepods-besteffort-pod<uid>.slice:pycri:<id>"): the container lives in the transient scope
unit `<prefix>-<name>.scope` (or in the slice `name` itself when it ends in .slice), started in
`slice` over D-Bus (cgroups.systemd_dbus) with Delegate=yes, which systemd realises in the
hierarchies it manages; the runtime then makes the same directory in the other v1 hierarchies
(cpuset, hugetlb, net_cls, ...) and writes every limit there itself, as runc does.

A slice name is systemd's path: `a-b-c.slice` is /a.slice/a-b.slice/a-b-c.slice, `-.slice` the
root. The cgroup directory of a unit is <mount>/<PID 1's cgroup, init.scope cut>/<slice>/<unit>
(runc's getSubsystemPath: inside a container systemd's root is not the hierarchy's root).

Only the light standard library here: pycri-runtime imports this on every systemd `create`.
"""
from __future__ import annotations

import os
import posixpath

from pycri.cgroups.base import CgroupError, CgroupManager
from pycri.cgroups.paths import own_cgroups

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycri.cgroups.resources import Resources
    from pycri.cgroups.systemd_dbus import SystemdBus

SLICE_SUFFIX = ".slice"
SCOPE_SUFFIX = ".scope"
DEFAULT_SLICE = "system.slice"  # runc's parent when the path names none
DEFAULT_QUOTA_PERIOD = 100_000  # µs, the kernel's default CFS period
USEC_INFINITY = (1 << 64) - 1  # systemd's "no limit" for usec and byte properties
UNLIMITED = (1 << 64) - 1
DRIVER_CGROUPFS, DRIVER_SYSTEMD = "cgroupfs", "systemd"


def expand_slice(slice_name: str) -> str:
    """`a-b-c.slice` -> `/a.slice/a-b.slice/a-b-c.slice`; `-.slice` -> `/`. A name that does not
    end in .slice (or is only that), holds a `/`, or has an empty dash-separated part
    (`a--b.slice`, `-a.slice`, `a-.slice`) is refused."""
    if len(slice_name) < len(SLICE_SUFFIX) or not slice_name.endswith(SLICE_SUFFIX) or "/" in slice_name:
        raise CgroupError(f"invalid slice name: {slice_name}")
    stem = slice_name[:-len(SLICE_SUFFIX)]
    if stem == "-":
        return "/"
    path, prefix = "", ""
    for component in stem.split("-"):
        if not component:
            raise CgroupError(f"invalid slice name: {slice_name}")
        path += "/" + prefix + component + SLICE_SUFFIX
        prefix += component + "-"
    return path


def is_valid_slice(slice_name: str) -> bool:
    try:
        expand_slice(slice_name)
    except CgroupError:
        return False
    return "\0" not in slice_name


def pod_slice(parent: str) -> str | None:
    """The slice a cgroup parent names under the systemd driver: a slice name as it is, or
    kubelet's form, the slice's expanded path (kubelet sends ToSystemd() of the pod's cgroup:
    /kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice), whose last
    part it is (as containerd takes path.Base of it). None: neither."""
    if "/" not in parent:
        return parent if is_valid_slice(parent) else None
    base = posixpath.basename(parent)
    if is_valid_slice(base) and expand_slice(base) == parent:
        return base
    return None


def unit_name(prefix: str, name: str) -> str:
    """The unit a container gets: the scope `<prefix>-<name>.scope`, or `name` if it is a slice."""
    if name.endswith(SLICE_SUFFIX):
        return name
    return f"{prefix}-{name}{SCOPE_SUFFIX}"


def scope_name(prefix: str, name: str) -> str:
    return f"{prefix}-{name}{SCOPE_SUFFIX}"


class SystemdPath:
    """linux.cgroupsPath under the systemd driver: `slice:prefix:name` (empty slice: system.slice;
    an empty path: system.slice, prefix `default_prefix`, the container id)."""

    __slots__ = ("slice", "prefix", "name")

    def __init__(self, slice_name: str, prefix: str, name: str) -> None:
        self.slice = slice_name
        self.prefix = prefix
        self.name = name

    def __repr__(self) -> str:
        return f"SystemdPath({self.slice!r}, {self.prefix!r}, {self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SystemdPath) and (self.slice, self.prefix, self.name) == (
            other.slice, other.prefix, other.name)

    @property
    def unit(self) -> str:
        return unit_name(self.prefix, self.name)

    @property
    def cgroup(self) -> str:
        """The unit's cgroup below systemd's root: the expanded slice, then the unit (a slice
        unit's own name says where it is)."""
        if self.unit.endswith(SLICE_SUFFIX):
            return expand_slice(self.unit)
        return posixpath.join(expand_slice(self.slice), self.unit)

    def __str__(self) -> str:
        return f"{self.slice}:{self.prefix}:{self.name}"


def parse_path(cgroups_path: str, container_id: str, default_prefix: str = "pycri") -> SystemdPath:
    """Parse (and check) `slice:prefix:name` as runc does."""
    if not cgroups_path:
        return SystemdPath(DEFAULT_SLICE, default_prefix, container_id)
    parts = cgroups_path.split(":")
    if len(parts) != 3:
        raise CgroupError(f'expected cgroupsPath to be of format "slice:prefix:name" for systemd cgroups, '
                          f'got {cgroups_path!r} instead')
    slice_name, prefix, name = parts
    slice_name = slice_name or DEFAULT_SLICE
    expand_slice(slice_name)
    if not name or "/" in name or "\0" in name or "/" in prefix or "\0" in prefix or name in (".", ".."):
        raise CgroupError(f"bad systemd cgroup name in {cgroups_path!r}")
    if not name.endswith(SLICE_SUFFIX) and not prefix:
        raise CgroupError(f"no scope prefix in {cgroups_path!r}")
    return SystemdPath(slice_name, prefix, name)


def slice_path(slice_name: str) -> SystemdPath:
    """A slice itself (a pod's slice, whose cgroup holds its containers' for the pod's stats)."""
    expand_slice(slice_name)
    return SystemdPath(slice_name, "", slice_name)


def is_systemd_path(cgroups_path: str) -> bool:
    """Whether a cgroups path has the systemd driver's form: `slice:prefix:name` with a valid
    slice, or a pod slice (pod_slice: a slice name, or kubelet's expanded path of one; cgroupfs
    parents from kubelet, /kubepods/<qos>/pod<uid>, are neither)."""
    parts = cgroups_path.split(":")
    if len(parts) == 3:
        return not parts[0] or is_valid_slice(parts[0])
    return len(parts) == 1 and pod_slice(cgroups_path) is not None


def path_of(cgroups_path: str, container_id: str, default_prefix: str = "pycri") -> SystemdPath:
    """A systemd driver's path (`slice:prefix:name`, or a pod slice: the slice itself)."""
    if ":" not in cgroups_path and cgroups_path:
        slice_name = pod_slice(cgroups_path)
        if slice_name is None:
            raise CgroupError(f"invalid slice name: {cgroups_path}")
        return slice_path(slice_name)
    return parse_path(cgroups_path, container_id, default_prefix)


def init_cgroups(path: str = "/proc/1/cgroup") -> dict[str, str]:
    """PID 1's cgroup in each hierarchy (controllers field -> path), with the trailing
    init.scope cut: systemd's root, which is not `/` inside a container (a kind node)."""
    result = {}
    for key, value in own_cgroups(path).items():
        value = posixpath.normpath(value or "/")
        if posixpath.basename(value) == "init.scope":
            value = posixpath.dirname(value)
        result[key] = value
    return result


def new_manager(path: SystemdPath, *, root: str = "/sys/fs/cgroup",
                init: dict[str, str] | None = None) -> CgroupManager:
    """The cgroupfs manager of a systemd unit's cgroup in every hierarchy (v1, hybrid or v2);
    its state (to_state) carries the unit, so later commands know to stop it."""
    from pycri import cgroups

    init = init_cgroups() if init is None else init
    relative = path.cgroup
    if cgroups.detect(root) == cgroups.V2:
        from pycri.cgroups.v2 import V2Manager

        manager: CgroupManager = V2Manager(root, _join(init.get("", "/"), relative))
    else:
        from pycri.cgroups.v1 import UNIFIED, V1Manager, list_hierarchies, own_key

        hierarchies = {}
        for hierarchy in list_hierarchies(root):
            hierarchies[hierarchy] = os.path.join(root, hierarchy) + _join(init.get(own_key(hierarchy), "/"), relative)
        if not hierarchies:
            raise CgroupError(f"no cgroup v1 hierarchies under {root}")
        unified = None
        if os.path.exists(os.path.join(root, UNIFIED, "cgroup.procs")):
            unified = os.path.join(root, UNIFIED) + _join(init.get("", "/"), relative)
        manager = V1Manager(root, hierarchies, relative, unified=unified)
    manager.systemd = {"slice": path.slice, "prefix": path.prefix, "name": path.name, "unit": path.unit}
    return manager


def _join(base: str, relative: str) -> str:
    result = posixpath.normpath(posixpath.join(base or "/", relative.lstrip("/")))
    return "/" + result.lstrip("/")


def unit_of_state(state: dict[str, object]) -> str | None:
    """The systemd unit a manager's saved state names (None: a cgroupfs cgroup)."""
    systemd = state.get("systemd")
    if isinstance(systemd, dict) and isinstance(systemd.get("unit"), str):
        return str(systemd["unit"])
    return None


# properties: (name, D-Bus signature, value), as StartTransientUnit and SetUnitProperties take them

def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] -> CPUWeight [1, 10000] (the conversion of cgroups.v2)."""
    return 1 + ((shares - 2) * 9999) // 262142


def quota_per_sec(quota: int | None, period: int | None) -> int:
    """CPUQuotaPerSecUSec for a CFS quota and period (µs), rounded up to 10 ms (systemd keeps
    whole percents) as runc does; no positive quota: infinity."""
    if quota is None or quota <= 0:
        return USEC_INFINITY
    per_sec = quota * 1_000_000 // (period or DEFAULT_QUOTA_PERIOD)
    if per_sec % 10_000:
        per_sec = (per_sec // 10_000 + 1) * 10_000
    return per_sec


def resource_properties(resources: Resources, version: int) -> list[tuple[str, str, object]]:
    """The unit properties that mirror the limits systemd manages for the unit, so that systemd
    (a daemon-reload, a later start) does not put back defaults over what the runtime wrote:
    memory, CPU weight or shares, CPU quota and period, tasks. cpuset, hugetlb, swap and device
    rules are written by cgroupfs only."""
    props: list[tuple[str, str, object]] = []
    memory = resources.memory
    if memory.limit is not None and memory.limit != 0:
        props.append(("MemoryMax", "t", UNLIMITED if memory.limit < 0 else memory.limit))
    cpu = resources.cpu
    if cpu.shares:
        if version == 2:
            props.append(("CPUWeight", "t", shares_to_weight(cpu.shares)))
        else:  # exact on v1 (a weight would come back as weight * 1024 / 100)
            props.append(("CPUShares", "t", cpu.shares))
    if cpu.period:
        props.append(("CPUQuotaPeriodUSec", "t", cpu.period))
    if cpu.quota or cpu.period:
        props.append(("CPUQuotaPerSecUSec", "t", quota_per_sec(cpu.quota, cpu.period)))
    limit = resources.pids_limit
    if limit is not None and (limit > 0 or limit == -1):
        props.append(("TasksMax", "t", UNLIMITED if limit < 0 else limit))
    return props


def device_group(kind: str, major: int, proc_devices: str = "/proc/devices") -> str | None:
    """The name /proc/devices gives a major (136 -> "pts"): systemd names all minors of a major
    as char-<name> or block-<name>."""
    section = "Character devices:" if kind == "c" else "Block devices:"
    current = False
    try:
        with open(proc_devices) as f:
            for line in f:
                line = line.strip()
                if line.endswith("devices:"):
                    current = line == section
                    continue
                number, _, name = line.partition(" ")
                if current and number == str(major) and name:
                    return name
    except OSError:
        pass
    return None


def device_properties(rules: list, proc_devices: str = "/proc/devices") -> list[tuple[str, str, object]]:
    """DevicePolicy and DeviceAllow for the OCI device rules (rules in order, the last match
    wins, as runc's emulator reads them), so that systemd keeps the unit's devices cgroup:
    without them systemd sees no use for that controller in the unit and, when it realises the
    slice again (a sibling unit starting, a property set on the slice), moves the container's
    processes up out of their devices cgroup. A deny-all list becomes DevicePolicy=strict with an
    entry per allowed device (/dev/char/M:m, char-<group> for all minors of a major, char-* for
    all); allowing every device becomes DevicePolicy=auto with no list. Deny rules after an
    allow-all cannot be said in systemd's terms: none are sent then (cgroupfs still writes them)."""
    allow_all = False
    entries: list[tuple[str, str]] = []
    for rule in rules:
        if rule.type not in ("c", "b"):  # "a": every device
            allow_all = bool(rule.allow)
            entries = []
            continue
        kind = "char" if rule.type == "c" else "block"
        major = None if rule.major is None or rule.major < 0 else rule.major
        minor = None if rule.minor is None or rule.minor < 0 else rule.minor
        if major is None:
            if minor is not None:
                continue  # "c *:5" has no systemd spelling
            name = f"{kind}-*"
        elif minor is None:
            group = device_group(rule.type, major, proc_devices)
            if group is None:
                continue
            name = f"{kind}-{group}"
        else:
            name = f"/dev/{kind}/{major}:{minor}"
        access = "".join(c for c in "rwm" if c in (rule.access or "rwm"))
        entries = [(path, mode) for path, mode in entries if path != name]
        if rule.allow and not allow_all:
            entries.append((name, access))
    if allow_all:
        return [("DevicePolicy", "s", "auto"), ("DeviceAllow", "a(ss)", [])]
    return [("DevicePolicy", "s", "strict"), ("DeviceAllow", "a(ss)", entries)]


def scope_properties(description: str, slice_name: str, pids: list[int],
                     resources: Resources | None = None, version: int = 1) -> list[tuple[str, str, object]]:
    """StartTransientUnit's properties for a delegated scope holding `pids` in `slice_name`."""
    props: list[tuple[str, str, object]] = [
        ("Description", "s", description),
        ("Slice", "s", slice_name),
        ("Delegate", "b", True),
        ("PIDs", "au", list(pids)),
        ("MemoryAccounting", "b", True),
        ("CPUAccounting", "b", True),
        ("TasksAccounting", "b", True),
        ("DefaultDependencies", "b", False),
    ]
    if resources is not None:
        props.extend(resource_properties(resources, version))
        if resources.devices:
            props.extend(device_properties(resources.devices))
    return props


def start_scope(bus: SystemdBus, manager: CgroupManager, pids: list[int], resources: Resources | None = None,
                description: str = "") -> None:
    """Ask systemd for the manager's unit holding `pids` (Delegate=yes, the resource properties),
    wait for it, then join the pids in every hierarchy: v1 makes the unit's directory in the
    hierarchies systemd does not manage (cpuset, hugetlb, net_cls, ...). The caller writes the
    limits (manager.apply) as with cgroupfs."""
    unit = manager.systemd or {}
    if not unit.get("unit"):
        raise CgroupError("not a systemd cgroup")
    props = scope_properties(description or f"pycri container {unit.get('name', '')}", unit["slice"], pids,
                             resources, manager.version)
    try:
        bus.start_transient_unit(unit["unit"], props)
    except Exception as e:  # SystemdError: the bus module is loaded with its client only
        raise CgroupError(f"start systemd unit {unit['unit']}: {e}") from None
    if manager.version == 1:
        manager.create()
    for pid in pids:
        manager.add(pid)


def stop_scope(bus: SystemdBus, manager: CgroupManager, timeout: float = 5.0) -> None:
    """Stop the manager's unit (systemd removes the directories it made) and remove the rest."""
    unit = (manager.systemd or {}).get("unit")
    error = None
    if unit:
        try:
            bus.stop_unit(unit)
        except Exception as e:
            error = CgroupError(f"stop systemd unit {unit}: {e}")
    manager.destroy(timeout)
    if error is not None:
        raise error
