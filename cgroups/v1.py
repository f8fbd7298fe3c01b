"""cgroup v1: one directory per hierarchy (/sys/fs/cgroup/<hierarchy>/<path>), and on a
hybrid host also the unified v2 hierarchy (no controllers there; joined like runc does, so
tools that look at 0::/ see the container).

Hierarchies are the directories under the root (a co-mounted "cpu,cpuacct" serves both
controllers; symlinks such as cpu -> cpu,cpuacct are skipped).
"""
from __future__ import annotations

import errno
import os

from pycri.cgroups.base import (
    PLAIN, CgroupError, CgroupManager, FileReader, IoDevice, Stats, make_dirs, read_file, read_int, read_keyed,
    read_pressure, remove_dir, write_file,
)
from pycri.cgroups.paths import resolve_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycri.cgroups.resources import Resources

UNIFIED = "unified"
UNLIMITED_V1 = -1
NS_PER_TICK = 10_000_000  # cpuacct.stat counts USER_HZ (100 a second) ticks


# root -> ((st_dev, st_ino, st_mtime_ns) of root, its hierarchies): looked up on every stats
# call of every container; a hierarchy mounted or removed changes root's directory entries
_hierarchies: dict[str, tuple[tuple[int, int, int], list[str]]] = {}


def list_hierarchies(root: str) -> list[str]:
    """The v1 hierarchies mounted under `root`: directories that hold a cgroup.procs. Inside a
    container (a kind node), docker's runc leaves empty, unmounted directories for hierarchies
    the host has not mounted ("cpu,cpuacct", "hugetlb", ...): they are not hierarchies.
    Kept per `root` until its directory changes (one stat instead of two calls a hierarchy)."""
    st = os.stat(root)
    key = (st.st_dev, st.st_ino, st.st_mtime_ns)
    known = _hierarchies.get(root)
    if known is not None and known[0] == key:
        return list(known[1])
    names = _find_hierarchies(root)
    _hierarchies[root] = (key, names)
    return list(names)


def _find_hierarchies(root: str) -> list[str]:
    names = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name == UNIFIED or os.path.islink(path) or not os.path.isfile(os.path.join(path, "cgroup.procs")):
            continue
        names.append(name)
    return names


def own_key(hierarchy: str) -> str:
    """The /proc/self/cgroup controllers field for a hierarchy directory name."""
    if hierarchy in ("systemd",):
        return "name=systemd"
    return hierarchy


class V1Manager(CgroupManager):
    version = 1

    def __init__(self, root: str, hierarchies: dict[str, str], path: str, *, unified: str | None = None) -> None:
        self.root = root
        self.hierarchies = hierarchies  # hierarchy name -> container directory
        self.path = path  # the cgroup path (for messages and state)
        self.unified = unified

    @classmethod
    def for_path(cls, root: str, cgroups_path: str, container_id: str, own: dict[str, str]) -> V1Manager:
        hierarchies: dict[str, str] = {}
        first = ""
        for name in list_hierarchies(root):
            path = resolve_path(cgroups_path, container_id, own.get(own_key(name), "/"))
            hierarchies[name] = os.path.join(root, name) + path
            first = first or path
        unified = None
        if os.path.exists(os.path.join(root, UNIFIED, "cgroup.procs")):
            unified = os.path.join(root, UNIFIED) + resolve_path(cgroups_path, container_id, own.get("", "/"))
        if not hierarchies:
            raise CgroupError(f"no cgroup v1 hierarchies under {root}")
        return cls(root, hierarchies, first, unified=unified)

    def paths(self) -> dict[str, str]:
        result = dict(self.hierarchies)
        if self.unified:
            result[UNIFIED] = self.unified
        return result

    def controller(self, name: str) -> str | None:
        """The container's directory in the hierarchy that has this controller."""
        for hierarchy, path in self.hierarchies.items():
            if name in hierarchy.split(","):
                return path
        return None

    def to_state(self) -> dict[str, object]:
        return self._unit_state({"version": 1, "root": self.root, "path": self.path,
                                 "hierarchies": dict(self.hierarchies), "unified": self.unified})

    def create(self) -> None:
        for hierarchy, path in self.paths().items():
            make_dirs(path)
            if "cpuset" in hierarchy.split(","):
                _init_cpuset(os.path.join(self.root, hierarchy), path)

    def add(self, pid: int) -> None:
        for path in self.paths().values():
            write_file(path, "cgroup.procs", pid)

    def procs_dir(self) -> str | None:
        for name in ("pids", "memory", "freezer", "cpu"):
            path = self.controller(name)
            if path and os.path.isdir(path):
                return path
        for path in self.paths().values():
            if os.path.isdir(path):
                return path
        return None

    def destroy(self, timeout: float = 5.0) -> None:
        errors = []
        for path in self.paths().values():
            try:
                remove_dir(path, timeout)
            except CgroupError as e:
                errors.append(str(e))
        if errors:
            raise CgroupError("; ".join(errors))

    # resources

    def apply(self, resources: Resources) -> list[str]:
        if resources.unified:
            raise CgroupError("linux.resources.unified needs cgroup v2 (this host uses v1)")
        self._apply_cpu(resources)
        self._apply_memory(resources)
        pids = self.controller("pids")
        if resources.pids_limit is not None and pids:
            write_file(pids, "pids.max", "max" if resources.pids_limit <= 0 else resources.pids_limit)
        warnings = []
        hugetlb = self.controller("hugetlb")
        if resources.hugepage_limits and hugetlb is None:
            # like runc: a controller the v1 hierarchy lacks is not applied (kubelet sets a
            # limit for every page size the kernel has, hybrid hosts keep hugetlb in v2)
            warnings.append("hugepage limits ignored: no hugetlb controller in the v1 hierarchy")
        for limit in resources.hugepage_limits if hugetlb else ():
            write_file(hugetlb, f"hugetlb.{limit.page_size}.limit_in_bytes", limit.limit)
        blkio = self.controller("blkio")
        if resources.blkio_weight is not None and blkio:
            for name in ("blkio.weight", "blkio.bfq.weight"):
                if os.path.exists(os.path.join(blkio, name)):
                    write_file(blkio, name, resources.blkio_weight)
                    break
        devices = self.controller("devices")
        if resources.devices and devices:
            for rule in resources.devices:
                write_file(devices, "devices.allow" if rule.allow else "devices.deny", rule.v1_line())
        return warnings

    def _apply_cpu(self, resources: Resources) -> None:
        cpu = resources.cpu
        path = self.controller("cpu")
        if path:
            if cpu.shares:
                write_file(path, "cpu.shares", cpu.shares)
            if cpu.period or cpu.quota:
                _write_pair(path, "cpu.cfs_period_us", cpu.period, "cpu.cfs_quota_us", cpu.quota)
            if cpu.realtime_period or cpu.realtime_runtime:
                _write_pair(path, "cpu.rt_period_us", cpu.realtime_period, "cpu.rt_runtime_us", cpu.realtime_runtime)
            if cpu.idle is not None:
                write_file(path, "cpu.idle", cpu.idle)
        cpuset = self.controller("cpuset")
        if cpuset:
            if cpu.cpus:
                write_file(cpuset, "cpuset.cpus", cpu.cpus)
            if cpu.mems:
                write_file(cpuset, "cpuset.mems", cpu.mems)

    def _apply_memory(self, resources: Resources) -> None:
        memory = resources.memory
        path = self.controller("memory")
        if not path:
            return
        limit, swap = memory.limit, memory.swap
        if limit == -1 and swap is None:
            swap = -1  # an unlimited memory limit lifts the swap limit too
        has_memsw = os.path.exists(os.path.join(path, "memory.memsw.limit_in_bytes"))
        if swap is not None and not has_memsw:
            if swap not in (-1, 0) and swap != limit:
                raise CgroupError("memory swap limit set but this kernel has no swap accounting (memory.memsw)")
            swap = None
        if limit is not None and swap is not None:
            # memsw must stay >= the memory limit at every step
            current = read_int(path, "memory.limit_in_bytes", 0)
            if limit == -1 or (0 < current < limit) or swap == -1:
                write_file(path, "memory.memsw.limit_in_bytes", swap)
                write_file(path, "memory.limit_in_bytes", limit)
            else:
                write_file(path, "memory.limit_in_bytes", limit)
                write_file(path, "memory.memsw.limit_in_bytes", swap)
        elif limit is not None:
            write_file(path, "memory.limit_in_bytes", limit)
        elif swap is not None:
            write_file(path, "memory.memsw.limit_in_bytes", swap)
        if memory.reservation is not None:
            write_file(path, "memory.soft_limit_in_bytes", memory.reservation)
        if memory.swappiness is not None and 0 <= memory.swappiness <= 100:
            write_file(path, "memory.swappiness", memory.swappiness)
        if memory.disable_oom_killer:
            write_file(path, "memory.oom_control", 1)

    def usage(self) -> Stats:
        stats, files = Stats(), self.files
        cpuacct = self.controller("cpuacct")
        if cpuacct:
            stats.cpu_usage_ns = read_int(cpuacct, "cpuacct.usage", files=files)
        memory = self.controller("memory")
        if memory:
            _brief_memory(memory, stats, files)
        pids = self.controller("pids")
        if pids:
            stats.pids_current = read_int(pids, "pids.current", files=files)
        return stats

    def stats(self) -> Stats:
        stats = Stats()
        cpuacct = self.controller("cpuacct")
        if cpuacct:
            stats.cpu_usage_ns = read_int(cpuacct, "cpuacct.usage")
            stats.cpu_user_ns = read_int(cpuacct, "cpuacct.usage_user", -1)
            stats.cpu_system_ns = read_int(cpuacct, "cpuacct.usage_sys", -1)
            if stats.cpu_user_ns < 0 or stats.cpu_system_ns < 0:  # older kernels: clock ticks only
                ticks = read_keyed(cpuacct, "cpuacct.stat")
                stats.cpu_user_ns = ticks.get("user", 0) * NS_PER_TICK
                stats.cpu_system_ns = ticks.get("system", 0) * NS_PER_TICK
        cpu = self.controller("cpu")
        if cpu:
            throttling = read_keyed(cpu, "cpu.stat")
            stats.cpu_periods = throttling.get("nr_periods", 0)
            stats.cpu_throttled_periods = throttling.get("nr_throttled", 0)
            stats.cpu_throttled_ns = throttling.get("throttled_time", 0)
            stats.cpu_shares = read_int(cpu, "cpu.shares")
            stats.cpu_period = read_int(cpu, "cpu.cfs_period_us")
            stats.cpu_quota = max(0, read_int(cpu, "cpu.cfs_quota_us"))
        memory = self.controller("memory")
        if memory:
            _memory_stats(memory, stats)
        pids = self.controller("pids")
        if pids:
            stats.pids_current = read_int(pids, "pids.current")
            stats.pids_limit = read_int(pids, "pids.max")
        blkio = self.controller("blkio")
        if blkio:
            stats.io = _blkio_devices(blkio)
        if self.unified:  # a hybrid host keeps pressure stall information in the v2 tree
            stats.pressure = read_pressure(self.unified)
        return stats


def _brief_memory(memory: str, stats: Stats, files: FileReader = PLAIN) -> dict[str, int]:
    """The memory figures CRI carries (usage(); stats() goes on from them); memory.stat's lines."""
    usage = read_int(memory, "memory.usage_in_bytes", files=files)
    detail = read_keyed(memory, "memory.stat", files)
    stats.memory_usage = usage
    stats.memory_working_set = max(0, usage - detail.get("total_inactive_file", 0))
    stats.memory_limit = _limit(read_int(memory, "memory.limit_in_bytes", files=files))
    stats.memory_rss = detail.get("total_rss", 0)
    stats.pgfault = detail.get("pgfault", 0)
    stats.pgmajfault = detail.get("pgmajfault", 0)
    return detail


def _limit(value: int) -> int:
    """v1 writes "no limit" as a huge number (the largest page multiple); 0 here."""
    return 0 if value >= (1 << 62) else max(0, value)


def _memory_stats(memory: str, stats: Stats) -> None:
    detail = _brief_memory(memory, stats)
    stats.memory_max_usage = read_int(memory, "memory.max_usage_in_bytes")
    stats.memory_cache = detail.get("total_cache", 0)
    stats.memory_mapped_file = detail.get("total_mapped_file", 0)
    memsw = read_int(memory, "memory.memsw.usage_in_bytes", -1)  # memory + swap, with swap accounting
    stats.memory_swap = max(0, memsw - stats.memory_usage) if memsw >= 0 else detail.get("total_swap", 0)
    stats.memory_kernel = read_int(memory, "memory.kmem.usage_in_bytes")
    stats.memory_failcnt = read_int(memory, "memory.failcnt")
    stats.hierarchy_pgfault = detail.get("total_pgfault", stats.pgfault)
    stats.hierarchy_pgmajfault = detail.get("total_pgmajfault", stats.pgmajfault)
    stats.oom_kills = read_keyed(memory, "memory.oom_control").get("oom_kill", 0)
    stats.memory_reservation = _limit(read_int(memory, "memory.soft_limit_in_bytes"))
    stats.memory_swap_limit = _limit(read_int(memory, "memory.memsw.limit_in_bytes"))


def _blkio_devices(blkio: str) -> list[IoDevice]:
    """Bytes and operations by device from the throttle layer's counters, which see all I/O
    whatever the scheduler (BFQ's own files when the throttle ones are missing)."""
    devices: dict[tuple[int, int], IoDevice] = {}
    for prefix in ("blkio.throttle.", "blkio.bfq."):
        for name, fields in (("io_service_bytes_recursive", ("read_bytes", "write_bytes")),
                             ("io_serviced_recursive", ("reads", "writes"))):
            try:
                text = read_file(blkio, prefix + name)
            except OSError:
                continue
            for line in text.splitlines():
                parts = line.split()
                if len(parts) != 3 or parts[1] not in ("Read", "Write"):
                    continue  # Sync, Async, Discard, Total and the grand total
                major, _, minor = parts[0].partition(":")
                try:
                    key, value = (int(major), int(minor)), int(parts[2])
                except ValueError:
                    continue
                device = devices.setdefault(key, IoDevice(*key))
                setattr(device, fields[0] if parts[1] == "Read" else fields[1], value)
        if devices:
            break
    return [devices[key] for key in sorted(devices)]


def _write_pair(path: str, period_file: str, period: int | None, quota_file: str, quota: int | None) -> None:
    """Period then quota; if the kernel refuses that order (the old quota does not fit the
    new period), quota first."""
    try:
        if period:
            write_file(path, period_file, period)
        if quota:
            write_file(path, quota_file, quota)
    except CgroupError:
        if not (period and quota):
            raise
        write_file(path, quota_file, quota)
        write_file(path, period_file, period)


def _init_cpuset(hierarchy_root: str, path: str) -> None:
    """A new cpuset cgroup starts with empty cpus/mems and takes no tasks: copy them down
    from the parent at every level that is still empty."""
    relative = os.path.relpath(path, hierarchy_root)
    current = hierarchy_root
    for part in [] if relative == "." else relative.split("/"):
        parent, current = current, os.path.join(current, part)
        for name in ("cpuset.cpus", "cpuset.mems"):
            try:
                value = read_file(current, name)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    continue
                raise CgroupError(f"read {current}/{name}: {e.strerror}") from None
            if not value:
                write_file(current, name, read_file(parent, name))
