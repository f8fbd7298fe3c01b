"""RFC 6455 WebSocket: the opening handshake, frames, and a message connection over a transport.

- `negotiate(method, headers, supported)` checks an upgrade request and picks the subprotocol
  (the first the client offers that we support, as golang.org/x/net/websocket does for kubelet);
  `HandshakeError` carries the HTTP status to answer with. `accept_key` is the
  Sec-WebSocket-Accept of a Sec-WebSocket-Key. `client_handshake` is the client side (tests).
- `encode_frame` / `FrameParser`: frames on the wire. The parser enforces what the RFC makes a
  protocol error (1002: reserved bits, unknown opcodes, fragmented or long control frames,
  unmasked client frames, a 64-bit length with its top bit set) and the size limit (1009), all
  from a frame's head, before its payload is waited for.
- `WebSocketConnection`: messages (fragments reassembled, text checked for UTF-8: 1007), pings
  answered with pongs, the closing handshake (a Close is echoed; the server closes TCP after it),
  thread-safe sends. One thread reads (`recv_message`), any thread sends. A protocol fault
  (`fail`) sends Close with its code, reads until the peer closes (at most `linger` seconds) and
  closes TCP.
- `WebSocketByteStream`: binary messages as a byte stream, the `Transport` SPDY runs over for
  `SPDY/3.1+portforward.k8s.io` (client-go's tunneling dialer writes each SPDY write as one
  binary message and reads messages back to back as one stream).
"""
from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import os
import socket
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pycri.streaming.transport import Transport

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEFAULT_MAX_MESSAGE = 32 * 1024 * 1024
MAX_CONTROL_PAYLOAD = 125
MAX_CLOSE_REASON = MAX_CONTROL_PAYLOAD - 2


class Opcode(enum.IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never sent: "no code in the Close frame"
    ABNORMAL = 1006  # never sent: "closed without a Close frame"
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011


def valid_close_code(code: int) -> bool:
    """Whether a peer may send `code` in a Close frame (RFC 6455 7.4 and the IANA registry)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) \
        or 3000 <= code <= 4999


def close_reason_bytes(reason: str) -> bytes:
    """A Close reason as UTF-8, cut to the 123 bytes a control frame leaves, never inside a character."""
    return reason.encode("utf-8")[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")


# --- handshake ------------------------------------------------------------------------------

def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode("ascii")


class HandshakeError(Exception):
    """The upgrade request is refused; answer with `status` (and `headers`)."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = list(headers)


def split_header_list(value: str | None) -> list[str]:
    """A comma-separated header value as a list of trimmed, non-empty items."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def negotiate(method: str, headers: Mapping[str, str], supported: Sequence[str]) -> tuple[str, str]:
    """Check an upgrade request; return (Sec-WebSocket-Accept, chosen subprotocol or "").

    `headers` maps lowercase names to values (repeated headers joined with ", "). "" in
    `supported` accepts a client that offers no subprotocol.
    """
    if method != "GET":
        raise HandshakeError(405, "WebSocket upgrade needs GET")
    if "websocket" not in [v.lower() for v in split_header_list(headers.get("upgrade"))]:
        raise HandshakeError(400, "missing Upgrade: websocket")
    if "upgrade" not in [v.lower() for v in split_header_list(headers.get("connection"))]:
        raise HandshakeError(400, "missing Connection: Upgrade")
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise HandshakeError(426, "unsupported Sec-WebSocket-Version", [("Sec-WebSocket-Version", "13")])
    key = headers.get("sec-websocket-key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except (ValueError, binascii.Error):
        raise HandshakeError(400, "bad Sec-WebSocket-Key") from None
    offered = split_header_list(headers.get("sec-websocket-protocol"))
    if not offered:
        if "" in supported:
            return accept_key(key), ""
        raise HandshakeError(400, f"a subprotocol is required; supported: {', '.join(p for p in supported if p)}")
    for protocol in offered:
        if protocol and protocol in supported:
            return accept_key(key), protocol
    raise HandshakeError(403, f"requested protocol(s) are not supported: {offered}; "
                              f"supported: {[p for p in supported if p]}")


def handshake_response(accept: str, protocol: str) -> bytes:
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Accept: {accept}"]
    if protocol:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def client_handshake(sock: socket.socket, host: str, path: str, protocols: Sequence[str] = (),
                     extra_headers: Sequence[tuple[str, str]] = ()) -> tuple[int, dict[str, str], bytes]:
    """Send an upgrade request; return (status, lowercase headers, bytes read past the head)."""
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if protocols:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(protocols)}")
    lines += [f"{name}: {value}" for name, value in extra_headers]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed during the handshake")
        buffer += chunk
    head, rest = buffer.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if status == 101 and headers.get("sec-websocket-accept") != accept_key(key):
        raise ConnectionError("bad Sec-WebSocket-Accept")
    return status, headers, rest


# --- frames ---------------------------------------------------------------------------------

class WebSocketError(Exception):
    """A protocol fault: close the connection with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class WsFrame:
    fin: bool
    opcode: int
    payload: bytes
    rsv: int = 0
    masked: bool = False


def _apply_mask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    repeated = (mask * (len(payload) // 4 + 1))[:len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


def encode_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bytes | None = None,
                 rsv: int = 0) -> bytes:
    """One frame; `mask` (4 bytes) masks it, as a client must."""
    first = (0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0xF)
    mask_bit = 0x80 if mask is not None else 0
    size = len(payload)
    if size < 126:
        head = struct.pack(">BB", first, mask_bit | size)
    elif size < 1 << 16:
        head = struct.pack(">BBH", first, mask_bit | 126, size)
    else:
        head = struct.pack(">BBQ", first, mask_bit | 127, size)
    if mask is None:
        return head + payload
    return head + mask + _apply_mask(payload, mask)


_OPCODES = frozenset(int(op) for op in Opcode)


class FrameParser:
    """Bytes to frames. `server=True` requires masked frames (from clients), False unmasked."""

    def __init__(self, *, server: bool, max_frame: int = DEFAULT_MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self._server = server
        self._max_frame = max_frame

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def next_frame(self) -> WsFrame | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        fin, rsv, opcode = bool(first & 0x80), (first >> 4) & 7, first & 0xF
        masked, size, offset = bool(second & 0x80), second & 0x7F, 2
        if rsv:
            raise WebSocketError(CloseCode.PROTOCOL_ERROR, "reserved bits set without an extension")
        if opcode not in _OPCODES:
            raise WebSocketError(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        if opcode >= 0x8 and (not fin or size > MAX_CONTROL_PAYLOAD):
            raise WebSocketError(CloseCode.PROTOCOL_ERROR, "control frames are short and unfragmented")
        if masked != self._server:
            raise WebSocketError(CloseCode.PROTOCOL_ERROR,
                                 "client frames must be masked" if self._server else "server frames must not be masked")
        if size == 126:
            if len(buf) < 4:
                return None
            (size,) = struct.unpack_from(">H", buf, 2)
            offset = 4
        elif size == 127:
            if len(buf) < 10:
                return None
            (size,) = struct.unpack_from(">Q", buf, 2)
            offset = 10
            if size >> 63:
                raise WebSocketError(CloseCode.PROTOCOL_ERROR, "64-bit length with its top bit set")
        if size > self._max_frame:
            raise WebSocketError(CloseCode.MESSAGE_TOO_BIG, f"frame of {size} bytes is past {self._max_frame}")
        mask = b""
        if masked:
            if len(buf) < offset + 4:
                return None
            mask = bytes(buf[offset:offset + 4])
            offset += 4
        if len(buf) < offset + size:
            return None
        payload = bytes(buf[offset:offset + size])
        del buf[:offset + size]
        if masked:
            payload = _apply_mask(payload, mask)
        return WsFrame(fin, opcode, payload, rsv, masked)


# --- connection -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Message:
    opcode: int  # Opcode.TEXT or Opcode.BINARY
    data: bytes


class WebSocketConnection:
    """Messages over a transport after the handshake. One reader thread; sends from any thread."""

    def __init__(self, transport: Transport, *, server: bool = True, max_message: int = DEFAULT_MAX_MESSAGE,
                 linger: float = 2.0) -> None:
        self.transport = transport
        self._server = server
        self._parser = FrameParser(server=server, max_frame=max_message)
        self._max_message = max_message
        self.linger = linger
        self._send_lock = threading.Lock()
        self._fragments: list[bytes] = []
        self._fragment_opcode: int | None = None
        self._fragment_size = 0
        self.close_sent = False
        self.peer_closed = threading.Event()  # the peer's Close frame came, or the transport ended
        self.close_code: int | None = None  # the code the peer closed with
        self.close_reason = ""
        self.error: WebSocketError | None = None
        self.pongs: list[bytes] = []

    # -- sending ---------------------------------------------------------------------------

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = None if self._server else os.urandom(4)
        data = encode_frame(opcode, payload, mask=mask)
        with self._send_lock:
            if self.close_sent:
                raise BrokenPipeError("WebSocket close already sent")
            if opcode == Opcode.CLOSE:
                self.close_sent = True
            self.transport.sendall(data)

    def send_binary(self, data: bytes) -> None:
        self._send_frame(Opcode.BINARY, bytes(data))

    def send_text(self, text: str | bytes) -> None:
        self._send_frame(Opcode.TEXT, text.encode("utf-8") if isinstance(text, str) else text)

    def ping(self, payload: bytes = b"") -> None:
        self._send_frame(Opcode.PING, payload)

    def send_close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Send a Close frame (once; later calls do nothing). The reason is cut to fit."""
        payload = struct.pack(">H", code) + close_reason_bytes(reason) if code != CloseCode.NO_STATUS else b""
        try:
            self._send_frame(Opcode.CLOSE, payload)
        except OSError:
            pass

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """The closing handshake from our side: Close, wait up to `linger` for the peer's, close TCP.

        Another thread must be reading (`recv_message`) for the peer's Close to be seen.
        """
        self.send_close(code, reason)
        self.peer_closed.wait(self.linger)
        self.transport.close()

    # -- receiving -------------------------------------------------------------------------

    def recv_message(self) -> Message | None:
        """The next data message; None once the connection is closed (see `close_code`, `error`)."""
        while True:
            try:
                frame = self._next_frame()
                if frame is None:
                    return None
                message = self._handle(frame)
            except _Closed:
                return None
            except WebSocketError as exc:
                self.fail(exc.code, str(exc))
                return None
            if message is not None:
                return message

    def _next_frame(self) -> WsFrame | None:
        while True:
            frame = self._parser.next_frame()
            if frame is not None:
                return frame
            try:
                data = self.transport.recv(65536)
            except OSError:
                data = b""
            if not data:
                if self.close_code is None:
                    self.close_code = CloseCode.ABNORMAL
                self.peer_closed.set()
                return None
            self._parser.feed(data)

    def _handle(self, frame: WsFrame) -> Message | None:
        if frame.opcode == Opcode.PING:
            try:
                self._send_frame(Opcode.PONG, frame.payload)
            except OSError:
                pass
            return None
        if frame.opcode == Opcode.PONG:
            self.pongs.append(frame.payload)
            return None
        if frame.opcode == Opcode.CLOSE:
            self._on_close(frame.payload)
            raise _Closed
        if frame.opcode == Opcode.CONTINUATION:
            if self._fragment_opcode is None:
                raise WebSocketError(CloseCode.PROTOCOL_ERROR, "continuation frame without a message")
        elif self._fragment_opcode is not None:
            raise WebSocketError(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
        else:
            self._fragment_opcode = frame.opcode
        self._fragment_size += len(frame.payload)
        if self._fragment_size > self._max_message:
            raise WebSocketError(CloseCode.MESSAGE_TOO_BIG, f"message past {self._max_message} bytes")
        self._fragments.append(frame.payload)
        if not frame.fin:
            return None
        opcode, data = self._fragment_opcode, b"".join(self._fragments)
        self._fragments, self._fragment_opcode, self._fragment_size = [], None, 0
        if opcode == Opcode.TEXT:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise WebSocketError(CloseCode.INVALID_PAYLOAD, "text message is not UTF-8") from None
        return Message(opcode, data)

    def _on_close(self, payload: bytes) -> None:
        code, reason = CloseCode.NO_STATUS, ""
        if len(payload) == 1:
            raise WebSocketError(CloseCode.PROTOCOL_ERROR, "Close frame with a 1-byte payload")
        if payload:
            (code,) = struct.unpack_from(">H", payload, 0)
            if not valid_close_code(code):
                raise WebSocketError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise WebSocketError(CloseCode.INVALID_PAYLOAD, "close reason is not UTF-8") from None
        self.close_code, self.close_reason = code, reason
        self.peer_closed.set()
        # echo the code; a server then closes TCP (RFC 6455 5.5.1, 7.1.1)
        self.send_close(code if code != CloseCode.NO_STATUS else CloseCode.NORMAL)
        if self._server:
            self.transport.close()
        else:
            self.transport.shutdown_write()

    def fail(self, code: int, reason: str) -> None:
        """A protocol fault: Close with `code`, drain until the peer closes (at most `linger` s),
        close. Call it from the reading thread (it reads what the peer still sends)."""
        self.error = WebSocketError(code, reason)
        self.send_close(code, reason)
        timer = threading.Timer(self.linger, self.transport.close)
        timer.daemon = True
        timer.start()
        try:
            while self.transport.recv(65536):
                pass
        except OSError:
            pass
        timer.cancel()
        self.peer_closed.set()
        self.transport.close()


class _Closed(WebSocketError):
    """Internal: the peer's Close was handled; recv_message returns None."""

    def __init__(self) -> None:
        super().__init__(CloseCode.NORMAL, "closed")


class WebSocketByteStream:
    """Binary messages as one byte stream: the `Transport` for SPDY tunnelled in WebSocket."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._pending = b""
        self._read_lock = threading.Lock()

    def recv(self, n: int) -> bytes:
        with self._read_lock:
            while not self._pending:
                message = self.ws.recv_message()
                if message is None:
                    return b""
                if message.opcode != Opcode.BINARY:
                    self.ws.send_close(CloseCode.UNSUPPORTED_DATA, "binary messages only")
                    raise ConnectionError("text message in a binary tunnel")
                self._pending = message.data
            data, self._pending = self._pending[:n], self._pending[n:]
            return data

    def sendall(self, data: bytes) -> None:
        self.ws.send_binary(data)

    def shutdown_write(self) -> None:
        self.ws.send_close(CloseCode.NORMAL)

    def close(self) -> None:
        self.ws.send_close(CloseCode.NORMAL)
        self.ws.transport.close()

