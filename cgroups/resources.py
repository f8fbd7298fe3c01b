"""linux.resources of the OCI spec (also the body of `update --resources`) as plain classes.

None means "not set: leave as it is". Values keep the spec's units and meanings (memory in
bytes with -1 for unlimited, cpu quota/period in microseconds, shares as v1 shares); each
manager converts them for its cgroup version. (Not dataclasses: `create` parses these on
every call, and dataclasses would be the largest part of its start-up.)
"""
from __future__ import annotations

from pycri.cgroups.base import CgroupError
from pycri.kernel.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _opt_int(data: dict[str, Any], key: str, where: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise CgroupError(f"{where}.{key} must be an integer")
    return value


class CpuResources(Record):
    __slots__ = ("shares", "quota", "period", "realtime_runtime", "realtime_period", "cpus", "mems", "idle")

    def __init__(self, shares: int | None = None, quota: int | None = None, period: int | None = None,
                 realtime_runtime: int | None = None, realtime_period: int | None = None, cpus: str | None = None,
                 mems: str | None = None, idle: int | None = None) -> None:
        self.shares = shares
        self.quota = quota
        self.period = period
        self.realtime_runtime = realtime_runtime
        self.realtime_period = realtime_period
        self.cpus = cpus
        self.mems = mems
        self.idle = idle


class MemoryResources(Record):
    __slots__ = ("limit", "reservation", "swap", "swappiness", "disable_oom_killer")

    def __init__(self, limit: int | None = None, reservation: int | None = None, swap: int | None = None,
                 swappiness: int | None = None, disable_oom_killer: bool | None = None) -> None:
        self.limit = limit
        self.reservation = reservation
        self.swap = swap  # memory+swap, as in v1's memsw
        self.swappiness = swappiness
        self.disable_oom_killer = disable_oom_killer


class DeviceRule(Record):
    __slots__ = ("allow", "type", "major", "minor", "access")

    def __init__(self, allow: bool, type: str = "a", major: int | None = None, minor: int | None = None,
                 access: str = "rwm") -> None:
        self.allow = allow
        self.type = type  # a, c, b
        self.major = major  # None: any (*)
        self.minor = minor
        self.access = access

    def v1_line(self) -> str:
        if self.type == "a":
            return "a"
        major = "*" if self.major is None or self.major < 0 else str(self.major)
        minor = "*" if self.minor is None or self.minor < 0 else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


class HugepageLimit(Record):
    __slots__ = ("page_size", "limit")

    def __init__(self, page_size: str, limit: int) -> None:
        self.page_size = page_size  # "2MB", "1GB"
        self.limit = limit


class Resources(Record):
    __slots__ = ("cpu", "memory", "pids_limit", "hugepage_limits", "devices", "blkio_weight", "unified")

    def __init__(self, cpu: CpuResources | None = None, memory: MemoryResources | None = None,
                 pids_limit: int | None = None, hugepage_limits: list[HugepageLimit] | None = None,
                 devices: list[DeviceRule] | None = None, blkio_weight: int | None = None,
                 unified: dict[str, str] | None = None) -> None:
        self.cpu = CpuResources() if cpu is None else cpu
        self.memory = MemoryResources() if memory is None else memory
        self.pids_limit = pids_limit
        self.hugepage_limits: list[HugepageLimit] = [] if hugepage_limits is None else hugepage_limits
        self.devices: list[DeviceRule] = [] if devices is None else devices
        self.blkio_weight = blkio_weight
        self.unified: dict[str, str] = {} if unified is None else unified

    @classmethod
    def from_spec(cls, data: dict[str, Any] | None) -> Resources:
        data = data or {}
        if not isinstance(data, dict):
            raise CgroupError("linux.resources must be an object")
        cpu_raw = data.get("cpu") or {}
        mem_raw = data.get("memory") or {}
        where = "linux.resources"
        cpu = CpuResources(
            shares=_opt_int(cpu_raw, "shares", f"{where}.cpu"),
            quota=_opt_int(cpu_raw, "quota", f"{where}.cpu"),
            period=_opt_int(cpu_raw, "period", f"{where}.cpu"),
            realtime_runtime=_opt_int(cpu_raw, "realtimeRuntime", f"{where}.cpu"),
            realtime_period=_opt_int(cpu_raw, "realtimePeriod", f"{where}.cpu"),
            cpus=cpu_raw.get("cpus") or None,
            mems=cpu_raw.get("mems") or None,
            idle=_opt_int(cpu_raw, "idle", f"{where}.cpu"),
        )
        memory = MemoryResources(
            limit=_opt_int(mem_raw, "limit", f"{where}.memory"),
            reservation=_opt_int(mem_raw, "reservation", f"{where}.memory"),
            swap=_opt_int(mem_raw, "swap", f"{where}.memory"),
            swappiness=_opt_int(mem_raw, "swappiness", f"{where}.memory"),
            disable_oom_killer=mem_raw.get("disableOOMKiller"),
        )
        pids_raw = data.get("pids") or {}
        devices = []
        for i, raw in enumerate(data.get("devices") or []):
            if not isinstance(raw, dict) or not isinstance(raw.get("allow"), bool):
                raise CgroupError(f"{where}.devices[{i}] needs a boolean 'allow'")
            dev_type = raw.get("type") or "a"
            if dev_type not in ("a", "c", "b"):
                raise CgroupError(f"{where}.devices[{i}]: bad type {dev_type!r}")
            access = raw.get("access") or "rwm"
            if not access or any(c not in "rwm" for c in access):
                raise CgroupError(f"{where}.devices[{i}]: bad access {access!r}")
            devices.append(DeviceRule(raw["allow"], dev_type, raw.get("major"), raw.get("minor"), access))
        hugepages = [HugepageLimit(str(h["pageSize"]), int(h["limit"])) for h in data.get("hugepageLimits") or []]
        unified = data.get("unified") or {}
        if not isinstance(unified, dict):
            raise CgroupError(f"{where}.unified must be an object")
        for key, value in unified.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise CgroupError(f"{where}.unified: file names and values must be strings")
            if "/" in key or "\0" in key or key in ("", ".", ".."):
                raise CgroupError(f"{where}.unified: bad file name {key!r}")
        blkio = data.get("blockIO") or {}
        return cls(cpu=cpu, memory=memory, pids_limit=_opt_int(pids_raw, "limit", f"{where}.pids"),
                   hugepage_limits=hugepages, devices=devices,
                   blkio_weight=_opt_int(blkio, "weight", f"{where}.blockIO"),
                   unified={str(k): str(v) for k, v in unified.items()})


# the devices every container may use whatever its rules say (runc adds the same)
DEFAULT_ALLOWED_DEVICES = (
    DeviceRule(True, "c", None, None, "m"),
    DeviceRule(True, "b", None, None, "m"),
    DeviceRule(True, "c", 1, 3, "rwm"),  # /dev/null
    DeviceRule(True, "c", 1, 8, "rwm"),  # /dev/random
    DeviceRule(True, "c", 1, 7, "rwm"),  # /dev/full
    DeviceRule(True, "c", 5, 0, "rwm"),  # /dev/tty
    DeviceRule(True, "c", 1, 5, "rwm"),  # /dev/zero
    DeviceRule(True, "c", 1, 9, "rwm"),  # /dev/urandom
    DeviceRule(True, "c", 136, None, "rwm"),  # /dev/pts/*
    DeviceRule(True, "c", 5, 2, "rwm"),  # /dev/ptmx
)
