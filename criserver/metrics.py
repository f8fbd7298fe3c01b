"""The CRI metrics (ListMetricDescriptors, ListPodSandboxMetrics): cgroup, process, filesystem
and network samples as metrics under cadvisor's names, which kubelet serves on /metrics/cadvisor
(with the PodAndContainerStatsFromCRI feature), as containerd and CRI-O report them.

Every metric carries the labels id, name and image, as CRI-O's do, then its own (cpu,
interface, device...). kubelet adds namespace, pod and container (newer kubelets do; a runtime
that sent them too would clash), which completes cadvisor's set. name is the Docker-era
k8s_<container>_<pod>_<namespace>_<uid>_<attempt> that cadvisor reported, with POD for the pod's
own metrics (from its cgroup and network namespace). One table, FAMILIES, makes both the
descriptors and the metrics, so their label keys and values always agree.

The CRI carries integers: seconds are whole seconds, as containerd and CRI-O send them. Metrics
are gathered live, so their timestamp is 0 (the CRI's rule: only a cached metric has one).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path

from pycri import cgroups

from pycri.api.cri import api_pb2 as cri
from pycri.kernel.mountinfo import MOUNTINFO, read_mountinfo
from pycri.sandbox.netstats import InterfaceStats

NS_PER_SECOND = 1_000_000_000
US_PER_SECOND = 1_000_000
COUNTER, GAUGE = cri.MetricType.COUNTER, cri.MetricType.GAUGE


@dataclass(frozen=True)
class Labels:
    """The labels on every metric, in this order."""

    id: str  # the container's or the pod sandbox's CRI id
    name: str  # k8s_<container>_<pod>_<namespace>_<uid>_<attempt>, see full_name
    image: str  # the image the container was created from; "" for the pod (it has no pause image)


BASE_LABELS = tuple(f.name for f in fields(Labels))
POD = "POD"  # the container part of the name of a pod's own metrics


def full_name(container: str, pod: str, namespace: str, uid: str, attempt: int) -> str:
    """The name cadvisor reported for a pod's container (kubelet's Docker-era naming)."""
    return f"k8s_{container}_{pod}_{namespace}_{uid}_{attempt}"


@dataclass(frozen=True)
class Filesystem:
    """A container's writable layer on the filesystem that holds it."""

    device: str
    usage_bytes: int
    limit_bytes: int
    inodes_total: int
    inodes_free: int


@dataclass(frozen=True)
class Sample:
    """All one cgroup's metrics are made of: a container's, or a pod's own."""

    labels: Labels
    now_ns: int
    start_time_ns: int
    cgroup: cgroups.Stats
    processes: cgroups.ProcessStats | None = None
    filesystem: Filesystem | None = None
    interfaces: Sequence[InterfaceStats] = ()
    device_names: Mapping[tuple[int, int], str] = field(default_factory=dict)  # (major, minor) -> /dev/...

    def device(self, major: int, minor: int) -> str:
        return self.device_names.get((major, minor), f"{major}:{minor}")


Value = tuple[tuple[str, ...], int]  # the family's own label values, the value


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    type: int  # COUNTER or GAUGE
    values: Callable[[Sample], Iterable[Value]]
    labels: tuple[str, ...] = ()  # after BASE_LABELS


def _one(get: Callable[[Sample], int | None]) -> Callable[[Sample], Iterable[Value]]:
    """A family with one unlabelled value (none when `get` gives None)."""
    def values(s: Sample) -> Iterable[Value]:
        value = get(s)
        return [] if value is None else [((), value)]
    return values


def _cgroup(field: str, scale: int = 1) -> Callable[[Sample], Iterable[Value]]:
    return _one(lambda s: getattr(s.cgroup, field) // scale)


def _procs(field: str) -> Callable[[Sample], Iterable[Value]]:
    return _one(lambda s: None if s.processes is None else getattr(s.processes, field))


def _fs(field: str) -> Callable[[Sample], Iterable[Value]]:
    def values(s: Sample) -> Iterable[Value]:
        return [] if s.filesystem is None else [((s.filesystem.device,), getattr(s.filesystem, field))]
    return values


def _io(field: str) -> Callable[[Sample], Iterable[Value]]:
    def values(s: Sample) -> Iterable[Value]:
        return [((s.device(d.major, d.minor),), getattr(d, field)) for d in s.cgroup.io]
    return values


def _blkio(s: Sample) -> Iterable[Value]:
    for d in s.cgroup.io:
        labels = (s.device(d.major, d.minor), str(d.major), str(d.minor))
        yield (*labels, "Read"), d.read_bytes
        yield (*labels, "Write"), d.write_bytes


def _net(field: str) -> Callable[[Sample], Iterable[Value]]:
    def values(s: Sample) -> Iterable[Value]:
        return [((i.name,), getattr(i, field)) for i in s.interfaces]
    return values


def _pressure(resource: str, full: bool) -> Callable[[Sample], Iterable[Value]]:
    def get(s: Sample) -> int | None:
        totals = s.cgroup.pressure.get(resource)
        return None if totals is None else totals[1 if full else 0] // US_PER_SECOND
    return _one(get)


def _failures(s: Sample) -> Iterable[Value]:
    c = s.cgroup
    return [(("pgfault", "container"), c.pgfault), (("pgfault", "hierarchy"), c.hierarchy_pgfault),
            (("pgmajfault", "container"), c.pgmajfault), (("pgmajfault", "hierarchy"), c.hierarchy_pgmajfault)]


def _families() -> list[Family]:
    families = [
        Family("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", COUNTER,
               lambda s: [(("total",), s.cgroup.cpu_usage_ns // NS_PER_SECOND)], ("cpu",)),
        Family("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", COUNTER,
               _cgroup("cpu_user_ns", NS_PER_SECOND)),
        Family("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", COUNTER,
               _cgroup("cpu_system_ns", NS_PER_SECOND)),
        Family("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", COUNTER,
               _cgroup("cpu_periods")),
        Family("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", COUNTER,
               _cgroup("cpu_throttled_periods")),
        Family("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.",
               COUNTER, _cgroup("cpu_throttled_ns", NS_PER_SECOND)),
        Family("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of "
               "when it was accessed.", GAUGE, _cgroup("memory_usage")),
        Family("container_memory_working_set_bytes", "Current working set in bytes.", GAUGE,
               _cgroup("memory_working_set")),
        Family("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes.", GAUGE,
               _cgroup("memory_max_usage")),
        Family("container_memory_cache", "Number of bytes of page cache memory.", GAUGE, _cgroup("memory_cache")),
        Family("container_memory_rss", "Size of RSS in bytes.", GAUGE, _cgroup("memory_rss")),
        Family("container_memory_mapped_file", "Size of memory mapped files in bytes.", GAUGE,
               _cgroup("memory_mapped_file")),
        Family("container_memory_swap", "Container swap usage in bytes.", GAUGE, _cgroup("memory_swap")),
        Family("container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", GAUGE,
               _cgroup("memory_kernel")),
        Family("container_memory_failcnt", "Number of memory usage hits limits.", COUNTER, _cgroup("memory_failcnt")),
        Family("container_memory_failures_total", "Cumulative count of memory allocation failures.", COUNTER,
               _failures, ("failure_type", "scope")),
        Family("container_oom_events_total", "Count of out of memory events observed for the container.", COUNTER,
               _cgroup("oom_kills")),
        Family("container_processes", "Number of processes running inside the container.", GAUGE,
               _procs("processes")),
        Family("container_threads", "Number of threads running inside the container.", GAUGE,
               _cgroup("pids_current")),
        Family("container_threads_max", "Maximum number of threads allowed inside the container, infinity if value "
               "is zero.", GAUGE, _cgroup("pids_limit")),
        Family("container_file_descriptors", "Number of open file descriptors for the container.", GAUGE,
               _procs("file_descriptors")),
        Family("container_sockets", "Number of open sockets for the container.", GAUGE, _procs("sockets")),
        Family("container_spec_cpu_period", "CPU period of the container.", GAUGE, _cgroup("cpu_period")),
        Family("container_spec_cpu_shares", "CPU share of the container.", GAUGE, _cgroup("cpu_shares")),
        Family("container_spec_cpu_quota", "CPU quota of the container.", GAUGE,
               _one(lambda s: s.cgroup.cpu_quota or None)),  # as cadvisor: only when there is one
        Family("container_spec_memory_limit_bytes", "Memory limit for the container.", GAUGE,
               _cgroup("memory_limit")),
        Family("container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.",
               GAUGE, _cgroup("memory_reservation")),
        Family("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", GAUGE,
               _cgroup("memory_swap_limit")),
        Family("container_start_time_seconds", "Start time of the container since unix epoch in seconds.", GAUGE,
               _one(lambda s: s.start_time_ns // NS_PER_SECOND)),
        Family("container_last_seen", "Last time a container was seen by the exporter.", GAUGE,
               _one(lambda s: s.now_ns // NS_PER_SECOND)),
        Family("container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.",
               GAUGE, _fs("usage_bytes"), ("device",)),
        Family("container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this "
               "filesystem.", GAUGE, _fs("limit_bytes"), ("device",)),
        Family("container_fs_inodes_total", "Number of Inodes.", GAUGE, _fs("inodes_total"), ("device",)),
        Family("container_fs_inodes_free", "Number of available Inodes.", GAUGE, _fs("inodes_free"), ("device",)),
        Family("container_fs_reads_bytes_total", "Cumulative count of bytes read.", COUNTER, _io("read_bytes"),
               ("device",)),
        Family("container_fs_writes_bytes_total", "Cumulative count of bytes written.", COUNTER,
               _io("write_bytes"), ("device",)),
        Family("container_fs_reads_total", "Cumulative count of reads completed.", COUNTER, _io("reads"),
               ("device",)),
        Family("container_fs_writes_total", "Cumulative count of writes completed.", COUNTER, _io("writes"),
               ("device",)),
        Family("container_blkio_device_usage_total", "Blkio device bytes usage.", COUNTER, _blkio,
               ("device", "major", "minor", "operation")),
    ]
    for direction, prefix, done, doing in (("receive", "rx", "received", "receiving"),
                                           ("transmit", "tx", "transmitted", "transmitting")):
        families += [
            Family(f"container_network_{direction}_bytes_total", f"Cumulative count of bytes {done}.", COUNTER,
                   _net(f"{prefix}_bytes"), ("interface",)),
            Family(f"container_network_{direction}_packets_total", f"Cumulative count of packets {done}.", COUNTER,
                   _net(f"{prefix}_packets"), ("interface",)),
            Family(f"container_network_{direction}_packets_dropped_total",
                   f"Cumulative count of packets dropped while {doing}.", COUNTER,
                   _net(f"{prefix}_dropped"), ("interface",)),
            Family(f"container_network_{direction}_errors_total",
                   f"Cumulative count of errors encountered while {doing}.", COUNTER,
                   _net(f"{prefix}_errors"), ("interface",)),
        ]
    for resource, cause in (("cpu", "CPU congestion"), ("memory", "memory shortage"), ("io", "IO contention")):
        families += [
            Family(f"container_pressure_{resource}_waiting_seconds_total",
                   f"Total time duration tasks in the container have waited due to {cause}.", COUNTER,
                   _pressure(resource, full=False)),
            Family(f"container_pressure_{resource}_stalled_seconds_total",
                   f"Total time duration no tasks in the container could make progress due to {cause}.", COUNTER,
                   _pressure(resource, full=True)),
        ]
    return families


FAMILIES = _families()


def descriptors() -> list[cri.MetricDescriptor]:
    return [cri.MetricDescriptor(name=f.name, help=f.help, label_keys=[*BASE_LABELS, *f.labels]) for f in FAMILIES]


def metrics(sample: Sample) -> list[cri.Metric]:
    base = astuple(sample.labels)
    return [cri.Metric(name=f.name, metric_type=f.type, label_values=[*base, *extra],
                       value=cri.UInt64Value(value=max(0, value)))
            for f in FAMILIES for extra, value in f.values(sample)]


def pod_sandbox_metrics(pod_id: str, pod: Sample | None,
                        containers: Iterable[tuple[str, Sample]]) -> cri.PodSandboxMetrics:
    """A pod's own metrics (from its cgroup and network, when it has them) and its containers'."""
    return cri.PodSandboxMetrics(
        pod_sandbox_id=pod_id, metrics=metrics(pod) if pod is not None else [],
        container_metrics=[cri.ContainerMetrics(container_id=cid, metrics=metrics(s)) for cid, s in containers])


# -- what the samples need besides cgroup and network counters -----------------------------


def filesystem(path: Path, usage_bytes: int) -> Filesystem:
    """The filesystem under `path` (capacity and inodes) with `usage_bytes` of it used."""
    st = os.statvfs(path)
    return Filesystem(mount_source(os.stat(path).st_dev), usage_bytes, st.f_blocks * st.f_frsize, st.f_files,
                      st.f_ffree)


@functools.lru_cache(maxsize=64)
def mount_source(dev: int, mountinfo: str = MOUNTINFO) -> str:
    """What a filesystem is mounted from (/dev/sda1, overlay, tmpfs), by its st_dev."""
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        entries = read_mountinfo(mountinfo)
    except OSError:
        return wanted
    return next((e.source for e in entries if e.device == wanted), wanted)


@functools.lru_cache(maxsize=64)
def block_device_name(major: int, minor: int, sys: str = "/sys") -> str:
    """/dev/<name> of a block device, from its uevent; "major:minor" if it has none."""
    try:
        with open(f"{sys}/dev/block/{major}:{minor}/uevent") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                if key == "DEVNAME" and value:
                    return f"/dev/{value}"
    except OSError:
        pass
    return f"{major}:{minor}"


def device_names(stats: cgroups.Stats) -> dict[tuple[int, int], str]:
    return {(d.major, d.minor): block_device_name(d.major, d.minor) for d in stats.io}
