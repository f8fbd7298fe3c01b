"""Port-forward (`portforward.k8s.io`) over SPDY, over SPDY tunnelled in WebSocket, and over
WebSocket channels, as kubelet's k8s.io/kubelet/pkg/cri/streaming/portforward does it.

SPDY (kubectl/crictl's default, and `SPDY/3.1+portforward.k8s.io` in WebSocket, which is what
client-go's tunneling dialer and `crictl port-forward --transport websocket` use): for each local
connection the client opens an error stream and a data stream, both with headers `port` and
`requestid` (streams of old clients without `requestid` are paired by stream id, as kubelet
does). Once both are there, the backend forwards the port on the data stream. Afterwards, as in
kubelet: a broken pipe or a reset from the pod (EPIPE, ECONNRESET) resets both streams and is not
reported; any other failure's message goes on the error stream (client-go then prints it and
gives up the whole forward); then both streams get FIN. A pair whose second stream does not come
within `creation_timeout` gets "timed out waiting for streams" on its error stream, then FIN (its
data stream, if that is the half that came, is reset). The session lasts until the client closes it.

WebSocket channels (`v4.channel.k8s.io`, `v4.base64.channel.k8s.io`, or none): the ports come
from the request (or the `port` query parameter); the i-th port has data channel 2i and error
channel 2i+1, and each starts with the port as two little-endian bytes. One connection per port;
v4 has no half-close, so a port's connection sees EOF from the client only when the WebSocket
closes; once every port's connection has ended, we close the WebSocket (as kubelet does).
"""
from __future__ import annotations

import errno
import queue
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from pycri.streaming.channels import ChannelConnection, ChannelDuplex, ChannelWriter
from pycri.streaming.interface import StreamBackend
from pycri.streaming.spdy_conn import SpdyConnection, SpdyStream
from pycri.streaming.transport import Transport
from pycri.streaming.websocket import WebSocketConnection

log = structlog.get_logger("pycri.streaming")

PROTOCOL = "portforward.k8s.io"
TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
WEBSOCKET_PROTOCOLS = ("v4.channel.k8s.io", "v4.base64.channel.k8s.io", "")
POLL = 0.5  # how often the SPDY session loop looks whether the connection has ended


# --- one forwarded connection ------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """How one forwarded connection ended."""

    message: str | None = None  # a failure to report on the error stream
    quiet: bool = False  # ended by the pod (EPIPE, ECONNRESET): kubelet resets, reports nothing


def _quiet_error(exc: BaseException) -> bool:
    return isinstance(exc, (BrokenPipeError, ConnectionResetError)) or \
        getattr(exc, "errno", None) in (errno.EPIPE, errno.ECONNRESET)


def forward_one(backend: StreamBackend, pod_id: str, port: int, data: ChannelDuplex | SpdyStream) -> Outcome:
    """Run the backend for one connection; how it ended (kubelet's wording for a failure)."""
    try:
        backend.port_forward(pod_id, port, data)
    except Exception as exc:
        if _quiet_error(exc):
            log.info("port forward ended by a broken connection", pod_id=pod_id, port=port, error=str(exc))
            return Outcome(quiet=True)
        log.info("port forward failed", pod_id=pod_id, port=port, error=str(exc))
        return Outcome(message=f"error forwarding port {port} to pod {pod_id}, uid : {exc}")
    return Outcome()


def _write_quietly(stream: ChannelWriter | SpdyStream, message: str) -> None:
    try:
        stream.write(message.encode("utf-8"))
    except OSError:
        pass


def _port_of(stream: SpdyStream) -> int | None:
    try:
        port = int(stream.header("port") or "")
    except ValueError:
        return None
    return port if 1 <= port <= 65535 else None


# --- SPDY --------------------------------------------------------------------------------------

@dataclass
class _Pair:
    request_id: str
    deadline: float
    data: SpdyStream | None = None
    error: SpdyStream | None = None


def serve_spdy(transport: Transport, pod_id: str, backend: StreamBackend, *, creation_timeout: float = 30.0,
               register: Callable[[SpdyConnection], None] | None = None) -> None:
    """A port-forward session on an upgraded connection (the 101, or the WebSocket handshake, is done)."""
    incoming: queue.Queue[SpdyStream] = queue.Queue()

    def on_stream(stream: SpdyStream) -> bool:
        if _port_of(stream) is None or stream.header("streamtype") not in ("data", "error"):
            return False
        incoming.put(stream)
        return True

    conn = SpdyConnection(transport, server=True, on_stream=on_stream, name="spdy-portforward")
    if register is not None:
        register(conn)
    conn.start()
    pairs: dict[str, _Pair] = {}
    while not conn.is_closed:
        try:
            stream = incoming.get(timeout=_wait_time(pairs))
        except queue.Empty:
            pass
        else:
            _add(stream, pairs, backend, pod_id, creation_timeout)
        _expire(pairs)
    conn.close()


def _wait_time(pairs: dict[str, _Pair]) -> float:
    """How long to wait for the next stream: until the first pair's deadline, at most POLL."""
    soonest = min((pair.deadline for pair in pairs.values()), default=float("inf"))
    return max(0.0, min(POLL, soonest - time.monotonic()))


def _expire(pairs: dict[str, _Pair]) -> None:
    """Drop the pairs whose second stream did not come in time. The message goes on the error
    stream, followed by FIN so that client-go's read of it ends (no RST: the client could lose
    the message with the stream)."""
    now = time.monotonic()
    for request_id, pair in list(pairs.items()):
        if now < pair.deadline:
            continue
        del pairs[request_id]
        log.info("port forward streams not created in time", request_id=request_id)
        if pair.error is not None:
            _write_quietly(pair.error, f"timed out waiting for streams of request {request_id}")
            pair.error.discard()
            pair.error.close()
        if pair.data is not None:
            pair.data.reset()


def _add(stream: SpdyStream, pairs: dict[str, _Pair], backend: StreamBackend, pod_id: str,
         creation_timeout: float) -> None:
    kind = stream.header("streamtype")
    request_id = stream.header("requestid")
    if not request_id:  # an old client: error stream id n, data stream id n + 2
        request_id = str(stream.id if kind == "error" else stream.id - 2)
    pair = pairs.setdefault(request_id, _Pair(request_id, time.monotonic() + creation_timeout))
    if getattr(pair, kind) is not None:
        log.info("port forward stream already assigned", request_id=request_id, streamtype=kind)
        if pair.error is not None:
            _write_quietly(pair.error, f"error processing stream for request {request_id}: "
                                       f"{kind} stream already assigned")
        stream.reset()
        return
    setattr(pair, kind, stream)
    if pair.data is not None and pair.error is not None:
        del pairs[request_id]
        threading.Thread(target=_run_pair, args=(pair.data, pair.error, backend, pod_id),
                         name=f"portforward-{request_id}", daemon=True).start()


def _run_pair(data: SpdyStream, error: SpdyStream, backend: StreamBackend, pod_id: str) -> None:
    error.discard()  # the client writes nothing on it
    outcome = forward_one(backend, pod_id, _port_of(data) or 0, data)
    data.discard()  # what the client still sends has nowhere to go
    if outcome.quiet:
        data.reset()
        error.reset()
        return
    if outcome.message is not None:
        _write_quietly(error, outcome.message)
    error.close()
    data.close()


# --- WebSocket channels ------------------------------------------------------------------------

def serve_websocket(ws: WebSocketConnection, protocol: str, pod_id: str, ports: list[int],
                    backend: StreamBackend, *, register: Callable[[ChannelConnection], None] | None = None) -> None:
    """A port-forward session on WebSocket channels, one forwarded connection per port."""
    conn = ChannelConnection(ws, protocol, readable={2 * i for i in range(len(ports))}, channels=2 * len(ports))
    if register is not None:
        register(conn)
    conn.start()
    threads = []
    try:
        for i, port in enumerate(ports):
            prefix = struct.pack("<H", port)
            conn.writer(2 * i).write(prefix)
            conn.writer(2 * i + 1).write(prefix)
    except OSError:
        conn.close()
        return
    for i, port in enumerate(ports):
        thread = threading.Thread(target=_forward_channels, args=(conn, i, port, backend, pod_id),
                                  name=f"portforward-ws-{port}", daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    conn.close()


def _forward_channels(conn: ChannelConnection, index: int, port: int, backend: StreamBackend, pod_id: str) -> None:
    """The index-th port's connection on its data and error channels."""
    reader, data, error = conn.readers[2 * index], conn.writer(2 * index), conn.writer(2 * index + 1)
    outcome = forward_one(backend, pod_id, port, ChannelDuplex(reader, data))
    reader.discard()  # what the client still sends on the channel has nowhere to go
    if outcome.message is not None:
        _write_quietly(error, outcome.message)
    data.close()
    error.close()
