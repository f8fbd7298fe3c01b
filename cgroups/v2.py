"""cgroup v2 (unified): one directory; controllers enabled in every ancestor's
cgroup.subtree_control; v1-style values converted (shares -> weight, memory+swap -> swap)."""
from __future__ import annotations

import os

from cgroups.base import (
    CgroupError, CgroupManager, Stats, make_dirs, read_file, read_int, read_keyed, read_pids, remove_dir,
    write_file,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cgroups.resources import Resources

WANTED_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")


def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] -> cpu.weight [1, 10000] (the conversion runtimes agree on)."""
    if shares <= 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def swap_v2(limit: int | None, swap: int | None) -> str | None:
    """v1's memory+swap -> memory.swap.max (swap alone)."""
    if swap is None or swap == 0:
        return None
    if swap == -1:
        return "max"
    if limit is None or limit == -1:
        raise CgroupError("a memory swap limit needs a memory limit on cgroup v2")
    if swap < limit:
        raise CgroupError(f"memory swap limit {swap} is below the memory limit {limit}")
    return str(swap - limit)


class V2Manager(CgroupManager):
    version = 2

    def __init__(self, root: str, path: str) -> None:
        self.root = root
        self.path = path
        self.dir = root.rstrip("/") + path

    def paths(self) -> dict[str, str]:
        return {"": self.dir}

    def to_state(self) -> dict[str, object]:
        return {"version": 2, "root": self.root, "path": self.path}

    def create(self) -> None:
        try:
            available = read_file(self.root, "cgroup.controllers").split()
        except OSError:
            available = []
        wanted = [c for c in WANTED_CONTROLLERS if c in available]
        current = self.root.rstrip("/")
        for part in [p for p in self.path.split("/") if p]:
            if wanted:
                try:
                    have = read_file(current, "cgroup.controllers").split()
                except OSError:
                    have = []
                enable = " ".join(f"+{c}" for c in wanted if c in have)
                if enable:
                    write_file(current, "cgroup.subtree_control", enable)
            current = os.path.join(current, part)
            make_dirs(current)

    def add(self, pid: int) -> None:
        write_file(self.dir, "cgroup.procs", pid)

    def pids(self) -> list[int]:
        return read_pids(self.dir)

    def destroy(self, timeout: float = 5.0) -> None:
        remove_dir(self.dir, timeout)

    def _has(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.dir, name))

    def apply(self, resources: Resources) -> list[str]:
        warnings: list[str] = []
        cpu = resources.cpu
        if cpu.shares:
            write_file(self.dir, "cpu.weight", shares_to_weight(cpu.shares))
        if cpu.quota is not None or cpu.period:
            quota = "max" if cpu.quota is None or cpu.quota <= 0 else str(cpu.quota)
            write_file(self.dir, "cpu.max", f"{quota} {cpu.period or 100000}")
        if cpu.idle is not None:
            write_file(self.dir, "cpu.idle", cpu.idle)
        if cpu.cpus:
            write_file(self.dir, "cpuset.cpus", cpu.cpus)
        if cpu.mems:
            write_file(self.dir, "cpuset.mems", cpu.mems)
        memory = resources.memory
        swap = swap_v2(memory.limit, memory.swap)
        if swap is not None:
            if self._has("memory.swap.max"):
                write_file(self.dir, "memory.swap.max", swap)
            elif swap not in ("0", "max"):
                raise CgroupError("memory swap limit set but there is no memory.swap.max")
        if memory.limit is not None:
            write_file(self.dir, "memory.max", "max" if memory.limit == -1 else memory.limit)
        if memory.reservation is not None:
            write_file(self.dir, "memory.low", "max" if memory.reservation == -1 else memory.reservation)
        if memory.swappiness is not None:
            pass  # no per-cgroup swappiness in v2
        if resources.pids_limit is not None:
            write_file(self.dir, "pids.max", "max" if resources.pids_limit <= 0 else resources.pids_limit)
        for limit in resources.hugepage_limits:
            write_file(self.dir, f"hugetlb.{limit.page_size}.max", limit.limit)
        if resources.blkio_weight is not None and self._has("io.weight"):
            write_file(self.dir, "io.weight", resources.blkio_weight)
        for key, value in resources.unified.items():
            write_file(self.dir, key, value)
        if resources.devices:
            warnings.append("cgroup v2 device rules need an eBPF program, which is not loaded: "
                            "device access is limited by the device nodes only")
        return warnings

    def stats(self) -> Stats:
        stats = Stats()
        stats.cpu_usage_ns = read_keyed(self.dir, "cpu.stat").get("usage_usec", 0) * 1000
        stats.memory_usage = read_int(self.dir, "memory.current")
        inactive = read_keyed(self.dir, "memory.stat").get("inactive_file", 0)
        stats.memory_working_set = max(0, stats.memory_usage - inactive)
        stats.memory_limit = read_int(self.dir, "memory.max")
        stats.pids_current = read_int(self.dir, "pids.current")
        stats.pids_limit = read_int(self.dir, "pids.max")
        return stats
