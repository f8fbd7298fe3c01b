"""The remote command protocol (exec and attach) over SPDY and over WebSocket.

Versions (`X-Stream-Protocol-Version` for SPDY, `Sec-WebSocket-Protocol` for WebSocket):

- `channel.k8s.io` (v1), `v2.channel.k8s.io`: stdin/stdout/stderr and an error stream that
  carries a failure as plain text (nothing on success);
- `v3.channel.k8s.io`: adds the resize stream (JSON `{"Width":w,"Height":h}` objects, one after
  the other) when tty;
- `v4.channel.k8s.io`: the error stream carries a JSON `metav1.Status`, so exit codes reach the
  client (`NonZeroExitCode` with an `ExitCode` cause, which client-go parses as a uint8);
- `v5.channel.k8s.io`: as v4 over SPDY; over WebSocket it adds the CLOSE signal (stdin EOF).
  client-go's WebSocket executor offers only v5.

Over SPDY the client opens one stream per channel (header `streamtype`); we wait for those the
request calls for (error always; stdin, stdout, stderr as asked; resize if tty and v3+), at most
`creation_timeout` seconds. Over WebSocket the channels exist from the start and we send an empty
message on the lowest writable channel to say so. Either way the backend runs, then its outputs
are closed, the Status is written to the error stream, and the connection is closed (SPDY:
FIN on every stream, GOAWAY; WebSocket: Close 1000).
"""
from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from pycri.streaming.channels import ChannelConnection
from pycri.streaming.interface import (
    AttachRequest, ExecRequest, InputStream, OutputStream, StreamBackend, TerminalSize,
)
from pycri.streaming.spdy import RstStatus
from pycri.streaming.spdy_conn import SpdyConnection, SpdyStream
from pycri.streaming.transport import Transport
from pycri.streaming.websocket import WebSocketConnection

log = structlog.get_logger("pycri.streaming")

V1, V2, V3, V4, V5 = ("channel.k8s.io", "v2.channel.k8s.io", "v3.channel.k8s.io", "v4.channel.k8s.io",
                      "v5.channel.k8s.io")
SPDY_PROTOCOLS = (V5, V4, V3, V2, V1)
VERSION_OF = {V1: 1, V2: 2, V3: 3, V4: 4, V5: 5}
WEBSOCKET_PROTOCOLS = {  # subprotocol -> version of the error stream format
    V5: 5, V4: 4, "v4.base64.channel.k8s.io": 4, V1: 1, "base64.channel.k8s.io": 1, "": 1,
}
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
STREAM_TYPES = {"stdin": STDIN, "stdout": STDOUT, "stderr": STDERR, "error": ERROR, "resize": RESIZE}

Request = ExecRequest | AttachRequest


# --- the error stream's Status ---------------------------------------------------------------

def status_success() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def status_exit_code(code: int, cmd: list[str] | None = None) -> dict[str, Any]:
    what = f"error executing command [{' '.join(cmd)}], exit code {code}" if cmd else f"exit code {code}"
    return {"metadata": {}, "status": "Failure", "message": f"command terminated with non-zero exit code: {what}",
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def status_internal_error(message: str) -> dict[str, Any]:
    return {"metadata": {}, "status": "Failure", "message": f"Internal error occurred: {message}",
            "reason": "InternalError", "details": {"causes": [{"message": message}]}, "code": 500}


def encode_status(status: dict[str, Any], version: int) -> bytes:
    """What goes on the error stream: v4+ the JSON Status; before, the message of a failure only."""
    if version >= 4:
        return json.dumps(status, separators=(",", ":")).encode("utf-8")
    if status["status"] == "Success":
        return b""
    return str(status.get("message", "")).encode("utf-8")


def normalise_exit_code(code: int) -> int:
    """0-255 as client-go parses it; -N (killed by signal N) becomes 128+N."""
    if code < 0:
        code = 128 - code
    return code if 0 <= code <= 255 else 255


# --- terminal resizes ------------------------------------------------------------------------

def parse_sizes(text: str) -> tuple[list[TerminalSize], str, bool]:
    """Sizes in a run of JSON objects; returns (sizes, the unparsed rest, ok). ok False: garbage."""
    decoder, sizes, pos = json.JSONDecoder(), [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return sizes, "", True
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return sizes, text[pos:], len(text) - pos < 4096 and text[pos] == "{"
        if not isinstance(value, dict):
            return sizes, "", False
        fields = {str(k).lower(): v for k, v in value.items()}
        width, height = fields.get("width", 0), fields.get("height", 0)
        if not all(type(v) is int and 0 <= v <= 0xFFFF for v in (width, height)):  # uint16, as Go decodes
            return sizes, "", False
        sizes.append(TerminalSize(width, height))


def pump_resizes(source: InputStream, sizes: queue.Queue[TerminalSize | None]) -> threading.Thread:
    """A thread that turns the resize stream into sizes on the queue, then None."""
    def run() -> None:
        pending = ""
        try:
            while chunk := source.read(4096):
                found, pending, ok = parse_sizes(pending + chunk.decode("utf-8", "replace"))
                for size in found:
                    sizes.put(size)
                if not ok:
                    log.info("bad terminal size message; ignoring further resizes")
                    break
        except OSError:
            pass
        finally:
            sizes.put(None)
    thread = threading.Thread(target=run, name="resize", daemon=True)
    thread.start()
    return thread


# --- running the backend ---------------------------------------------------------------------

@dataclass
class Streams:
    """The session's streams as the backend gets them, and the error stream."""

    stdin: InputStream | None
    stdout: OutputStream | None
    stderr: OutputStream | None
    error: OutputStream
    resize: queue.Queue[TerminalSize | None] | None
    gone: threading.Event  # set when the client's connection closes


def run_backend(backend: StreamBackend, request: Request, streams: Streams, version: int) -> None:
    """Run exec or attach, close its outputs, and write the Status to the error stream."""
    started = time.monotonic()
    try:
        if isinstance(request, ExecRequest):
            code = normalise_exit_code(backend.exec(
                request.container_id, list(request.cmd), tty=request.tty, stdin=streams.stdin,
                stdout=streams.stdout, stderr=streams.stderr, resize=streams.resize))
            status = status_success() if code == 0 else status_exit_code(code, request.cmd)
        else:
            backend.attach(request.container_id, tty=request.tty, stdin=streams.stdin, stdout=streams.stdout,
                           stderr=streams.stderr, resize=streams.resize, gone=streams.gone)
            status, code = status_success(), 0
    except Exception as exc:
        what = "executing command in container" if isinstance(request, ExecRequest) else "attaching to container"
        log.info("streaming backend failed", container_id=request.container_id, error=str(exc))
        status, code = status_internal_error(f"error {what}: {exc}"), -1
    log.info("streaming session done", kind=type(request).__name__, container_id=request.container_id,
             exit_code=code, seconds=round(time.monotonic() - started, 3))
    for out in (streams.stdout, streams.stderr):
        if out is not None:
            _quietly(out.close)
    payload = encode_status(status, version)
    if payload:
        _quietly(lambda: streams.error.write(payload))
    _quietly(streams.error.close)


def _quietly(action: Callable[[], object]) -> None:
    try:
        action()
    except OSError:
        pass


# --- SPDY ------------------------------------------------------------------------------------

def expected_stream_types(request: Request, version: int) -> set[str]:
    wanted = {"error"}
    for name in ("stdin", "stdout", "stderr"):
        if getattr(request, name):
            wanted.add(name)
    if request.tty and version >= 3:
        wanted.add("resize")
    return wanted


def serve_spdy(transport: Transport, request: Request, protocol: str, backend: StreamBackend, *,
               creation_timeout: float = 30.0, register: Callable[[SpdyConnection], None] | None = None) -> None:
    """One exec/attach session on an upgraded connection (the 101 has been sent)."""
    version = VERSION_OF[protocol]
    incoming: queue.Queue[SpdyStream] = queue.Queue()
    collecting = True

    def on_stream(stream: SpdyStream) -> bool:
        if stream.header("streamtype") not in STREAM_TYPES:
            return False
        if not collecting:
            stream.discarding = True  # a late extra stream: nobody reads it
        incoming.put(stream)
        return True

    conn = SpdyConnection(transport, server=True, on_stream=on_stream, name=f"spdy-{type(request).__name__}")
    if register is not None:
        register(conn)
    conn.start()
    wanted = expected_stream_types(request, version)
    streams: dict[str, SpdyStream] = {}
    deadline = time.monotonic() + creation_timeout
    while not wanted <= streams.keys():
        remaining = deadline - time.monotonic()
        if remaining <= 0 or conn.is_closed:
            log.info("streams not created in time" if remaining <= 0 else "connection closed before its streams",
                     missing=sorted(wanted - streams.keys()))
            conn.close()
            return
        try:
            stream = incoming.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        kind = stream.header("streamtype") or ""
        if kind in streams:
            stream.reset(RstStatus.PROTOCOL_ERROR)
            continue
        streams[kind] = stream
    collecting = False
    extras: list[SpdyStream] = []
    while not incoming.empty():  # streams that came in the meantime, not asked for
        extras.append(incoming.get())
    for kind, stream in list(streams.items()):
        if kind not in wanted:
            extras.append(streams.pop(kind))
    for stream in extras:
        stream.discard()
    resize: queue.Queue[TerminalSize | None] | None = None
    if request.tty and "resize" in streams:
        resize = queue.Queue()
        pump_resizes(streams["resize"], resize)
    run_backend(backend, request, Streams(
        stdin=streams.get("stdin") if request.stdin else None,
        stdout=streams.get("stdout") if request.stdout else None,
        stderr=streams.get("stderr") if request.stderr else None,
        error=streams["error"], resize=resize, gone=conn.closed), version)
    for stream in [*streams.values(), *extras]:
        stream.close()
    conn.close()


# --- WebSocket -------------------------------------------------------------------------------

def serve_websocket(ws: WebSocketConnection, request: Request, protocol: str, backend: StreamBackend, *,
                    register: Callable[[ChannelConnection], None] | None = None) -> None:
    """One exec/attach session on a WebSocket (the handshake is done)."""
    version = WEBSOCKET_PROTOCOLS[protocol]
    readable = {RESIZE} | ({STDIN} if request.stdin else set())
    conn = ChannelConnection(ws, protocol, readable, channels=5)
    if register is not None:
        register(conn)
    conn.start()
    first = STDOUT if request.stdout else STDERR if request.stderr else ERROR
    try:
        conn.send(first, b"")  # the channels are ready
    except OSError:
        conn.close()
        return
    resize: queue.Queue[TerminalSize | None] | None = None
    if request.tty:
        resize = queue.Queue()
        pump_resizes(conn.readers[RESIZE], resize)
    run_backend(backend, request, Streams(
        stdin=conn.readers.get(STDIN),
        stdout=conn.writer(STDOUT) if request.stdout else None,
        stderr=conn.writer(STDERR) if request.stderr else None,
        error=conn.writer(ERROR), resize=resize, gone=conn.closed), version)
    conn.close()
