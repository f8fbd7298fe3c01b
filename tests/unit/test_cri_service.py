"""The CRI RuntimeService calls against real services whose outside world is faked, as
containerd's internal/cri/server/service_test.go does with newTestCRIService(): a real
RuntimeServicer over real SandboxService, ContainerService and ImageService objects, with the
runtime handler (containers/fake.py), the syscalls (kernel/fake.py), the pod network, pinned
namespaces, infra process and pod cgroup (sandbox/fake.py) faked, an image inserted into a
temporary store, and every directory a temporary one. Each call goes through the interceptor
that maps errors to gRPC status codes (criserver/errors.py), so the tests assert the codes a
client gets. No root, no runtime, no mounts, no network."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.common.errors import RuntimeFailed, Unavailable
from pycri.containers.fake import FakeHandler
from pycri.containers.service import ContainerService
from pycri.criserver.errors import CallInterceptor
from pycri.criserver.runtime_servicer import RuntimeServicer
from pycri.criserver.streaming_adapter import RuntimeStreams
from pycri.images.config import RegistryConfig
from pycri.images.service import ImageService
from pycri.images.records import ImageRecord
from pycri.kernel.fake import RecordingSyscall
from pycri.sandbox.fake import FakeCgroups, FakeInfra, FakeNetwork, FakePins
from pycri.sandbox.service import SandboxService
from pycri.store.db import Database
from pycri.streaming import Server as StreamingServer

IMAGE = "docker.io/library/busybox:latest"
CREATED, RUNNING, EXITED = (cri.ContainerState.CONTAINER_CREATED, cri.ContainerState.CONTAINER_RUNNING,
                            cri.ContainerState.CONTAINER_EXITED)
READY, NOTREADY = cri.PodSandboxState.SANDBOX_READY, cri.PodSandboxState.SANDBOX_NOTREADY


class Aborted(Exception):
    """What grpc's context.abort raises; here it carries the status the client would get."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class FakeContext:
    """The servicer context of one call: it records the status an abort sets, and raises."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted(code, details)


@dataclass
class CriUnderTest:
    """A RuntimeServicer and the fakes around it."""

    servicer: RuntimeServicer
    handler: FakeHandler
    syscall: RecordingSyscall
    network: FakeNetwork
    pins: FakePins
    infra: FakeInfra
    cgroups: FakeCgroups
    image: ImageRecord
    root: Path

    def call(self, method: str, request: Any) -> Any:
        """Call `method` as gRPC would, through the interceptor; an error status raises Aborted."""
        inner = grpc.unary_unary_rpc_method_handler(getattr(self.servicer, method))
        details = SimpleNamespace(method=f"/runtime.v1.RuntimeService/{method}")
        handler = CallInterceptor().intercept_service(lambda _: inner, details)
        return handler.unary_unary(request, FakeContext())

    def fails(self, method: str, request: Any) -> grpc.StatusCode:
        """The status code `method` fails with."""
        with pytest.raises(Aborted) as failed:
            self.call(method, request)
        return failed.value.code

    # -- what most tests start from ---------------------------------------------

    def run_pod(self, name: str = "web", **config: Any) -> str:
        return self.call("RunPodSandbox", cri.RunPodSandboxRequest(config=pod_config(self.root, name, **config))
                         ).pod_sandbox_id

    def create(self, pod_id: str, name: str = "main", image: str = IMAGE) -> str:
        request = cri.CreateContainerRequest(
            pod_sandbox_id=pod_id, sandbox_config=pod_config(self.root),
            config=cri.ContainerConfig(metadata=cri.ContainerMetadata(name=name), image=cri.ImageSpec(image=image),
                                       command=["sleep", "1d"], log_path=f"{name}.log", labels={"tier": "front"}),
        )
        return self.call("CreateContainer", request).container_id

    def start(self, container_id: str) -> None:
        self.call("StartContainer", cri.StartContainerRequest(container_id=container_id))

    def pod_status(self, pod_id: str) -> cri.PodSandboxStatus:
        return self.call("PodSandboxStatus", cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status

    def status(self, container_id: str) -> cri.ContainerStatus:
        return self.call("ContainerStatus", cri.ContainerStatusRequest(container_id=container_id)).status

    def containers(self, **filters: Any) -> list[cri.Container]:
        request = cri.ListContainersRequest(filter=cri.ContainerFilter(**filters))
        return list(self.call("ListContainers", request).containers)

    def pods(self) -> list[cri.PodSandbox]:
        return list(self.call("ListPodSandbox", cri.ListPodSandboxRequest()).items)

    @property
    def sandboxes(self) -> SandboxService:
        return self.servicer.sandboxes

    @property
    def container_service(self) -> ContainerService:
        return self.servicer.containers


def new_test_cri_service(tmp_path: Path) -> CriUnderTest:
    """A RuntimeServicer as criserver/server.py makes one, with fakes for everything outside
    pycri and an image (busybox, one layer holding /etc/passwd) already in the store."""
    db = Database(tmp_path / "pycri.db")
    handler, syscall = FakeHandler(name="fake"), RecordingSyscall()
    network, pins, infra, cgroups = FakeNetwork(), FakePins(), FakeInfra(), FakeCgroups()
    images = ImageService(db, tmp_path / "images", RegistryConfig())
    containers = ContainerService(db, tmp_path / "containers", tmp_path / "state" / "exits", {"fake": handler},
                                  "fake", syscall)
    sandboxes = SandboxService(db, tmp_path / "sandboxes", tmp_path / "state", network,
                               pins=pins, infra=infra, cgroups=cgroups)
    streams = StreamingServer(RuntimeStreams(containers, sandboxes))  # never started: no port is bound
    servicer = RuntimeServicer("cgroupfs", "{}", lambda: [], sandboxes, containers, images, streams)
    return CriUnderTest(servicer, handler, syscall, network, pins, infra, cgroups, _add_image(images), tmp_path)


def _add_image(images: ImageService) -> ImageRecord:
    """An image record and its one unpacked layer, as a pull leaves them."""
    layer = images.layers.diff("sha256:" + "1" * 64)
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    config = {"config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "StopSignal": "SIGTERM"},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]}}
    image_id = "sha256:" + hashlib.sha256(json.dumps(config).encode()).hexdigest()
    record = ImageRecord(id=image_id, manifest_digest="sha256:" + "2" * 64, size=1024, config=config,
                         pulled_at=time.time_ns(), repo_tags=[IMAGE],
                         repo_digests=["docker.io/library/busybox@sha256:" + "2" * 64],
                         diff_ids=["sha256:" + "1" * 64])
    with images.db.transaction() as tx:
        images.table.add(tx, record, {record.diff_ids[0]: (4096, 3)}, [image_id, record.manifest_digest])
    return record


def pod_config(root: Path, name: str = "web", *, uid: str = "", cgroup_parent: str = "",
               pid: int = cri.NamespaceMode.CONTAINER) -> cri.PodSandboxConfig:
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, namespace="default", uid=uid or f"uid-{name}", attempt=0),
        hostname=name, log_directory=str(root / "logs" / name), labels={"app": name},
        port_mappings=[cri.PortMapping(protocol=cri.Protocol.TCP, container_port=80, host_port=8080)],
        linux=cri.LinuxPodSandboxConfig(cgroup_parent=cgroup_parent, security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=cri.NamespaceOption(pid=pid))),
    )


@pytest.fixture
def t(tmp_path: Path) -> CriUnderTest:
    return new_test_cri_service(tmp_path)


def _nothing_left_of_pod(t: CriUnderTest, pod_id: str) -> None:
    assert t.sandboxes.table.where() == []  # no row, not even a `creating` one
    assert t.pins.pinned == set() and not (t.sandboxes.ns_root / pod_id).exists()
    assert t.cgroups.existing == set() and t.infra.running == {}
    assert not (t.sandboxes.root / pod_id).exists()


# -- RunPodSandbox ---------------------------------------------------------------

def test_run_pod_sandbox(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    ns = t.sandboxes.ns_root / pod_id
    assert t.pins.called("pin") == [(["network", "ipc", "uts"], ns, "web", None)]
    assert t.pins.pinned == {ns / "net", ns / "ipc", ns / "uts"}
    ((setup_id, netns, ports),) = t.network.called("setup")
    assert (setup_id, netns) == (pod_id, ns / "net") and [(p.container_port, p.host_port) for p in ports] == [(80, 8080)]
    assert t.cgroups.existing == {(f"/pycri/{pod_id}", pod_id)}  # no parent from kubelet: pycri's own
    assert t.infra.calls == []  # no shared PID namespace
    assert (t.sandboxes.root / pod_id / "hostname").read_text() == "web\n"
    status = t.pod_status(pod_id)
    assert status.state == READY and status.network.ip == "10.88.0.2"
    assert (status.metadata.name, status.metadata.namespace, status.runtime_handler) == ("web", "default", "fake")
    assert status.linux.namespaces.options.pid == cri.NamespaceMode.CONTAINER
    assert [(p.id, p.state, dict(p.labels)) for p in t.pods()] == [(pod_id, READY, {"app": "web"})]


def test_run_pod_sandbox_under_kubelets_cgroup_makes_no_cgroup(t: CriUnderTest) -> None:
    pod_id = t.run_pod(cgroup_parent="/kubepods/besteffort/pod1")
    assert t.cgroups.calls == []
    t.call("RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert t.cgroups.calls == []  # kubelet's to remove


def test_run_pod_sandbox_sharing_its_pid_namespace_starts_the_infra_process(t: CriUnderTest) -> None:
    pod_id = t.run_pod(pid=cri.NamespaceMode.POD)
    ns = t.sandboxes.ns_root / pod_id
    assert t.infra.called("start") == [({"network": str(ns / "net"), "ipc": str(ns / "ipc"),
                                         "uts": str(ns / "uts")}, None, pod_id)]
    assert t.pod_status(pod_id).linux.namespaces.options.pid == cri.NamespaceMode.POD
    infra = t.infra.running[pod_id]
    t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    assert t.infra.called("stop") == [(infra,)] and t.infra.running == {}


@pytest.mark.parametrize("metadata", [
    cri.PodSandboxMetadata(namespace="default", uid="u1"),
    cri.PodSandboxMetadata(name="web", uid="u1"),
    cri.PodSandboxMetadata(name="web", namespace="default"),
])
def test_run_pod_sandbox_without_full_metadata_is_invalid(t: CriUnderTest, metadata: cri.PodSandboxMetadata) -> None:
    config = pod_config(t.root)
    config.metadata.CopyFrom(metadata)
    assert t.fails("RunPodSandbox", cri.RunPodSandboxRequest(config=config)) == grpc.StatusCode.INVALID_ARGUMENT
    assert t.network.calls == [] and t.pins.calls == [] and t.cgroups.calls == []
    assert t.sandboxes.table.where() == []


def test_run_pod_sandbox_with_an_unknown_handler_is_invalid(t: CriUnderTest) -> None:
    request = cri.RunPodSandboxRequest(config=pod_config(t.root), runtime_handler="kata")
    assert t.fails("RunPodSandbox", request) == grpc.StatusCode.INVALID_ARGUMENT
    assert t.pins.calls == [] and t.sandboxes.table.where() == []


def test_run_pod_sandbox_twice_already_exists(t: CriUnderTest) -> None:
    t.run_pod()
    request = cri.RunPodSandboxRequest(config=pod_config(t.root))
    assert t.fails("RunPodSandbox", request) == grpc.StatusCode.ALREADY_EXISTS
    assert len(t.pods()) == 1 and len(t.pins.called("pin")) == 1


def test_a_failed_network_setup_leaves_nothing(t: CriUnderTest) -> None:
    t.network.failures["setup"] = Unavailable("the CNI plugin bridge failed: no IP left")
    assert t.fails("RunPodSandbox", cri.RunPodSandboxRequest(config=pod_config(t.root))) == grpc.StatusCode.UNAVAILABLE
    ((pod_id, _, _),) = t.network.called("setup")
    assert t.network.called("teardown") == [(pod_id, t.sandboxes.ns_root / pod_id / "net")]  # CNI DEL all the same
    _nothing_left_of_pod(t, pod_id)
    assert t.pods() == []


def test_a_failed_pin_leaves_nothing(t: CriUnderTest) -> None:
    t.pins.failures["pin"] = OSError(28, "No space left on device")
    assert t.fails("RunPodSandbox", cri.RunPodSandboxRequest(config=pod_config(t.root))) == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
    ((_, pod_id),) = t.cgroups.called("create")
    assert t.cgroups.called("destroy") == [(f"/pycri/{pod_id}", pod_id)]
    assert t.network.called("setup") == []
    assert t.network.called("teardown") == [(pod_id, None)]  # a crash in ADD leaves no namespace in the row
    _nothing_left_of_pod(t, pod_id)


def test_a_failed_infra_start_leaves_nothing(t: CriUnderTest) -> None:
    t.infra.failures["start"] = Unavailable("catatonit is not installed")
    request = cri.RunPodSandboxRequest(config=pod_config(t.root, pid=cri.NamespaceMode.POD))
    assert t.fails("RunPodSandbox", request) == grpc.StatusCode.UNAVAILABLE
    ((pod_id,),) = t.infra.called("stop_strays")
    # the CNI ADD ran beside the infra's start: it was undone
    assert [c[0] for c in t.network.called("setup")] == [c[0] for c in t.network.called("teardown")] == [pod_id]
    assert t.network.attached == {}
    _nothing_left_of_pod(t, pod_id)


def test_a_failed_network_setup_still_waits_for_the_infra_and_stops_it(t: CriUnderTest) -> None:
    t.network.failures["setup"] = Unavailable("no IP left")
    request = cri.RunPodSandboxRequest(config=pod_config(t.root, pid=cri.NamespaceMode.POD))
    assert t.fails("RunPodSandbox", request) == grpc.StatusCode.UNAVAILABLE
    ((_, _, pod_id),) = t.infra.called("start")
    assert len(t.infra.called("stop")) == 1 and not t.infra.running
    _nothing_left_of_pod(t, pod_id)


def test_a_pod_whose_pins_a_reboot_took_is_not_ready_after_recover(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    t.pins.forget()
    t.sandboxes.recover()
    assert t.pod_status(pod_id).state == NOTREADY
    # its IP lease is released at once (CNI DEL without the namespace a reboot took): stop and
    # remove see a NOTREADY pod and make no DEL of their own
    assert t.network.called("teardown") == [(pod_id, None)] and t.network.attached == {}
    t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    t.call("RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert t.network.called("teardown") == [(pod_id, None)]


# -- StopPodSandbox, RemovePodSandbox --------------------------------------------------

def test_stop_pod_sandbox_stops_its_containers_and_detaches_it(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    running, created = t.create(pod_id, "main"), t.create(pod_id, "side")
    t.start(running)
    t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    assert {(c.id, c.state) for c in t.containers()} == {(running, EXITED), (created, EXITED)}
    assert (running, signal.SIGKILL, False) in t.handler.called("kill")  # no grace: StopPodSandbox has no timeout
    assert t.status(running).exit_code == 128 + signal.SIGKILL
    ns = t.sandboxes.ns_root / pod_id
    assert t.network.called("teardown") == [(pod_id, ns / "net")] and t.network.attached == {}
    assert t.pins.pinned == set() and not ns.exists()
    status = t.pod_status(pod_id)
    assert status.state == NOTREADY
    assert (t.sandboxes.root / pod_id / "hostname").exists()  # its files and cgroup go with remove
    assert t.cgroups.existing == {(f"/pycri/{pod_id}", pod_id)}


def test_update_pod_sandbox_resources_checks_the_pod_and_changes_nothing(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    calls = (list(t.network.calls), list(t.pins.calls), list(t.cgroups.calls), list(t.handler.calls))
    resources = cri.LinuxContainerResources(cpu_quota=50_000, cpu_period=100_000, memory_limit_in_bytes=64 << 20)
    t.call("UpdatePodSandboxResources", cri.UpdatePodSandboxResourcesRequest(
        pod_sandbox_id=pod_id, resources=resources, overhead=cri.LinuxContainerResources(cpu_shares=2)))
    # kubelet has resized the pod cgroup itself; with no NRI plugin nothing is left to change
    assert (list(t.network.calls), list(t.pins.calls), list(t.cgroups.calls), list(t.handler.calls)) == calls
    assert t.pod_status(pod_id).state == READY
    assert t.fails("UpdatePodSandboxResources", cri.UpdatePodSandboxResourcesRequest(
        pod_sandbox_id="0" * 64, resources=resources)) == grpc.StatusCode.NOT_FOUND
    assert t.fails("UpdatePodSandboxResources", cri.UpdatePodSandboxResourcesRequest()) == \
        grpc.StatusCode.INVALID_ARGUMENT


def test_stop_pod_sandbox_twice_succeeds_and_does_nothing_more(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    calls = (list(t.network.calls), list(t.pins.calls), list(t.handler.calls))
    t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    assert (t.network.calls, t.pins.calls, t.handler.calls) == calls
    assert t.pod_status(pod_id).state == NOTREADY


def test_stop_pod_sandbox_of_an_unknown_pod_succeeds(t: CriUnderTest) -> None:
    assert t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id="f" * 64)) == cri.StopPodSandboxResponse()
    assert t.network.calls == []


def test_stop_pod_sandbox_without_an_id_is_invalid(t: CriUnderTest) -> None:
    assert t.fails("StopPodSandbox", cri.StopPodSandboxRequest()) == grpc.StatusCode.INVALID_ARGUMENT


def test_a_failed_network_teardown_fails_stop_pod_sandbox_and_a_retry_finishes_it(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    t.network.failures["teardown"] = Unavailable("the CNI plugin bridge failed")
    assert t.fails("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id)) == grpc.StatusCode.UNAVAILABLE
    assert t.pod_status(pod_id).state == READY and t.pins.pinned  # nothing released yet
    del t.network.failures["teardown"]
    t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    assert t.pod_status(pod_id).state == NOTREADY and t.pins.pinned == set()


def test_remove_pod_sandbox_removes_its_containers_and_everything_it_holds(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    container_id = t.create(pod_id)
    t.start(container_id)
    other = t.run_pod("other")
    t.call("RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert t.containers() == [] and t.container_service.table.all() == []
    assert (container_id, True) in t.handler.called("delete")
    assert not (t.container_service.root / container_id).exists()
    # DEL on stop, and again as the pod is destroyed (CNI DEL is idempotent; the record remove
    # destroys is the one it read before stopping the pod, still ready)
    assert t.network.called("teardown") == [(pod_id, t.sandboxes.ns_root / pod_id / "net")] * 2
    assert t.cgroups.existing == {(f"/pycri/{other}", other)}
    assert not (t.sandboxes.root / pod_id).exists() and not (t.sandboxes.ns_root / pod_id).exists()
    assert [p.id for p in t.pods()] == [other]
    assert t.fails("PodSandboxStatus", cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id)) == \
        grpc.StatusCode.NOT_FOUND


def test_remove_pod_sandbox_of_a_stopped_pod_detaches_it_only_once(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    t.call("RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert len(t.network.called("teardown")) == 1
    assert t.pods() == [] and t.cgroups.existing == set()


def test_remove_pod_sandbox_of_an_unknown_pod_succeeds(t: CriUnderTest) -> None:
    t.call("RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id="f" * 64))
    assert t.fails("RemovePodSandbox", cri.RemovePodSandboxRequest()) == grpc.StatusCode.INVALID_ARGUMENT


# -- CreateContainer --------------------------------------------------------------

def test_create_container(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    container_id = t.create(pod_id)
    ((created_id, paths, stdin, _, tty),) = t.handler.called("create")
    assert (created_id, stdin, tty) == (container_id, False, False)
    spec = json.loads((paths.bundle / "config.json").read_text())
    assert spec["process"]["args"] == ["sleep", "1d"] and spec["process"]["env"][0] == "PATH=/bin"
    merged = t.container_service.root / container_id / "rootfs" / "merged"
    assert spec["root"]["path"] == str(merged)
    ns = t.sandboxes.ns_root / pod_id
    assert {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}["network"] == str(ns / "net")
    ((source, target, fstype, _, options),) = [args for name, args in t.syscall.calls if name == "mount"]
    assert (source, target, fstype) == ("overlay", str(merged), "overlay")
    assert str(t.servicer.images.layers.diff(t.image.diff_ids[0])) in options
    status = t.status(container_id)
    assert (status.state, status.metadata.name, status.image.image) == (CREATED, "main", IMAGE)
    assert (status.image_id, status.image_ref) == (t.image.id, t.image.repo_digests[0])
    assert status.log_path == str(t.root / "logs" / "web" / "main.log")
    assert [(c.id, c.pod_sandbox_id, c.state, dict(c.labels)) for c in t.containers()] == \
        [(container_id, pod_id, CREATED, {"tier": "front"})]


def test_create_container_in_an_unknown_pod_is_not_found(t: CriUnderTest) -> None:
    request = cri.CreateContainerRequest(pod_sandbox_id="f" * 64, config=cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="main"), image=cri.ImageSpec(image=IMAGE)))
    assert t.fails("CreateContainer", request) == grpc.StatusCode.NOT_FOUND
    assert t.handler.calls == []


def test_create_container_in_a_stopped_pod_fails_its_precondition(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    with pytest.raises(Aborted) as failed:
        t.create(pod_id)
    assert failed.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert t.container_service.table.all() == []


def test_create_container_of_an_image_not_pulled_is_not_found(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    with pytest.raises(Aborted) as failed:
        t.create(pod_id, image="docker.io/library/nginx:latest")
    assert failed.value.code == grpc.StatusCode.NOT_FOUND and "pull it first" in failed.value.details
    assert t.handler.calls == [] and t.container_service.table.all() == []


def test_create_container_without_a_name_or_image_is_invalid(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    for config in (cri.ContainerConfig(image=cri.ImageSpec(image=IMAGE)),
                   cri.ContainerConfig(metadata=cri.ContainerMetadata(name="main"))):
        request = cri.CreateContainerRequest(pod_sandbox_id=pod_id, config=config)
        assert t.fails("CreateContainer", request) == grpc.StatusCode.INVALID_ARGUMENT
    assert t.handler.calls == []


def test_create_container_twice_already_exists(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    t.create(pod_id)
    with pytest.raises(Aborted) as failed:
        t.create(pod_id)
    assert failed.value.code == grpc.StatusCode.ALREADY_EXISTS and len(t.containers()) == 1


def test_a_failed_handler_create_leaves_nothing(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    t.handler.failures["create"] = RuntimeFailed("runc create: exec format error")
    with pytest.raises(Aborted) as failed:
        t.create(pod_id)
    assert failed.value.code == grpc.StatusCode.UNKNOWN and "exec format error" in failed.value.details
    ((container_id, _, _, _, _),) = t.handler.called("create")
    assert t.container_service.table.all() == [] and t.containers() == []
    assert not (t.container_service.root / container_id).exists()
    assert t.handler.called("delete") == [(container_id, True)]
    assert not (t.root / "logs" / "web" / "main.log").exists()
    assert t.container_service.image_users(t.image.id) == []  # the image may go again



def _create_with_mount(t: CriUnderTest, pod_id: str, host_path: str) -> str:
    request = cri.CreateContainerRequest(
        pod_sandbox_id=pod_id, sandbox_config=pod_config(t.root),
        config=cri.ContainerConfig(metadata=cri.ContainerMetadata(name="main"), image=cri.ImageSpec(image=IMAGE),
                                   command=["sleep", "1d"],
                                   mounts=[cri.Mount(container_path="/data", host_path=host_path)]))
    return t.call("CreateContainer", request).container_id


def test_a_missing_mount_host_path_is_made_as_a_directory(t: CriUnderTest) -> None:
    """As containerd and CRI-O: kubelet's hostPath of type "" (kube-flannel's /run/flannel) relies on it."""
    pod_id = t.run_pod()
    host_path = t.root / "host" / "run" / "flannel"
    container_id = _create_with_mount(t, pod_id, str(host_path))
    assert host_path.is_dir() and host_path.stat().st_mode & 0o777 == 0o755 & ~_umask()
    ((_, paths, _, _, _),) = t.handler.called("create")
    mounts = json.loads((paths.bundle / "config.json").read_text())["mounts"]
    assert {"destination": "/data", "type": "bind", "source": str(host_path)}.items() <= \
        next(m for m in mounts if m["destination"] == "/data").items()
    assert t.status(container_id).state == CREATED


def test_a_mount_host_path_that_is_a_dangling_symlink_or_relative_is_invalid(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    dangling = t.root / "dangling"
    dangling.symlink_to(t.root / "nowhere")
    for host_path in (str(dangling), "relative/path"):
        with pytest.raises(Aborted) as failed:
            _create_with_mount(t, pod_id, host_path)
        assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT, host_path
    assert not (t.root / "nowhere").exists() and t.handler.calls == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

# -- StartContainer ---------------------------------------------------------------

def test_start_container(t: CriUnderTest) -> None:
    container_id = t.create(t.run_pod())
    before = time.time_ns()
    t.start(container_id)
    assert t.handler.called("start") == [(container_id,)]
    status = t.status(container_id)
    assert status.state == RUNNING and status.started_at >= before
    assert [c.id for c in t.containers(state=cri.ContainerStateValue(state=RUNNING))] == [container_id]


def test_a_failed_handler_start_leaves_the_container_created(t: CriUnderTest) -> None:
    container_id = t.create(t.run_pod())
    t.handler.failures["start"] = RuntimeFailed("runc start: no such file")
    assert t.fails("StartContainer", cri.StartContainerRequest(container_id=container_id)) == grpc.StatusCode.UNKNOWN
    assert t.status(container_id).state == CREATED


def test_start_container_twice_fails_its_precondition(t: CriUnderTest) -> None:
    container_id = t.create(t.run_pod())
    t.start(container_id)
    assert t.fails("StartContainer", cri.StartContainerRequest(container_id=container_id)) == \
        grpc.StatusCode.FAILED_PRECONDITION
    assert t.handler.called("start") == [(container_id,)]


def test_start_container_of_an_exited_one_fails_its_precondition(t: CriUnderTest) -> None:
    container_id = t.create(t.run_pod())
    t.start(container_id)
    t.handler.exit(container_id, 0)
    assert t.fails("StartContainer", cri.StartContainerRequest(container_id=container_id)) == \
        grpc.StatusCode.FAILED_PRECONDITION


def test_start_container_unknown_or_without_an_id(t: CriUnderTest) -> None:
    assert t.fails("StartContainer", cri.StartContainerRequest(container_id="f" * 64)) == grpc.StatusCode.NOT_FOUND
    assert t.fails("StartContainer", cri.StartContainerRequest()) == grpc.StatusCode.INVALID_ARGUMENT


# -- StopContainer ----------------------------------------------------------------

def test_stop_container_with_the_images_stop_signal(t: CriUnderTest) -> None:
    container_id = t.create(t.run_pod())
    t.start(container_id)
    t.call("StopContainer", cri.StopContainerRequest(container_id=container_id, timeout=30))
    assert t.handler.called("kill") == [(container_id, signal.SIGTERM, False)]
    status = t.status(container_id)
    assert (status.state, status.exit_code, status.reason) == (EXITED, 128 + signal.SIGTERM, "Error")


def test_stop_container_kills_one_that_outlives_its_timeout(t: CriUnderTest) -> None:
    container_id = t.create(t.run_pod())
    t.start(container_id)
    t.handler.ignore(signal.SIGTERM)
    t.call("StopContainer", cri.StopContainerRequest(container_id=container_id, timeout=1))
    assert t.handler.called("kill") == [(container_id, signal.SIGTERM, False), (container_id, signal.SIGKILL, False)]
    assert (t.status(container_id).state, t.status(container_id).exit_code) == (EXITED, 128 + signal.SIGKILL)


def test_stop_container_of_an_exited_one_succeeds_and_signals_nothing(t: CriUnderTest) -> None:
    container_id = t.create(t.run_pod())
    t.start(container_id)
    t.handler.exit(container_id, 3)
    t.call("StopContainer", cri.StopContainerRequest(container_id=container_id, timeout=10))
    assert t.handler.called("kill") == []
    status = t.status(container_id)
    assert (status.state, status.exit_code, status.reason) == (EXITED, 3, "Error")


def test_stop_container_unknown_succeeds_without_an_id_is_invalid(t: CriUnderTest) -> None:
    t.call("StopContainer", cri.StopContainerRequest(container_id="f" * 64, timeout=10))
    assert t.fails("StopContainer", cri.StopContainerRequest()) == grpc.StatusCode.INVALID_ARGUMENT
    assert t.handler.calls == []


def test_stop_container_that_survives_sigkill_fails_its_precondition(t: CriUnderTest) -> None:
    container_id = t.create(t.run_pod())
    t.start(container_id)
    t.handler.ignore(signal.SIGKILL)
    t.container_service.kill_wait = 0
    assert t.fails("StopContainer", cri.StopContainerRequest(container_id=container_id, timeout=0)) == \
        grpc.StatusCode.FAILED_PRECONDITION
    assert t.status(container_id).state == RUNNING


# -- RemoveContainer --------------------------------------------------------------

def test_remove_container_kills_a_running_one_and_removes_it(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    container_id = t.create(pod_id)
    t.start(container_id)
    t.call("RemoveContainer", cri.RemoveContainerRequest(container_id=container_id))
    assert t.handler.called("kill") == [(container_id, signal.SIGKILL, False)]
    assert t.handler.called("delete") == [(container_id, True)] and t.handler.called("release") == [(container_id,)]
    assert t.containers() == [] and t.container_service.table.all() == []
    assert not (t.container_service.root / container_id).exists()
    assert t.fails("ContainerStatus", cri.ContainerStatusRequest(container_id=container_id)) == \
        grpc.StatusCode.NOT_FOUND
    assert t.pod_status(pod_id).state == READY  # the pod stays


def test_remove_container_of_an_exited_one(t: CriUnderTest) -> None:
    container_id = t.create(t.run_pod())
    t.start(container_id)
    t.handler.exit(container_id, 0)
    t.call("RemoveContainer", cri.RemoveContainerRequest(container_id=container_id))
    assert t.handler.called("kill") == [] and t.containers() == []


def test_remove_container_unknown_succeeds_without_an_id_is_invalid(t: CriUnderTest) -> None:
    t.call("RemoveContainer", cri.RemoveContainerRequest(container_id="f" * 64))
    assert t.fails("RemoveContainer", cri.RemoveContainerRequest()) == grpc.StatusCode.INVALID_ARGUMENT
    assert t.handler.calls == []


# -- List and Status replies follow the runtime ---------------------------------------

def test_list_and_status_follow_what_the_handler_reports(t: CriUnderTest) -> None:
    pod_id, other_pod = t.run_pod(), t.run_pod("other")
    first, second, third = t.create(pod_id, "a"), t.create(pod_id, "b"), t.create(other_pod, "c")
    t.start(first)
    t.start(second)
    t.handler.exit(second, 0)
    t.handler.exit(first, 137, oom_killed=True)
    by_state = {c.id: c.state for c in t.containers()}
    assert by_state == {first: EXITED, second: EXITED, third: CREATED}
    assert (t.status(first).reason, t.status(first).exit_code) == ("OOMKilled", 137)
    assert (t.status(second).reason, t.status(second).exit_code) == ("Completed", 0)
    assert {c.id for c in t.containers(pod_sandbox_id=pod_id)} == {first, second}
    assert [c.id for c in t.containers(state=cri.ContainerStateValue(state=CREATED))] == [third]
    assert [c.id for c in t.containers(id=third[:12])] == [third]
    t.handler.lose(third)
    assert (t.status(third).state, t.status(third).reason) == (EXITED, "Unknown")


def test_list_pod_sandbox_filters(t: CriUnderTest) -> None:
    web, other = t.run_pod(), t.run_pod("other")
    t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=other))
    request = cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(state=cri.PodSandboxStateValue(state=READY)))
    assert [p.id for p in t.call("ListPodSandbox", request).items] == [web]
    request = cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(label_selector={"app": "other"}))
    assert [p.id for p in t.call("ListPodSandbox", request).items] == [other]


def test_runtime_status_lists_the_handlers(t: CriUnderTest) -> None:
    reply = t.call("Status", cri.StatusRequest())
    assert [h.name for h in reply.runtime_handlers] == ["", "fake"]
    assert t.call("Version", cri.VersionRequest()).runtime_name == "pycri"


def test_container_status_reports_the_resources_it_runs_with(t: CriUnderTest) -> None:
    """kubelet's in-place resize compares these with what it asked for. A container that
    reports none gets a memory request of "0" in its pod status (the e2e `Pod InPlace Resize`
    specs failed so). Like containerd, pycri reports what the container runs with, updates
    included, and 0 for what was not set."""
    pod_id = t.run_pod()
    resources = cri.LinuxContainerResources(cpu_shares=512, cpu_quota=50000, cpu_period=100000,
                                            cpuset_cpus="0", oom_score_adj=500, unified={"memory.high": "max"})
    request = cri.CreateContainerRequest(
        pod_sandbox_id=pod_id, sandbox_config=pod_config(t.root),
        config=cri.ContainerConfig(metadata=cri.ContainerMetadata(name="sized"), image=cri.ImageSpec(image=IMAGE),
                                   command=["sleep", "1d"], linux=cri.LinuxContainerConfig(resources=resources)))
    container_id = t.call("CreateContainer", request).container_id
    reported = t.status(container_id).resources.linux
    assert reported == resources and reported.memory_limit_in_bytes == 0
    t.start(container_id)
    update = cri.LinuxContainerResources(cpu_shares=1024, cpu_quota=100000, cpu_period=100000,
                                         memory_limit_in_bytes=128 << 20)
    t.call("UpdateContainerResources", cri.UpdateContainerResourcesRequest(container_id=container_id, linux=update))
    reported = t.status(container_id).resources.linux
    assert (reported.cpu_shares, reported.cpu_quota, reported.memory_limit_in_bytes) == (1024, 100000, 128 << 20)
    assert (reported.cpuset_cpus, reported.oom_score_adj) == ("0", 500)  # what the update left as it was
