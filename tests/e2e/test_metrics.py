"""CRI metrics (ListMetricDescriptors, ListPodSandboxMetrics) of a real pod, as kubelet reads them."""
from __future__ import annotations

import socket
import time
from typing import Any

from pycri.api.cri import api_pb2 as cri
from tests.e2e.harness import Pycri
from tests.e2e.test_pods import wait_for

Values = dict[tuple[str, ...], int]  # (name, its own label values...) -> value


def pod_metrics(stub: Any, pod_id: str) -> cri.PodSandboxMetrics | None:
    found = [m for m in stub.ListPodSandboxMetrics(cri.ListPodSandboxMetricsRequest()).pod_metrics
             if m.pod_sandbox_id == pod_id]
    return found[0] if found else None


def values(metrics: Any) -> Values:
    return {(m.name, *m.label_values[3:]): m.value.value for m in metrics}


def send_to_pod(ip: str, port: int, payload: bytes) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection((ip, port), timeout=5) as conn:
                conn.sendall(payload)
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {ip}:{port}"
            time.sleep(0.1)


def test_pod_sandbox_metrics_report_real_usage(pycri: Pycri) -> None:
    pod = pycri.run_pod("metrics")
    busy = pycri.run(pod, "metrics", "busy", ["sh", "-c", "dd if=/dev/zero of=/tmp/fill bs=1M count=4; "
                                                           "nc -l -p 8080 >/dev/null & while true; do :; done"])
    stub = pycri.runtime_stub()
    descriptors = {d.name: list(d.label_keys)
                   for d in stub.ListMetricDescriptors(cri.ListMetricDescriptorsRequest()).descriptors}
    assert descriptors["container_cpu_usage_seconds_total"] == ["id", "name", "image", "cpu"]

    def container(sample: cri.PodSandboxMetrics) -> Values:
        [found] = [c for c in sample.container_metrics if c.container_id == busy]
        return values(found.metrics)

    def started(values: Values) -> bool:
        """dd has written its file and nc listens: until then sh and dd alone also make two processes."""
        return values.get(("container_processes",), 0) >= 2 and values.get(("container_sockets",), 0) >= 1

    wait_for(lambda: started(container(pod_metrics(stub, pod))))
    first = pod_metrics(stub, pod)
    assert first is not None
    for metric in [*first.metrics, *(m for c in first.container_metrics for m in c.metrics)]:
        assert len(metric.label_values) == len(descriptors[metric.name]), metric.name
    ctr = container(first)
    [labelled] = [m for m in first.container_metrics[0].metrics if m.name == "container_memory_working_set_bytes"]
    assert list(labelled.label_values) == [busy, "k8s_busy_metrics_pycri-e2e_uid-metrics_0", "busybox"]
    assert ctr[("container_memory_working_set_bytes",)] > 0
    assert ctr[("container_memory_usage_bytes",)] >= ctr[("container_memory_working_set_bytes",)]
    assert ctr[("container_sockets",)] >= 1 and ctr[("container_file_descriptors",)] >= ctr[("container_sockets",)]
    assert ctr[("container_threads",)] >= 2
    [fs_usage] = [v for k, v in ctr.items() if k[0] == "container_fs_usage_bytes"]
    assert fs_usage >= 4 << 20  # the file dd wrote to the writable layer
    assert abs(ctr[("container_last_seen",)] - time.time()) < 30
    assert ctr[("container_start_time_seconds",)] <= ctr[("container_last_seen",)]
    own = values(first.metrics)
    assert list(first.metrics[0].label_values) == [pod, "k8s_POD_metrics_pycri-e2e_uid-metrics_0", "", "total"]
    assert own[("container_memory_usage_bytes",)] >= ctr[("container_memory_usage_bytes",)]  # the pod holds it

    ip = pycri.crictl_json("inspectp", pod)["status"]["network"]["ip"]
    send_to_pod(ip, 8080, b"x" * (256 << 10))

    def grown() -> bool:
        now = pod_metrics(stub, pod)
        assert now is not None
        return (container(now)[("container_cpu_usage_seconds_total", "total")]
                > ctr[("container_cpu_usage_seconds_total", "total")]
                and values(now.metrics)[("container_network_receive_bytes_total", "eth0")]
                >= own[("container_network_receive_bytes_total", "eth0")] + (256 << 10))

    wait_for(grown, timeout=30)  # a busy loop burns whole seconds of CPU; the pod's eth0 got the bytes
    stats = stub.PodSandboxStats(cri.PodSandboxStatsRequest(pod_sandbox_id=pod)).stats
    assert stats.linux.network.default_interface.name == "eth0"
    assert stats.linux.network.default_interface.rx_bytes.value >= 256 << 10

    pycri.crictl("stopp", pod)
    assert pod_metrics(stub, pod) is None  # a pod that is not ready has no metrics
