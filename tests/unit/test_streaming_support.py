"""Helpers for the streaming tests (no tests here): a fake `StreamBackend`, a raw SPDY peer that
speaks frames by hand, and small SPDY and WebSocket clients built on pycri's own framing."""
from __future__ import annotations

import faulthandler
import json
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from pycri.streaming import spdy
from pycri.streaming.interface import InputStream, OutputStream, TerminalSize, forward_socket
from pycri.streaming.server import Server
from pycri.streaming.spdy_conn import SpdyConnection, SpdyStream
from pycri.streaming.transport import SocketTransport
from pycri.streaming.websocket import Message, Opcode, WebSocketConnection, client_handshake

TIMEOUT = 10.0
TEST_LIMIT = 30.0


class HangError(Exception):
    """A test ran past TEST_LIMIT (something hangs)."""


def _time_out(signum: int, frame: object) -> None:
    faulthandler.dump_traceback(all_threads=True)
    raise HangError(f"test still running after {TEST_LIMIT} s")


@pytest.fixture(autouse=True)
def bounded() -> Iterator[None]:
    """Import this into a test module. Tests must never hang and threads must never crash:

    - a test still running after TEST_LIMIT seconds fails with HangError (raised in the test's
      thread by SIGALRM, after a dump of every thread's stack); one that cannot even be
      interrupted ends the run a little later;
    - an exception that ends a thread (a reader, a writer, a session) fails the test.
    """
    crashes: list[threading.ExceptHookArgs] = []
    previous_hook = threading.excepthook
    threading.excepthook = crashes.append
    previous = signal.signal(signal.SIGALRM, _time_out)
    signal.setitimer(signal.ITIMER_REAL, TEST_LIMIT)
    faulthandler.dump_traceback_later(TEST_LIMIT + 30, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()
        threading.excepthook = previous_hook
    assert not crashes, [f"{c.thread.name if c.thread else '?'}: {c.exc_type.__name__}: {c.exc_value}"
                         for c in crashes]


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT, interval: float = 0.01) -> bool:
    """Poll `condition` until true (True) or timeout (False): only for state nothing signals."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


# --- a fake backend -------------------------------------------------------------------------

@dataclass
class FakeBackend:
    """exec: `echo ARGS`, `cat` (stdin to stdout), `err TEXT`, `exit N`, `fail` (raises), `sizes N`
    (waits for N terminal sizes, prints them); attach: stdin to stdout, or without stdin waits
    until the client is gone and records ("attach gone", True); port_forward: echoes the
    stream upper-cased, or fails for port 666 (RuntimeError) and 667 (ConnectionResetError), or
    forwards to a real socket for ports in `real`."""

    calls: list[tuple[str, object]] = field(default_factory=list)
    real: set[int] = field(default_factory=set)
    called: threading.Event = field(default_factory=threading.Event)  # set at each call

    def _record(self, call: tuple[str, object]) -> None:
        self.calls.append(call)
        self.called.set()

    def exec(self, container_id: str, cmd: list[str], *, tty: bool, stdin: InputStream | None,
             stdout: OutputStream | None, stderr: OutputStream | None,
             resize: queue.Queue[TerminalSize | None] | None) -> int:
        self._record(("exec", (container_id, cmd, tty, stdin is not None, stdout is not None,
                               stderr is not None, resize is not None)))
        verb, args = cmd[0], cmd[1:]
        if verb == "echo":
            assert stdout is not None
            stdout.write((" ".join(args) + "\n").encode())
        elif verb == "cat":
            assert stdin is not None and stdout is not None
            while data := stdin.read(65536):
                stdout.write(data)
        elif verb == "err":
            assert stderr is not None
            stderr.write(" ".join(args).encode())
        elif verb == "exit":
            return int(args[0])
        elif verb == "fail":
            raise RuntimeError("no such container")
        elif verb == "sizes":
            assert resize is not None and stdout is not None
            for _ in range(int(args[0])):
                size = resize.get(timeout=TIMEOUT)
                stdout.write(f"{size.width}x{size.height}\n".encode())
        elif verb == "big":
            assert stdout is not None
            stdout.write(b"z" * int(args[0]))
        return 0

    def attach(self, container_id: str, *, tty: bool, stdin: InputStream | None, stdout: OutputStream | None,
               stderr: OutputStream | None, resize: queue.Queue[TerminalSize | None] | None,
               gone: threading.Event) -> None:
        self._record(("attach", container_id))
        if stdin is None:
            self._record(("attach gone", gone.wait(TIMEOUT)))
            return
        assert stdout is not None
        while data := stdin.read(65536):
            stdout.write(data)

    def port_forward(self, pod_id: str, port: int, stream) -> None:  # type: ignore[no-untyped-def]
        self._record(("port_forward", (pod_id, port)))
        if port in self.real:
            forward_socket(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT), stream)
            return
        if port == 666:
            raise RuntimeError("connection refused")
        if port == 667:
            raise ConnectionResetError("reset by the pod")
        while data := stream.read(65536):
            stream.write(data.upper())
        stream.close()


@contextmanager
def running_server(backend: FakeBackend | None = None, **options: object) -> Iterator[Server]:
    options.setdefault("address", "127.0.0.1")
    server = Server(backend or FakeBackend(), **options).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


# --- a raw SPDY peer ------------------------------------------------------------------------

class RawPeer:
    """One end of a socketpair speaking SPDY frames by hand."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(TIMEOUT)
        self.encoder = spdy.FrameEncoder()
        self.decoder = spdy.FrameDecoder()
        self.eof = False

    def send(self, *frames: spdy.Frame) -> None:
        self.sock.sendall(b"".join(self.encoder.encode(f) for f in frames))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next(self, timeout: float = TIMEOUT) -> spdy.Frame | None:
        """The next frame, or None at EOF; TimeoutError if nothing comes."""
        deadline = time.monotonic() + timeout
        while (frame := self.decoder.next_frame()) is None:
            if self.eof:
                return None
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no frame") from None
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
            self.decoder.feed(data)
        return frame

    def expect(self, kind: type, timeout: float = TIMEOUT) -> spdy.Frame:
        """Skip WINDOW_UPDATEs until a frame of `kind` comes."""
        while True:
            frame = self.next(timeout)
            assert frame is not None, f"EOF while waiting for {kind.__name__}"
            if isinstance(frame, kind):
                return frame
            assert isinstance(frame, spdy.WindowUpdate), f"wanted {kind.__name__}, got {frame}"

    def expect_eof(self, timeout: float = TIMEOUT) -> list[spdy.Frame]:
        """Frames until the server closes. After a GOAWAY we end our side too, as a client that
        goes away does (the server then need not wait out its linger)."""
        frames = []
        while (frame := self.next(timeout)) is not None:
            frames.append(frame)
            if isinstance(frame, spdy.GoAway):
                _shutdown_write(self.sock)
        return frames

    def silent(self, seconds: float = 0.3) -> bool:
        """True if nothing arrives for `seconds`."""
        self.sock.settimeout(seconds)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except socket.timeout:
            return True
        finally:
            self.sock.settimeout(TIMEOUT)
        return False


def _shutdown_write(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def serving_pair(**options: object) -> tuple[SpdyConnection, RawPeer, queue.Queue[SpdyStream]]:
    """A server SpdyConnection on one end of a socketpair (accepting every stream into a queue)."""
    ours, theirs = socket.socketpair()
    accepted: queue.Queue[SpdyStream] = queue.Queue()

    def on_stream(stream: SpdyStream) -> bool:
        if stream.header("refuse"):
            return False
        accepted.put(stream)
        return True

    conn = SpdyConnection(SocketTransport(ours), server=True, on_stream=on_stream, linger=0.5,  # type: ignore[arg-type]
                          **options).start()
    return conn, RawPeer(theirs), accepted


# --- clients --------------------------------------------------------------------------------

def _connect(url: str) -> tuple[socket.socket, str, str]:
    """A socket to url's host; returns it, the Host header and the request target (path?query)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT)
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    return sock, parts.netloc, target


def http_upgrade(url: str, headers: list[tuple[str, str]], method: str = "POST") -> tuple[int, dict[str, list[str]], bytes, socket.socket]:
    """Send a request; return (status, headers with every value, bytes past the head, socket)."""
    sock, host, path = _connect(url)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"] + [f"{k}: {v}" for k, v in headers]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    found: dict[str, list[str]] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        found.setdefault(name.strip().lower(), []).append(value.strip())
    return int(status_line.split()[1]), found, rest, sock


def spdy_client(url: str, protocols: list[str]) -> tuple[SpdyConnection, str]:
    """Upgrade to SPDY/3.1 offering `protocols`; return the client connection and the chosen one."""
    status, headers, rest, sock = http_upgrade(
        url, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")] +
        [("X-Stream-Protocol-Version", p) for p in protocols])
    assert status == 101, (status, headers)
    sock.settimeout(None)
    conn = SpdyConnection(SocketTransport(sock, rest), server=False, linger=1.0, name="test-client").start()
    return conn, headers["x-stream-protocol-version"][0]


def spdy_exec(url: str, protocol: str, stdin: bytes | None = None, stdout: bool = True, stderr: bool = True,
              tty: bool = False, sizes: list[tuple[int, int]] = ()) -> tuple[bytes, bytes, bytes]:
    """Run a remote command the way client-go does (streams error, stdin, stdout, stderr, resize;
    stdin copied in the background); return (stdout, stderr, error stream)."""
    conn, chosen = spdy_client(url, [protocol])
    assert chosen == protocol
    error = conn.create_stream([("streamtype", "error")])
    streams: dict[str, SpdyStream] = {}
    if stdin is not None:
        streams["stdin"] = conn.create_stream([("streamtype", "stdin")])
    if stdout:
        streams["stdout"] = conn.create_stream([("streamtype", "stdout")])
    if stderr and not tty:
        streams["stderr"] = conn.create_stream([("streamtype", "stderr")])
    if tty and protocol != "v2.channel.k8s.io":
        resize = conn.create_stream([("streamtype", "resize")])
        for width, height in sizes:
            resize.write(json.dumps({"Width": width, "Height": height}).encode() + b"\n")
    if stdin is not None:  # copied alongside, errors ignored: the command may end before it reads stdin
        threading.Thread(target=_copy_stdin, args=(streams["stdin"], stdin), daemon=True).start()
    out = streams["stdout"].readall(TIMEOUT) if "stdout" in streams else b""
    err = streams["stderr"].readall(TIMEOUT) if "stderr" in streams else b""
    status = error.readall(TIMEOUT)
    conn.close()
    assert conn.wait_closed(TIMEOUT)
    return out, err, status


def _copy_stdin(stream: SpdyStream, data: bytes) -> None:
    """As client-go's copyStdin: write, then close (FIN); a broken stream only ends the copy."""
    try:
        stream.write(data)
    except OSError:
        return
    stream.close()


def ws_client(url: str, protocols: list[str]) -> tuple[WebSocketConnection, str]:
    """A WebSocket client connection to url, offering protocols; returns it and the chosen one."""
    sock, host, path = _connect(url)
    status, headers, rest = client_handshake(sock, host, path, protocols)
    assert status == 101, (status, headers)
    sock.settimeout(TIMEOUT)
    return WebSocketConnection(SocketTransport(sock, rest), server=False, linger=1.0), \
        headers.get("sec-websocket-protocol", "")


def ws_messages(ws: WebSocketConnection) -> list[Message]:
    """Every message until the server closes."""
    messages = []
    while (message := ws.recv_message()) is not None:
        messages.append(message)
    return messages


def ws_read_channels(ws: WebSocketConnection, want: dict[int, bytes]) -> dict[int, bytes]:
    """Read messages until every channel in `want` has at least as many bytes as wanted (or the
    connection ends, or the socket times out); returns what came per channel."""
    found: dict[int, bytes] = {}
    while any(len(found.get(channel, b"")) < len(data) for channel, data in want.items()):
        message = ws.recv_message()
        if message is None:
            break
        for channel, data in ws_channel_data([message]).items():
            found[channel] = found.get(channel, b"") + data
    return found


def ws_channel_data(messages: list[Message], base64: bool = False) -> dict[int, bytes]:
    """Concatenated data per channel."""
    import base64 as b64
    found: dict[int, bytes] = {}
    for message in messages:
        if base64:
            assert message.opcode == Opcode.TEXT
            channel, data = message.data[0] - ord("0"), b64.b64decode(message.data[1:])
        else:
            assert message.opcode == Opcode.BINARY
            channel, data = message.data[0], message.data[1:]
        found[channel] = found.get(channel, b"") + data
    return found


def in_thread(target, *args) -> tuple[threading.Thread, list]:  # type: ignore[no-untyped-def]
    """Run target in a daemon thread; its result lands in the returned list."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(target(*args)), daemon=True)
    thread.start()
    return thread, result
