"""CRI RuntimeService: Version, Status, RuntimeConfig here; pods and containers in criserver.pods
(their List replies from entries kept by criserver.list_replies), stats in criserver.stats,
Exec/Attach/PortForward in criserver.exec_urls.
Calls pycri does not implement answer UNIMPLEMENTED through the generated base class."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pycri.api.cri import api_pb2 as cri
from pycri.api.cri import api_pb2_grpc
from pycri.common.lifecycle import DELETED, LifecycleEvent
from pycri.containers.service import ContainerService
from pycri.criserver import oci_spec
from pycri.criserver.events import ContainerEventCalls
from pycri.criserver.exec_urls import ExecUrlCalls
from pycri.criserver.list_replies import KeptReplies, ListReplies
from pycri.criserver.pods import PodCalls
from pycri.criserver.stats import CpuRates, StatsCalls
from pycri.images.service import ImageService
from pycri.sandbox.service import SandboxService
from pycri.streaming import Server as StreamingServer

RUNTIME_NAME = "pycri"
RUNTIME_VERSION = "0.1.0"
CRI_API_VERSION = "v1"
KUBELET_API_VERSION = "0.1.0"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str = ""
    message: str = ""


class RuntimeServicer(PodCalls, StatsCalls, ExecUrlCalls, ContainerEventCalls, api_pb2_grpc.RuntimeServiceServicer):
    def __init__(self, cgroup_driver: str, effective_config: str, conditions: Callable[[], list[Condition]],
                 sandboxes: SandboxService, containers: ContainerService, images: ImageService,
                 streams: StreamingServer) -> None:
        self.cgroup_driver = cgroup_driver
        self.effective_config = effective_config
        self.conditions = conditions
        self.sandboxes = sandboxes
        self.containers = containers
        self.images = images
        self.streams = streams
        self.min_oom_score_adj = oci_spec.lowest_oom_score_adj()
        self.cpu_rates = CpuRates()
        # ListContainers' and ListPodSandbox's items, encoded once per state; dropped on delete
        self.container_replies = ListReplies(cri.ListContainersResponse)
        self.sandbox_replies = ListReplies(cri.ListPodSandboxResponse)
        self.stats_attributes = ListReplies(cri.ListContainerStatsResponse)  # ListContainerStats' attributes
        containers.events.subscribe(_forget_deleted(self.container_replies))
        containers.events.subscribe(_forget_deleted(self.stats_attributes))
        containers.events.subscribe(_forget_deleted(self.status_replies))
        sandboxes.events.subscribe(_forget_deleted(self.sandbox_replies))
        self.watch_lifecycle()  # GetContainerEvents

    def Version(self, request: cri.VersionRequest, context: Any) -> cri.VersionResponse:
        return cri.VersionResponse(
            version=KUBELET_API_VERSION, runtime_name=RUNTIME_NAME,
            runtime_version=RUNTIME_VERSION, runtime_api_version=CRI_API_VERSION,
        )

    def Status(self, request: cri.StatusRequest, context: Any) -> cri.StatusResponse:
        status = cri.RuntimeStatus(conditions=[
            cri.RuntimeCondition(type=c.type, status=c.status, reason=c.reason, message=c.message)
            for c in self.conditions()
        ])
        info = {"config": json.dumps(self.effective_config)} if request.verbose else {}
        # "" is the default handler; every one is listed with what it really supports
        handlers = [cri.RuntimeHandler(name=name, features=self._handler_features(name))
                    for name in ["", *sorted(self.containers.handlers)]]
        return cri.StatusResponse(status=status, info=info, runtime_handlers=handlers,
                                  features=cri.RuntimeFeatures(supplemental_groups_policy=True))

    def _handler_features(self, name: str) -> cri.RuntimeHandlerFeatures:
        """Recursive read-only mounts and user namespaces where the runtime and the kernel
        have them."""
        features = self.containers.handler(name).features()
        return cri.RuntimeHandlerFeatures(recursive_read_only_mounts=features.recursive_read_only_mounts,
                                          user_namespaces=features.user_namespaces)

    def RuntimeConfig(self, request: cri.RuntimeConfigRequest, context: Any) -> cri.RuntimeConfigResponse:
        driver = cri.CgroupDriver.SYSTEMD if self.cgroup_driver == "systemd" else cri.CgroupDriver.CGROUPFS
        return cri.RuntimeConfigResponse(linux=cri.LinuxRuntimeConfiguration(cgroup_driver=driver))


def _forget_deleted(replies: ListReplies[Any] | KeptReplies[Any]) -> Callable[[LifecycleEvent], None]:
    """A listener that drops a deleted item's kept List entry or reply."""
    def listener(event: LifecycleEvent) -> None:
        if event.kind == DELETED:
            replies.forget(event.subject_id)
    return listener
