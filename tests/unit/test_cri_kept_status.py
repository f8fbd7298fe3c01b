"""ContainerStatus (not verbose) kept as its encoding while the container's state and spec stay:
the same reply again, a new one once it starts, exits or has its resources updated, and none
kept after its removal."""
from __future__ import annotations

from pycri.api.cri import api_pb2 as cri
from pycri.criserver.list_replies import Encoded
from tests.unit.test_cri_service import CriUnderTest, t  # noqa: F401 (t is a fixture)


def _status(t: CriUnderTest, container_id: str, verbose: bool = False) -> cri.ContainerStatusResponse:
    return t.servicer.ContainerStatus(cri.ContainerStatusRequest(container_id=container_id, verbose=verbose), None)


def test_a_status_is_kept_until_the_state_or_the_spec_changes(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    container_id = t.create(pod_id, "main")
    first = _status(t, container_id)
    assert isinstance(first, Encoded) and _status(t, container_id) is first
    assert first.status.state == cri.CONTAINER_CREATED and first.status.id == container_id
    t.start(container_id)
    running = _status(t, container_id)
    assert running is not first and running.status.state == cri.CONTAINER_RUNNING and running.status.started_at
    update = cri.LinuxContainerResources(cpu_shares=1024, memory_limit_in_bytes=64 << 20)
    t.call("UpdateContainerResources", cri.UpdateContainerResourcesRequest(container_id=container_id, linux=update))
    updated = _status(t, container_id)
    assert updated is not running and updated.status.resources.linux.memory_limit_in_bytes == 64 << 20
    verbose = _status(t, container_id, verbose=True)
    assert not isinstance(verbose, Encoded) and "runtimeSpec" in verbose.info["info"]
    assert verbose.status == updated.status
    t.call("StopContainer", cri.StopContainerRequest(container_id=container_id, timeout=0))
    exited = _status(t, container_id)
    assert exited.status.state == cri.CONTAINER_EXITED and exited.status.finished_at
    t.call("RemoveContainer", cri.RemoveContainerRequest(container_id=container_id))
    assert container_id not in t.servicer.status_replies
