"""CRI stats calls: container and pod sandbox CPU, memory, network and writable-layer usage,
the same samples as CRI metrics (criserver.metrics), and UpdateContainerResources /
ReopenContainerLog. CPU rates (usage_nano_cores) come from the previous sample of the same
container or pod, as containerd computes them."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pycri import cgroups

from pycri.api.cri import api_pb2 as cri
from pycri.containers.service import ContainerService, ContainerStats
from pycri.containers.records import ContainerRecord
from pycri.criserver import list_streams, metrics, oci_spec
from pycri.criserver.list_replies import REPEATED_FIELD_1, Encoded, ListReplies, varint
from pycri.criserver.pods import _required, container_filter, matches_labels
from pycri.sandbox import netstats
from pycri.sandbox.service import SandboxService
from pycri.sandbox.records import READY, SandboxRecord

DEFAULT_INTERFACE = "eth0"  # the pod interface kubelet reports first, as CNI plugins name it


class CpuRates:
    """usage_nano_cores from two samples of cumulative CPU time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, tuple[int, int]] = {}

    def rate(self, key: str, timestamp: int, usage_ns: int) -> int | None:
        with self._lock:
            previous = self._last.get(key)
            self._last[key] = (timestamp, usage_ns)
        if previous is None or timestamp <= previous[0] or usage_ns < previous[1]:
            return None
        return int((usage_ns - previous[1]) * 1e9 / (timestamp - previous[0]))


def _fill_cpu(cpu: cri.CpuUsage, key: str, stats: cgroups.Stats, timestamp: int, rates: CpuRates) -> None:
    cpu.timestamp = timestamp
    cpu.usage_core_nano_seconds.value = stats.cpu_usage_ns
    rate = rates.rate(key, timestamp, stats.cpu_usage_ns)
    if rate is not None:
        cpu.usage_nano_cores.value = rate


def _cpu(key: str, stats: cgroups.Stats, timestamp: int, rates: CpuRates) -> cri.CpuUsage:
    cpu = cri.CpuUsage()
    _fill_cpu(cpu, key, stats, timestamp, rates)
    return cpu


def _fill_memory(memory: cri.MemoryUsage, stats: cgroups.Stats, timestamp: int) -> None:
    memory.timestamp = timestamp
    memory.working_set_bytes.value = stats.memory_working_set
    memory.usage_bytes.value = stats.memory_usage
    # anonymous memory (v1 total_rss, v2 memory.stat anon) and the page faults, as containerd
    # reports them (kubelet's summary API shows them)
    memory.rss_bytes.value = stats.memory_rss
    memory.page_faults.value = stats.pgfault
    memory.major_page_faults.value = stats.pgmajfault
    if stats.memory_limit:
        memory.available_bytes.value = max(0, stats.memory_limit - stats.memory_working_set)


def _memory(stats: cgroups.Stats, timestamp: int) -> cri.MemoryUsage:
    memory = cri.MemoryUsage()
    _fill_memory(memory, stats, timestamp)
    return memory


def _container_attributes(record: ContainerRecord) -> cri.ContainerAttributes:
    return cri.ContainerAttributes(
        id=record.id, metadata=cri.ContainerMetadata(name=record.name, attempt=record.attempt),
        labels=record.labels, annotations=record.annotations)


def _network(interfaces: list[netstats.InterfaceStats], timestamp: int) -> cri.NetworkUsage:
    usages = [cri.NetworkInterfaceUsage(
        name=i.name, rx_bytes=cri.UInt64Value(value=i.rx_bytes), rx_errors=cri.UInt64Value(value=i.rx_errors),
        tx_bytes=cri.UInt64Value(value=i.tx_bytes), tx_errors=cri.UInt64Value(value=i.tx_errors))
        for i in interfaces]
    default = next((u for u in usages if u.name == DEFAULT_INTERFACE), usages[0])
    return cri.NetworkUsage(timestamp=timestamp, default_interface=default,
                            interfaces=[u for u in usages if u is not default])


T = TypeVar("T")


def _read_or_none(read: Callable[[], T]) -> T | None:
    """What a pod cgroup's `read` gives, or None when the cgroup went away meanwhile (the pod
    was stopped or removed during a List call: one pod's race must not fail the whole list)."""
    try:
        return read()
    except (OSError, ValueError, cgroups.CgroupError):
        return None


def _pod_cgroup(record: SandboxRecord) -> cgroups.CgroupManager | None:
    """The pod's cgroup (kubelet's pod cgroup, or pycri's own without a parent); None if absent.
    Under the systemd driver the parent is a slice name, whose cgroup cgroups.new_manager finds
    below systemd's root (cgroups.systemd)."""
    try:
        manager = cgroups.new_manager(record.cgroup_parent, record.id)
        return manager if manager.exists() else None
    except (OSError, ValueError, cgroups.CgroupError):
        return None


def _interfaces(record: SandboxRecord) -> list[netstats.InterfaceStats]:
    try:
        return netstats.pod_interface_stats(record)
    except OSError:  # the namespace went away with the pod
        return []


class StatsCalls:
    sandboxes: SandboxService
    containers: ContainerService
    cpu_rates: CpuRates
    stream_chunk: tuple[int, int]  # items and bytes per Stream* message (PodCalls has the default)
    stats_attributes: ListReplies[cri.ListContainerStatsResponse]  # each container's attributes, encoded once

    def _container_usage(self, record: ContainerRecord) -> cri.ContainerStats:
        """A container's stats without their attributes: this sample's figures."""
        sample: ContainerStats = self.containers.stats(record, brief=True)
        out = cri.ContainerStats()
        if sample.cgroup is not None:
            _fill_cpu(out.cpu, record.id, sample.cgroup, sample.timestamp, self.cpu_rates)
            _fill_memory(out.memory, sample.cgroup, sample.timestamp)
        layer = out.writable_layer
        layer.timestamp = sample.timestamp
        layer.fs_id.mountpoint = str(self.containers.root)
        layer.used_bytes.value = sample.writable_bytes
        layer.inodes_used.value = sample.writable_inodes
        return out

    def _container_stats(self, record: ContainerRecord) -> cri.ContainerStats:
        out = self._container_usage(record)
        out.attributes.CopyFrom(_container_attributes(record))
        return out

    def _container_stats_entry(self, record: ContainerRecord) -> bytes:
        """A container's stats as an entry of ListContainerStatsResponse.stats: its attributes
        (fixed at create, so encoded once: `stats_attributes`, field 1 of ContainerStats) and
        this sample's fields, joined."""
        fields = self.stats_attributes.entry_of(record.id, "", lambda: _container_attributes(record)) \
            + self._container_usage(record).SerializeToString()
        return REPEATED_FIELD_1 + varint(len(fields)) + fields

    def ContainerStats(self, request: cri.ContainerStatsRequest, context: Any) -> cri.ContainerStatsResponse:
        record = self.containers.get(_required(request.container_id, "container_id"))
        return cri.ContainerStatsResponse(stats=self._container_stats(record))

    def ListContainerStats(self, request: cri.ListContainerStatsRequest,
                           context: Any) -> Encoded[cri.ListContainerStatsResponse]:
        records = self.containers.list(None, container_filter(request.filter))
        return Encoded(cri.ListContainerStatsResponse, b"".join(self._container_stats_entry(r) for r in records))

    def StreamContainerStats(self, request: cri.StreamContainerStatsRequest,
                             context: Any) -> Iterator[cri.StreamContainerStatsResponse]:
        return list_streams.stream(
            context, lambda: self.ListContainerStats(cri.ListContainerStatsRequest(filter=request.filter), context).stats,
            lambda batch: cri.StreamContainerStatsResponse(container_stats=batch), *self.stream_chunk)

    def _sandbox_stats(self, record: SandboxRecord) -> cri.PodSandboxStats:
        out = cri.PodSandboxStats(attributes=cri.PodSandboxAttributes(
            id=record.id, metadata=cri.PodSandboxMetadata(name=record.name, namespace=record.namespace,
                                                         uid=record.uid, attempt=record.attempt),
            labels=record.labels, annotations=record.annotations))
        containers = self.containers.list(record.id)
        linux = cri.LinuxPodSandboxStats(containers=[self._container_stats(c) for c in containers])
        if record.state == READY:
            now = time.time_ns()
            manager = _pod_cgroup(record)
            stats = _read_or_none(manager.usage) if manager is not None else None
            if stats is not None:
                linux.cpu.CopyFrom(_cpu(f"pod:{record.id}", stats, now, self.cpu_rates))
                linux.memory.CopyFrom(_memory(stats, now))
                linux.process.timestamp = now
                linux.process.process_count.value = stats.pids_current
            interfaces = _interfaces(record)
            if interfaces:
                linux.network.CopyFrom(_network(interfaces, now))
        out.linux.CopyFrom(linux)
        return out

    def PodSandboxStats(self, request: cri.PodSandboxStatsRequest, context: Any) -> cri.PodSandboxStatsResponse:
        record = self.sandboxes.get(_required(request.pod_sandbox_id, "pod_sandbox_id"))
        return cri.PodSandboxStatsResponse(stats=self._sandbox_stats(record))

    def ListPodSandboxStats(self, request: cri.ListPodSandboxStatsRequest, context: Any) -> cri.ListPodSandboxStatsResponse:
        f = request.filter
        records = [r for r in self.sandboxes.list()
                   if (not f.id or r.id.startswith(f.id)) and matches_labels(r.labels, f.label_selector)]
        return cri.ListPodSandboxStatsResponse(stats=[self._sandbox_stats(r) for r in records])

    def StreamPodSandboxStats(self, request: cri.StreamPodSandboxStatsRequest,
                              context: Any) -> Iterator[cri.StreamPodSandboxStatsResponse]:
        return list_streams.stream(
            context, lambda: self.ListPodSandboxStats(cri.ListPodSandboxStatsRequest(filter=request.filter), context).stats,
            lambda batch: cri.StreamPodSandboxStatsResponse(pod_sandbox_stats=batch), *self.stream_chunk)

    def ListMetricDescriptors(self, request: cri.ListMetricDescriptorsRequest,
                              context: Any) -> cri.ListMetricDescriptorsResponse:
        return cri.ListMetricDescriptorsResponse(descriptors=metrics.descriptors())

    def ListPodSandboxMetrics(self, request: cri.ListPodSandboxMetricsRequest,
                              context: Any) -> cri.ListPodSandboxMetricsResponse:
        return cri.ListPodSandboxMetricsResponse(pod_metrics=[
            self._pod_sandbox_metrics(r) for r in self.sandboxes.list() if r.state == READY])

    def StreamPodSandboxMetrics(self, request: cri.StreamPodSandboxMetricsRequest,
                                context: Any) -> Iterator[cri.StreamPodSandboxMetricsResponse]:
        return list_streams.stream(
            context, lambda: self.ListPodSandboxMetrics(cri.ListPodSandboxMetricsRequest(), context).pod_metrics,
            lambda batch: cri.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=batch), *self.stream_chunk)

    def _pod_sandbox_metrics(self, record: SandboxRecord) -> cri.PodSandboxMetrics:
        """The pod's own metrics (its cgroup, its network) and those of its containers that have
        a cgroup (created or running), as cadvisor sees live cgroups only."""
        pod = None
        manager = _pod_cgroup(record)
        stats = _read_or_none(manager.stats) if manager is not None else None
        processes = _read_or_none(manager.process_stats) if manager is not None else None
        if stats is not None and processes is not None:
            pod = metrics.Sample(
                labels=metrics.Labels(id=record.id, name=metrics.full_name(
                    metrics.POD, record.name, record.namespace, record.uid, record.attempt), image=""),
                now_ns=time.time_ns(), start_time_ns=record.created_at, cgroup=stats,
                processes=processes, interfaces=_interfaces(record),
                device_names=metrics.device_names(stats))
        containers = []
        for container in self.containers.list(record.id):
            sample = self.containers.stats(container, processes=True)
            if sample.cgroup is None:
                continue
            containers.append((container.id, metrics.Sample(
                labels=metrics.Labels(id=container.id, name=metrics.full_name(
                    container.name, record.name, record.namespace, record.uid, container.attempt),
                    image=container.image),
                now_ns=sample.timestamp, start_time_ns=container.started_at or container.created_at,
                cgroup=sample.cgroup, processes=sample.processes,
                filesystem=metrics.filesystem(self.containers.root, sample.writable_bytes),
                device_names=metrics.device_names(sample.cgroup))))
        return metrics.pod_sandbox_metrics(record.id, pod, containers)

    def UpdateContainerResources(self, request: cri.UpdateContainerResourcesRequest,
                                 context: Any) -> cri.UpdateContainerResourcesResponse:
        resources = oci_spec.build_resources(request.linux)
        resources.devices = None  # device rules stay as the container was made
        self.containers.update_resources(_required(request.container_id, "container_id"), resources)
        return cri.UpdateContainerResourcesResponse()

    def ReopenContainerLog(self, request: cri.ReopenContainerLogRequest, context: Any) -> cri.ReopenContainerLogResponse:
        self.containers.reopen_log(_required(request.container_id, "container_id"))
        return cri.ReopenContainerLogResponse()
