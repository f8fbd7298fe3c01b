"""cgroup v2 (unified): one directory; controllers enabled in every ancestor's
cgroup.subtree_control; v1-style values converted (shares -> weight, memory+swap -> swap)."""
from __future__ import annotations

import os

from pycri.cgroups.base import (
    CgroupError, CgroupManager, IoDevice, Stats, make_dirs, read_file, read_int, read_keyed, read_pressure,
    remove_dir, write_file,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycri.cgroups.resources import DeviceRule, Resources
    from pycri.kernel.bpf import LinuxBpf as DeviceBpf

WANTED_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")


def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] -> cpu.weight [1, 10000] (the conversion runtimes agree on)."""
    if shares <= 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight [10, 1000] -> io.weight [1, 10000] (runc's and crun's conversion)."""
    if weight <= 0:
        return 0
    return 1 + ((weight - 10) * 9999) // 990


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

    def __init__(self, root: str, path: str, bpf: DeviceBpf | None = None) -> None:
        self.root = root
        self.path = path
        self.dir = root.rstrip("/") + path
        self._bpf = bpf  # None: the real bpf(2) (kernel.bpf), imported when device rules are set

    def paths(self) -> dict[str, str]:
        return {"": self.dir}

    def to_state(self) -> dict[str, object]:
        return self._unit_state({"version": 2, "root": self.root, "path": self.path})

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

    def procs_dir(self) -> str | None:
        return self.dir

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
            # without a period the kernel keeps the cgroup's own (an update of the quota alone
            # must not reset a period set at create), as runc writes it
            write_file(self.dir, "cpu.max", f"{quota} {cpu.period}" if cpu.period else quota)
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
        if memory.swappiness is not None and memory.swappiness != -1:
            warnings.append("memory.swappiness: cgroup v2 has no per-cgroup swappiness")  # ignored, as crun
        if memory.disable_oom_killer:
            warnings.append("memory.disableOOMKiller: cgroup v2 cannot turn the OOM killer off")
        if resources.pids_limit is not None:
            write_file(self.dir, "pids.max", "max" if resources.pids_limit <= 0 else resources.pids_limit)
        for limit in resources.hugepage_limits:
            write_file(self.dir, f"hugetlb.{limit.page_size}.max", limit.limit)
        if resources.blkio_weight:
            if self._has("io.bfq.weight"):  # BFQ takes v1's scale [1, 1000] as it is
                write_file(self.dir, "io.bfq.weight", resources.blkio_weight)
            elif self._has("io.weight"):
                write_file(self.dir, "io.weight", blkio_weight_to_io_weight(resources.blkio_weight))
            else:
                warnings.append("blockIO.weight: the cgroup has no io.weight")
        for key, value in resources.unified.items():
            write_file(self.dir, key, value)
        if resources.devices:
            self.set_devices(resources.devices)
        return warnings

    def set_devices(self, rules: list[DeviceRule]) -> None:
        """Device access on v2: a BPF_PROG_TYPE_CGROUP_DEVICE program made from the rules
        (cgroups.devices_bpf), attached to the cgroup; pycri's program from before (an update)
        is detached once the new one is in place, so the cgroup is never without one. The rules
        are the whole list, an update's too (v1 adds an update's rules to the earlier ones)."""
        from pycri.cgroups.devices_bpf import LICENSE, PROGRAM_NAME, device_filter

        program = device_filter(rules)
        bpf = self._bpf
        if bpf is None:
            from pycri.kernel.bpf import LinuxBpf

            bpf = LinuxBpf()
        try:
            cgroup_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise CgroupError(f"open {self.dir}: {e.strerror}") from None
        old: list[int] = []
        new = -1
        try:
            for program_id in bpf.device_program_ids(cgroup_fd):
                try:
                    fd = bpf.program_fd(program_id)
                except (FileNotFoundError, PermissionError):  # detached meanwhile; an LSM's (not ours)
                    continue
                try:
                    ours = bpf.program_name(fd) == PROGRAM_NAME
                except OSError:
                    os.close(fd)
                    raise
                if ours:
                    old.append(fd)
                else:  # not pycri's: it can only take access away, so it stays
                    os.close(fd)
            new = bpf.load_device_program(program, LICENSE, PROGRAM_NAME)
            bpf.attach_device_program(cgroup_fd, new)
            for fd in old:
                bpf.detach_device_program(cgroup_fd, fd)
        except OSError as e:
            raise CgroupError(f"device filter for {self.dir}: {e}") from None
        finally:
            for fd in [cgroup_fd, new, *old]:
                if fd >= 0:
                    os.close(fd)

    def stats(self) -> Stats:
        stats = Stats()
        cpu = read_keyed(self.dir, "cpu.stat")
        stats.cpu_usage_ns = cpu.get("usage_usec", 0) * 1000
        stats.cpu_user_ns = cpu.get("user_usec", 0) * 1000
        stats.cpu_system_ns = cpu.get("system_usec", 0) * 1000
        stats.cpu_periods = cpu.get("nr_periods", 0)
        stats.cpu_throttled_periods = cpu.get("nr_throttled", 0)
        stats.cpu_throttled_ns = cpu.get("throttled_usec", 0) * 1000
        stats.cpu_shares = weight_to_shares(read_int(self.dir, "cpu.weight"))
        quota, _, period = _read(self.dir, "cpu.max").partition(" ")
        stats.cpu_quota = int(quota) if quota.isdigit() else 0
        stats.cpu_period = int(period) if period.isdigit() else 0
        self._memory_stats(stats)
        stats.pids_current = read_int(self.dir, "pids.current")
        stats.pids_limit = read_int(self.dir, "pids.max")
        stats.io = _io_devices(_read(self.dir, "io.stat"))
        stats.pressure = read_pressure(self.dir)
        return stats

    def usage(self) -> Stats:
        stats, files = Stats(), self.files
        stats.cpu_usage_ns = read_keyed(self.dir, "cpu.stat", files).get("usage_usec", 0) * 1000
        self._brief_memory(stats)
        stats.pids_current = read_int(self.dir, "pids.current", files=files)
        return stats

    def _brief_memory(self, stats: Stats) -> dict[str, int]:
        """The memory figures CRI carries (usage(); stats() goes on from them); memory.stat's lines."""
        files = self.files
        detail = read_keyed(self.dir, "memory.stat", files)
        stats.memory_usage = read_int(self.dir, "memory.current", files=files)
        stats.memory_working_set = max(0, stats.memory_usage - detail.get("inactive_file", 0))
        stats.memory_limit = read_int(self.dir, "memory.max", files=files)
        stats.memory_rss = detail.get("anon", 0)
        stats.pgfault = detail.get("pgfault", 0)
        stats.pgmajfault = detail.get("pgmajfault", 0)
        return detail

    def _memory_stats(self, stats: Stats) -> None:
        detail = self._brief_memory(stats)
        events = read_keyed(self.dir, "memory.events")
        stats.memory_max_usage = read_int(self.dir, "memory.peak")
        stats.memory_cache = detail.get("file", 0)
        stats.memory_mapped_file = detail.get("file_mapped", 0)
        stats.memory_swap = read_int(self.dir, "memory.swap.current")
        stats.memory_kernel = detail.get("kernel", detail.get("kernel_stack", 0) + detail.get("slab", 0))
        stats.memory_failcnt = events.get("max", 0)  # times usage hit memory.max, as runc reports failcnt
        stats.hierarchy_pgfault, stats.hierarchy_pgmajfault = stats.pgfault, stats.pgmajfault
        stats.oom_kills = events.get("oom_kill", 0)
        stats.memory_reservation = read_int(self.dir, "memory.low")
        swap = _read(self.dir, "memory.swap.max")
        if stats.memory_limit and swap.isdigit():  # memory + swap, the v1 (and CRI) meaning
            stats.memory_swap_limit = stats.memory_limit + int(swap)


def weight_to_shares(weight: int) -> int:
    """cpu.weight [1, 10000] -> cpu.shares [2, 262144]: shares_to_weight backwards, up to a weight
    step (the weight scale is the coarser one)."""
    if weight <= 0:
        return 0
    return 2 + ((weight - 1) * 262142) // 9999


def _read(directory: str, name: str) -> str:
    try:
        return read_file(directory, name)
    except OSError:
        return ""


def _io_devices(text: str) -> list[IoDevice]:
    """io.stat: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0` a device."""
    devices = []
    for line in text.splitlines():
        device, *fields = line.split() or [""]
        major, _, minor = device.partition(":")
        values = dict(field.partition("=")[::2] for field in fields)
        try:
            devices.append(IoDevice(int(major), int(minor), int(values.get("rbytes", 0)),
                                    int(values.get("wbytes", 0)), int(values.get("rios", 0)),
                                    int(values.get("wios", 0))))
        except ValueError:
            continue
    return devices
