"""pycri's adapter to the streaming library: the `StreamBackend` that `pycri.streaming.Server`
calls, over containers and sandboxes. Exec and attach go through the container service (the
runtime's `exec`; the runtime handler's attach, conmon's attach socket), port-forward through
the pod's network namespace. The protocol side (HTTP, SPDY, WebSocket, tokens) is the
`streaming` package; the RPCs that hand out its URLs are `criserver/exec_urls.py`."""
from __future__ import annotations

import queue
import threading

from pycri.containers.handler import StreamIO
from pycri.containers.service import ContainerService
from pycri.sandbox.service import SandboxService
from pycri.streaming import DuplexStream, InputStream, OutputStream, TerminalSize, forward_socket


class RuntimeStreams:
    """`pycri.streaming.StreamBackend` over pycri's containers and sandboxes."""

    def __init__(self, containers: ContainerService, sandboxes: SandboxService) -> None:
        self.containers = containers
        self.sandboxes = sandboxes

    def exec(self, container_id: str, cmd: list[str], *, tty: bool, stdin: InputStream | None,
             stdout: OutputStream | None, stderr: OutputStream | None,
             resize: queue.Queue[TerminalSize | None] | None) -> int:
        io = StreamIO(stdin, stdout, stderr, resize)  # type: ignore[arg-type]
        return self.containers.exec_stream(container_id, cmd, tty, io)

    def attach(self, container_id: str, *, tty: bool, stdin: InputStream | None,
               stdout: OutputStream | None, stderr: OutputStream | None,
               resize: queue.Queue[TerminalSize | None] | None, gone: threading.Event) -> None:
        self.containers.attach(container_id, StreamIO(stdin, stdout, stderr, resize, gone))  # type: ignore[arg-type]

    def port_forward(self, pod_id: str, port: int, stream: DuplexStream) -> None:
        forward_socket(self.sandboxes.connect(pod_id, port), stream)
