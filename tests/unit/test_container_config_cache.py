"""ContainerService keeps each container's config.json parsed (and its JSON text) from create,
update and the first read after a restart: ContainerStatus (verbose too) answers exactly what
a read of the file gives, and nothing is kept of a removed container."""
from __future__ import annotations

import json
from pathlib import Path

from pycri.api.cri import api_pb2 as cri
from pycri.common.errors import RuntimeFailed
from pycri.containers.oci_config import Spec
from pycri.containers.service import ContainerService
from tests.unit.test_cri_service import CriUnderTest, new_test_cri_service


def verbose_info_from_the_file(t: CriUnderTest, container_id: str) -> str:
    """The verbose info as ContainerStatus made it by reading config.json each time."""
    record = t.container_service.get(container_id)
    bundle = t.container_service.paths(record).bundle
    spec = Spec.from_dict(json.loads((bundle / "config.json").read_text()))
    return json.dumps({
        "pid": record.pid if record.state == "running" else 0, "sandboxID": record.pod_id,
        "runtimeHandler": record.handler, "state": record.state, "bundle": str(bundle),
        "runtimeSpec": spec.to_dict(),
    })


def verbose_status(t: CriUnderTest, container_id: str) -> cri.ContainerStatusResponse:
    return t.call("ContainerStatus", cri.ContainerStatusRequest(container_id=container_id, verbose=True))


def test_verbose_status_is_what_the_file_gives(tmp_path: Path) -> None:
    t = new_test_cri_service(tmp_path)
    container_id = t.create(t.run_pod())
    assert verbose_status(t, container_id).info["info"] == verbose_info_from_the_file(t, container_id)
    t.start(container_id)
    reply = verbose_status(t, container_id)
    assert reply.info["info"] == verbose_info_from_the_file(t, container_id)
    assert json.loads(reply.info["info"])["state"] == "running"


def test_a_restarted_service_reads_the_file_once(tmp_path: Path) -> None:
    t = new_test_cri_service(tmp_path)
    container_id = t.create(t.run_pod())
    before = t.call("ContainerStatus", cri.ContainerStatusRequest(container_id=container_id))
    old = t.container_service
    t.servicer.containers = ContainerService(old.db, old.root, old.exits, old.handlers, old.default_handler, old.syscall)
    assert t.call("ContainerStatus", cri.ContainerStatusRequest(container_id=container_id)) == before
    assert verbose_status(t, container_id).info["info"] == verbose_info_from_the_file(t, container_id)
    config = t.container_service.paths(t.container_service.get(container_id)).bundle / "config.json"
    config.unlink()  # read once: the copy answers
    assert t.call("ContainerStatus", cri.ContainerStatusRequest(container_id=container_id)) == before


def test_an_update_is_what_status_reports_and_what_the_file_holds(tmp_path: Path) -> None:
    t = new_test_cri_service(tmp_path)
    container_id = t.create(t.run_pod())
    t.start(container_id)
    assert t.status(container_id).resources.linux.memory_limit_in_bytes == 0
    t.call("UpdateContainerResources", cri.UpdateContainerResourcesRequest(
        container_id=container_id, linux=cri.LinuxContainerResources(memory_limit_in_bytes=64 << 20)))
    assert t.status(container_id).resources.linux.memory_limit_in_bytes == 64 << 20
    info = verbose_status(t, container_id).info["info"]
    assert info == verbose_info_from_the_file(t, container_id)
    assert json.loads(info)["runtimeSpec"]["linux"]["resources"]["memory"]["limit"] == 64 << 20


def test_nothing_is_kept_of_a_removed_or_failed_container(tmp_path: Path) -> None:
    t = new_test_cri_service(tmp_path)
    pod_id = t.run_pod()
    container_id = t.create(pod_id)
    assert container_id in t.container_service._configs
    t.call("RemoveContainer", cri.RemoveContainerRequest(container_id=container_id))
    assert t.container_service._configs == {}
    t.handler.failures["create"] = RuntimeFailed("runc create: exec format error")
    t.fails("CreateContainer", cri.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=cri.ContainerConfig(metadata=cri.ContainerMetadata(name="x"),
                                                          image=cri.ImageSpec(image="busybox"))))
    assert len(t.handler.called("create")) == 2  # (its config.json was written)
    assert t.container_service._configs == {}


def test_status_of_a_container_without_its_file_has_no_spec(tmp_path: Path) -> None:
    t = new_test_cri_service(tmp_path)
    container_id = t.create(t.run_pod())
    old = t.container_service
    t.servicer.containers = ContainerService(old.db, old.root, old.exits, old.handlers, old.default_handler, old.syscall)
    (old.paths(old.get(container_id)).bundle / "config.json").unlink()
    info = json.loads(verbose_status(t, container_id).info["info"])
    assert info["runtimeSpec"] is None and info["sandboxID"]
