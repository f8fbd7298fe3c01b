"""Stats, resource updates and log reopening, as kubelet uses them."""
from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from pycri.api.cri import api_pb2 as cri
from tests.e2e.harness import Pycri
from tests.e2e.test_pods import cgroup_dir, inspect, pid_of, wait_for


def test_container_and_pod_stats(pycri: Pycri) -> None:
    pod = pycri.run_pod("stats")
    busy = pycri.run(pod, "stats", "busy", ["sh", "-c", "dd if=/dev/zero of=/tmp/fill bs=1M count=8; "
                                                        "while true; do :; done"])
    stub = pycri.runtime_stub()
    wait_for(lambda: stub.ContainerStats(cri.ContainerStatsRequest(container_id=busy)).stats.writable_layer
             .used_bytes.value >= 8 << 20)
    first = stub.ContainerStats(cri.ContainerStatsRequest(container_id=busy)).stats
    time.sleep(0.5)
    second = stub.ContainerStats(cri.ContainerStatsRequest(container_id=busy)).stats
    assert second.attributes.id == busy and second.attributes.metadata.name == "busy"
    assert second.cpu.usage_core_nano_seconds.value > first.cpu.usage_core_nano_seconds.value > 0
    assert second.cpu.usage_nano_cores.value > 100_000_000  # a busy loop: a good part of a core
    assert second.memory.working_set_bytes.value > 0
    listed = stub.ListContainerStats(cri.ListContainerStatsRequest(
        filter=cri.ContainerStatsFilter(pod_sandbox_id=pod))).stats
    assert [s.attributes.id for s in listed] == [busy]
    pod_stats = stub.PodSandboxStats(cri.PodSandboxStatsRequest(pod_sandbox_id=pod)).stats
    assert pod_stats.attributes.metadata.name == "stats"
    assert pod_stats.linux.cpu.usage_core_nano_seconds.value >= second.cpu.usage_core_nano_seconds.value
    assert [c.attributes.id for c in pod_stats.linux.containers] == [busy]
    assert len(stub.ListPodSandboxStats(cri.ListPodSandboxStatsRequest()).stats) == 1
    assert "busy" in pycri.crictl("stats").stdout


def test_update_container_resources(pycri: Pycri) -> None:
    pod = pycri.run_pod("update")
    ctr = pycri.run(pod, "update", "main", ["sleep", "1000"],
                    linux={"resources": {"memory_limit_in_bytes": 64 << 20}})
    pycri.crictl("update", "--memory", str(128 << 20), "--cpu-quota", "20000", "--cpu-period", "100000", ctr)
    pid = pid_of(pycri, ctr)
    assert (cgroup_dir(pid, "memory") / "memory.limit_in_bytes").read_text().strip() == str(128 << 20)
    assert (cgroup_dir(pid, "cpu") / "cpu.cfs_quota_us").read_text().strip() == "20000"


def test_reopen_container_log(pycri: Pycri) -> None:
    pod = pycri.run_pod("rotate")
    ctr = pycri.run(pod, "rotate", "main", ["sh", "-c", "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.1; done"])
    log = Path(inspect(pycri, ctr)["status"]["logPath"])
    wait_for(lambda: log.exists() and "line2" in log.read_text())
    log.rename(log.with_suffix(".1"))  # what kubelet's rotation does
    stub = pycri.runtime_stub()
    stub.ReopenContainerLog(cri.ReopenContainerLogRequest(container_id=ctr))
    wait_for(lambda: log.exists() and "stdout F line" in log.read_text())
    pycri.crictl("stop", "--timeout", "0", ctr)
    with pytest.raises(grpc.RpcError) as error:
        stub.ReopenContainerLog(cri.ReopenContainerLogRequest(container_id=ctr))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
