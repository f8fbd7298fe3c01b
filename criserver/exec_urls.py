"""The RuntimeService calls that hand out streaming URLs: Exec, Attach, PortForward.

Each checks its target now (a missing or stopped container, a pod that is not ready: the
RPC fails, as containerd's do), then stores the request on the streaming server under a
single-use token and returns the URL the client connects to."""
from __future__ import annotations

from typing import Any

from pycri.api.cri import api_pb2 as cri
from pycri.common.errors import FailedPrecondition, InvalidArgument
from pycri.containers.service import ContainerService
from pycri.containers.records import RUNNING
from pycri.sandbox.service import SandboxService
from pycri.sandbox.records import READY
from pycri.streaming import AttachRequest, ExecRequest, PortForwardRequest, Server


class ExecUrlCalls:
    """Exec, Attach and PortForward (mixed into the servicer)."""

    sandboxes: SandboxService
    containers: ContainerService
    streams: Server

    def _running(self, container_id: str) -> str:
        if not container_id:
            raise InvalidArgument("container_id is required")
        record = self.containers.get(container_id)
        if record.state != RUNNING:
            raise FailedPrecondition(f"container {record.id} is not running ({record.state})")
        return record.id

    def Exec(self, request: cri.ExecRequest, context: Any) -> cri.ExecResponse:
        container_id = self._running(request.container_id)
        url = self.streams.get_exec_url(ExecRequest(container_id, list(request.cmd), request.tty, request.stdin,
                                                    request.stdout, request.stderr))
        return cri.ExecResponse(url=url)

    def Attach(self, request: cri.AttachRequest, context: Any) -> cri.AttachResponse:
        container_id = self._running(request.container_id)
        url = self.streams.get_attach_url(AttachRequest(container_id, request.tty, request.stdin, request.stdout,
                                                        request.stderr))
        return cri.AttachResponse(url=url)

    def PortForward(self, request: cri.PortForwardRequest, context: Any) -> cri.PortForwardResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("pod_sandbox_id is required")
        record = self.sandboxes.get(request.pod_sandbox_id)
        if record.state != READY:
            raise FailedPrecondition(f"pod sandbox {record.id} is not ready")
        url = self.streams.get_portforward_url(PortForwardRequest(record.id, [int(p) for p in request.port]))
        return cri.PortForwardResponse(url=url)
