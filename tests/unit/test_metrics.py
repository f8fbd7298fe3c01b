"""CRI metrics built from fake samples: names, label keys against values, units."""
from __future__ import annotations

import os
from pathlib import Path

from pycri.api.cri import api_pb2 as cri
from pycri.cgroups import IoDevice, ProcessStats, Stats
from pycri.criserver import metrics
from pycri.criserver.metrics import BASE_LABELS, Filesystem, Labels, Sample
from pycri.sandbox.netstats import InterfaceStats

NOW = 1_700_000_000_123_456_789

# What critest v1.37's "runtime should support metrics operations" requires of every runtime
# (its expected names without the ones it lists as not implemented by all runtimes yet).
REQUIRED = """
container_blkio_device_usage_total container_cpu_cfs_periods_total container_cpu_cfs_throttled_periods_total
container_cpu_cfs_throttled_seconds_total container_cpu_system_seconds_total container_cpu_usage_seconds_total
container_cpu_user_seconds_total container_file_descriptors container_fs_inodes_free container_fs_inodes_total
container_fs_limit_bytes container_fs_reads_bytes_total container_fs_reads_total container_fs_usage_bytes
container_fs_writes_bytes_total container_fs_writes_total container_last_seen container_memory_cache
container_memory_failcnt container_memory_failures_total container_memory_kernel_usage container_memory_mapped_file
container_memory_max_usage_bytes container_memory_rss container_memory_swap container_memory_usage_bytes
container_memory_working_set_bytes container_network_receive_bytes_total container_network_receive_errors_total
container_network_receive_packets_dropped_total container_network_receive_packets_total
container_network_transmit_bytes_total container_network_transmit_errors_total
container_network_transmit_packets_dropped_total container_network_transmit_packets_total
container_oom_events_total container_processes container_sockets container_spec_cpu_period container_spec_cpu_shares
container_spec_memory_limit_bytes container_spec_memory_swap_limit_bytes container_start_time_seconds
container_threads container_threads_max
""".split()


def cgroup_stats(**overrides: object) -> Stats:
    values: dict[str, object] = dict(
        cpu_usage_ns=2_999_999_999, cpu_user_ns=2_000_000_000, cpu_system_ns=999_999_999, cpu_periods=10,
        cpu_throttled_periods=4, cpu_throttled_ns=1_500_000_000, memory_usage=10 << 20, memory_working_set=8 << 20,
        memory_limit=64 << 20, memory_max_usage=12 << 20, memory_cache=2 << 20, memory_rss=6 << 20,
        memory_mapped_file=1 << 20, memory_swap=0, memory_kernel=1 << 19, memory_failcnt=1, pgfault=100,
        pgmajfault=2, hierarchy_pgfault=150, hierarchy_pgmajfault=3, oom_kills=0, pids_current=5, pids_limit=1024,
        cpu_shares=1024, cpu_period=100_000, cpu_quota=20_000, memory_reservation=0, memory_swap_limit=64 << 20,
        io=[IoDevice(8, 0, read_bytes=4096, write_bytes=8192, reads=1, writes=2)],
        pressure={"cpu": (3_500_000, 1_000_000)},
    )
    values.update(overrides)
    return Stats(**values)  # type: ignore[arg-type]


def container_sample(**overrides: object) -> Sample:
    values: dict[str, object] = dict(
        labels=Labels("c1", "k8s_app_web_ns_uid1_0", "busybox"), now_ns=NOW, start_time_ns=NOW - 60 * 10**9,
        cgroup=cgroup_stats(), processes=ProcessStats(processes=2, file_descriptors=9, sockets=1),
        filesystem=Filesystem("/dev/vda1", 8 << 20, 100 << 30, 1000, 600), device_names={(8, 0): "/dev/sda"},
    )
    values.update(overrides)
    return Sample(**values)  # type: ignore[arg-type]


def pod_sample() -> Sample:
    eth0 = InterfaceStats("eth0", 1000, 10, 1, 2, 2000, 20, 3, 4)
    return Sample(Labels("p1", "k8s_POD_web_ns_uid1_0", ""), NOW, NOW - 120 * 10**9, cgroup_stats(io=[]),
                  ProcessStats(processes=2), interfaces=[eth0])


def by_name(found: list[cri.Metric]) -> dict[str, list[cri.Metric]]:
    result: dict[str, list[cri.Metric]] = {}
    for metric in found:
        result.setdefault(metric.name, []).append(metric)
    return result


def value(found: list[cri.Metric], name: str, *labels: str) -> int:
    [metric] = [m for m in by_name(found)[name] if list(m.label_values[len(BASE_LABELS):]) == list(labels)]
    return metric.value.value


def test_descriptors_name_every_metric_once_with_help_and_cri_os_labels() -> None:
    descriptors = metrics.descriptors()
    names = [d.name for d in descriptors]
    assert len(names) == len(set(names))
    assert set(REQUIRED) <= set(names)
    for d in descriptors:
        # kubelet adds namespace, pod and container: the runtime must not send them too
        assert d.help and list(d.label_keys[:3]) == ["id", "name", "image"]
        assert not {"namespace", "pod", "container"} & set(d.label_keys)
    keys = {d.name: list(d.label_keys[3:]) for d in descriptors}
    assert keys["container_cpu_usage_seconds_total"] == ["cpu"]
    assert keys["container_memory_failures_total"] == ["failure_type", "scope"]
    assert keys["container_network_receive_bytes_total"] == ["interface"]
    assert keys["container_blkio_device_usage_total"] == ["device", "major", "minor", "operation"]


def test_every_metric_has_the_label_values_its_descriptor_has_keys() -> None:
    keys = {d.name: len(d.label_keys) for d in metrics.descriptors()}
    built = metrics.pod_sandbox_metrics("p1", pod_sample(), [("c1", container_sample())])
    found = list(built.metrics) + [m for c in built.container_metrics for m in c.metrics]
    assert found
    for metric in found:
        assert len(metric.label_values) == keys[metric.name], metric.name
        assert metric.timestamp == 0  # gathered live
    # what critest checks: every required name shows up in the pod's or its containers' metrics
    assert set(REQUIRED) <= {m.name for m in found}


def test_container_values_in_cadvisors_units() -> None:
    found = metrics.metrics(container_sample())
    assert list(found[0].label_values[:3]) == ["c1", "k8s_app_web_ns_uid1_0", "busybox"]
    assert value(found, "container_cpu_usage_seconds_total", "total") == 2  # whole seconds, as the CRI carries them
    assert value(found, "container_cpu_user_seconds_total") == 2
    assert value(found, "container_cpu_system_seconds_total") == 0
    assert value(found, "container_cpu_cfs_throttled_seconds_total") == 1
    assert value(found, "container_memory_working_set_bytes") == 8 << 20
    assert value(found, "container_memory_failures_total", "pgfault", "hierarchy") == 150
    assert value(found, "container_memory_failures_total", "pgmajfault", "container") == 2
    assert value(found, "container_threads") == 5 and value(found, "container_processes") == 2
    assert value(found, "container_file_descriptors") == 9 and value(found, "container_sockets") == 1
    assert value(found, "container_spec_cpu_quota") == 20_000
    assert value(found, "container_start_time_seconds") == NOW // 10**9 - 60
    assert value(found, "container_last_seen") == NOW // 10**9
    assert value(found, "container_fs_usage_bytes", "/dev/vda1") == 8 << 20
    assert value(found, "container_fs_inodes_free", "/dev/vda1") == 600
    assert value(found, "container_fs_reads_bytes_total", "/dev/sda") == 4096
    assert value(found, "container_fs_writes_total", "/dev/sda") == 2
    assert value(found, "container_blkio_device_usage_total", "/dev/sda", "8", "0", "Write") == 8192
    assert value(found, "container_pressure_cpu_waiting_seconds_total") == 3
    assert value(found, "container_pressure_cpu_stalled_seconds_total") == 1
    types = {m.name: m.metric_type for m in found}
    assert types["container_cpu_usage_seconds_total"] == cri.MetricType.COUNTER
    assert types["container_memory_usage_bytes"] == cri.MetricType.GAUGE
    assert "container_network_receive_bytes_total" not in types  # the network is the pod's


def test_what_a_sample_lacks_is_left_out_not_reported_as_zero() -> None:
    names = {m.name for m in metrics.metrics(container_sample(
        cgroup=cgroup_stats(cpu_quota=0, io=[], pressure={}), processes=None, filesystem=None))}
    assert "container_spec_cpu_quota" not in names  # no quota: none, as cadvisor
    assert not {"container_file_descriptors", "container_sockets", "container_processes"} & names
    assert not {n for n in names if n.startswith(("container_fs_", "container_blkio_", "container_pressure_"))}
    assert "container_cpu_usage_seconds_total" in names and "container_threads" in names


def test_pod_metrics_carry_its_network_and_its_containers() -> None:
    built = metrics.pod_sandbox_metrics("p1", pod_sample(), [("c1", container_sample())])
    assert built.pod_sandbox_id == "p1"
    assert [c.container_id for c in built.container_metrics] == ["c1"]
    pod = list(built.metrics)
    assert list(pod[0].label_values[:3]) == ["p1", "k8s_POD_web_ns_uid1_0", ""]
    assert value(pod, "container_network_receive_bytes_total", "eth0") == 1000
    assert value(pod, "container_network_transmit_packets_dropped_total", "eth0") == 4
    assert value(pod, "container_network_receive_errors_total", "eth0") == 1
    without_cgroup = metrics.pod_sandbox_metrics("p1", None, [])
    assert list(without_cgroup.metrics) == [] and list(without_cgroup.container_metrics) == []


def test_full_name_is_kubelets_docker_era_name() -> None:
    assert metrics.full_name(metrics.POD, "web", "ns", "uid1", 2) == "k8s_POD_web_ns_uid1_2"


def test_mount_source_and_block_device_names(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("22 1 0:21 / /proc rw shared:5 - proc proc rw\n"
                         "29 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n")
    assert metrics.mount_source(os.makedev(253, 1), str(mountinfo)) == "/dev/vda1"
    assert metrics.mount_source(os.makedev(7, 7), str(mountinfo)) == "7:7"
    (tmp_path / "dev" / "block" / "8:0").mkdir(parents=True)
    (tmp_path / "dev" / "block" / "8:0" / "uevent").write_text("MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\n")
    assert metrics.block_device_name(8, 0, str(tmp_path)) == "/dev/sda"
    assert metrics.block_device_name(8, 16, str(tmp_path)) == "8:16"
