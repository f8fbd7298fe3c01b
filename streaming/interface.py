"""What the streaming server asks of the runtime: the `StreamBackend` interface, the stream types
it hands over, and the requests stored under tokens.

The CRI layer implements `StreamBackend` (exec/attach through conmon, port-forward through the
pod's network namespace; pycri's is `criserver/streaming_adapter.py`) and gives it to `Server`;
the Exec/Attach/PortForward RPCs (`criserver/exec_urls.py`) then call
`Server.get_exec_url(request)` (etc.) and return the URL. Everything protocol-specific (SPDY or
WebSocket, protocol versions, the error stream's Status, terminal resizes) stays in this package:
the backend sees plain file-like streams.

Threads: each backend call runs in its own thread and may block as long as the session lasts.
`read` blocks until data or end of stream (b""). `write` blocks until sent; after the client has
gone it raises OSError (BrokenPipeError, ConnectionResetError): stop then. The server closes the
output streams after the call returns; a backend may close them earlier to signal EOF.
"""
from __future__ import annotations

import queue
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from pycri.common.errors import InvalidArgument


class InputStream(Protocol):
    """The client's stdin (or the pod-side end of a forwarded connection)."""

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes (n < 0: whatever is available), blocking for at least one; b"" at EOF."""
        ...


class OutputStream(Protocol):
    """stdout or stderr towards the client."""

    def write(self, data: bytes) -> int:
        ...

    def close(self) -> None:
        """End of this stream for the client (idempotent)."""
        ...


class DuplexStream(InputStream, OutputStream, Protocol):
    """A forwarded connection: read what the client sends, write what the pod answers; close
    half-closes (the client sees end of stream, and may still send)."""


class TerminalSize(NamedTuple):
    """A terminal size the client sent; the resize queue ends with None when it stops sending."""

    width: int
    height: int


class StreamBackend(Protocol):
    """The runtime side of exec, attach and port-forward. Every method blocks for the session."""

    def exec(self, container_id: str, cmd: list[str], *, tty: bool, stdin: InputStream | None,
             stdout: OutputStream | None, stderr: OutputStream | None,
             resize: queue.Queue[TerminalSize | None] | None) -> int:
        """Run cmd in the container, copying the streams; return its exit code (0-255; a negative
        code -N means killed by signal N and is reported as 128+N). Raise to report a failure to
        run it (the message reaches the user as an internal error). With tty, stderr is None."""
        ...

    def attach(self, container_id: str, *, tty: bool, stdin: InputStream | None,
               stdout: OutputStream | None, stderr: OutputStream | None,
               resize: queue.Queue[TerminalSize | None] | None, gone: threading.Event) -> None:
        """Attach the streams to the container's main process until it exits or the client
        leaves (`gone` is set when its connection closes; stdin EOF; a write raising OSError).
        Raise to report a failure."""
        ...

    def port_forward(self, pod_id: str, port: int, stream: DuplexStream) -> None:
        """Connect to `port` on the pod's localhost and copy both ways until both directions are
        done (`forward_socket` does exactly that). Raise to report a failure; BrokenPipeError and
        ConnectionResetError end the one connection quietly."""
        ...


# --- requests stored under tokens -----------------------------------------------------------

@dataclass(frozen=True)
class ExecRequest:
    container_id: str
    cmd: list[str]
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True


@dataclass(frozen=True)
class AttachRequest:
    container_id: str
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True


@dataclass(frozen=True)
class PortForwardRequest:
    pod_id: str
    ports: list[int] = field(default_factory=list)


def exec_request(request: Any) -> ExecRequest:
    """An ExecRequest from ours or from a CRI ExecRequest message, validated as kubelet does."""
    if isinstance(request, ExecRequest):
        result = request
    else:
        result = ExecRequest(request.container_id, list(request.cmd), bool(request.tty), bool(request.stdin),
                             bool(request.stdout), bool(request.stderr))
    if not result.cmd:
        raise InvalidArgument("cmd must not be empty")
    _check_stdio(result.container_id, result.tty, result.stdin, result.stdout, result.stderr)
    return result


def attach_request(request: Any) -> AttachRequest:
    """An AttachRequest from ours or from a CRI AttachRequest message, validated."""
    if isinstance(request, AttachRequest):
        result = request
    else:
        result = AttachRequest(request.container_id, bool(request.tty), bool(request.stdin),
                               bool(request.stdout), bool(request.stderr))
    _check_stdio(result.container_id, result.tty, result.stdin, result.stdout, result.stderr)
    return result


def port_forward_request(request: Any) -> PortForwardRequest:
    """A PortForwardRequest from ours or from a CRI PortForwardRequest message, validated."""
    if isinstance(request, PortForwardRequest):
        result = request
    else:
        result = PortForwardRequest(request.pod_sandbox_id, [int(p) for p in request.port])
    if not result.pod_id:
        raise InvalidArgument("missing required pod_sandbox_id")
    for port in result.ports:
        if not 1 <= port <= 65535:
            raise InvalidArgument(f"invalid port {port}")
    return result


def _check_stdio(container_id: str, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> None:
    if not container_id:
        raise InvalidArgument("missing required container_id")
    if tty and stderr:
        raise InvalidArgument("tty and stderr cannot both be true")
    if not (stdin or stdout or stderr):
        raise InvalidArgument("one of stdin, stdout, or stderr must be set")


# --- a helper for port_forward implementations -----------------------------------------------

def forward_socket(sock: socket.socket, stream: DuplexStream, chunk: int = 32 * 1024) -> None:
    """Copy between a connected socket and a forwarded stream until both directions end.

    Client EOF half-closes the socket (SHUT_WR); socket EOF closes the stream (the client sees
    EOF). Returns when both are done or either side breaks; closes the socket.
    """
    def client_to_pod() -> None:
        try:
            while data := stream.read(chunk):
                sock.sendall(data)
            if getattr(stream, "is_reset", False):  # the client gave up on this connection
                _shutdown(sock)
            else:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            _shutdown(sock)

    pump = threading.Thread(target=client_to_pod, name="portforward-in", daemon=True)
    pump.start()
    try:
        while data := sock.recv(chunk):
            stream.write(data)
    except OSError:
        pass
    finally:
        stream.close()
    pump.join()
    sock.close()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
