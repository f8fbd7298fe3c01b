"""linux.resources of the OCI spec (also the body of `update --resources`) as dataclasses.

None means "not set: leave as it is". Values keep the spec's units and meanings (memory in
bytes with -1 for unlimited, cpu quota/period in microseconds, shares as v1 shares); each
manager converts them for its cgroup version.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cgroups.base import CgroupError


def _opt_int(data: dict[str, Any], key: str, where: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise CgroupError(f"{where}.{key} must be an integer")
    return value


@dataclass
class CpuResources:
    shares: int | None = None
    quota: int | None = None
    period: int | None = None
    realtime_runtime: int | None = None
    realtime_period: int | None = None
    cpus: str | None = None
    mems: str | None = None
    idle: int | None = None


@dataclass
class MemoryResources:
    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None  # memory+swap, as in v1's memsw
    swappiness: int | None = None
    disable_oom_killer: bool | None = None


@dataclass
class DeviceRule:
    allow: bool
    type: str = "a"  # a, c, b
    major: int | None = None  # None: any (*)
    minor: int | None = None
    access: str = "rwm"

    def v1_line(self) -> str:
        if self.type == "a":
            return "a"
        major = "*" if self.major is None or self.major < 0 else str(self.major)
        minor = "*" if self.minor is None or self.minor < 0 else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


@dataclass
class HugepageLimit:
    page_size: str  # "2MB", "1GB"
    limit: int


@dataclass
class Resources:
    cpu: CpuResources = field(default_factory=CpuResources)
    memory: MemoryResources = field(default_factory=MemoryResources)
    pids_limit: int | None = None
    hugepage_limits: list[HugepageLimit] = field(default_factory=list)
    devices: list[DeviceRule] = field(default_factory=list)
    blkio_weight: int | None = None
    unified: dict[str, str] = field(default_factory=dict)

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
        for key in unified:
            if "/" in key or key in ("", ".", ".."):
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
