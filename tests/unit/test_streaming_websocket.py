"""RFC 6455: the handshake (the RFC's own key and accept value), frames masked and not,
fragmentation, ping/pong, close codes, size limits; the Kubernetes channel layer on top."""
from __future__ import annotations

import base64
import random
import socket
import struct
import threading

import pytest

from pycri.streaming.channels import ChannelConnection
from pycri.streaming.transport import SocketTransport
from pycri.streaming.websocket import (
    CloseCode, FrameParser, HandshakeError, Message, Opcode, WebSocketByteStream, WebSocketConnection,
    WebSocketError, WsFrame, accept_key, close_reason_bytes, encode_frame, handshake_response, negotiate,
    valid_close_code,
)
from tests.unit.test_streaming_support import TIMEOUT, bounded  # noqa: F401 (bounded: autouse)

MASK = bytes.fromhex("37fa213d")
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def _masked(payload: bytes) -> bytes:
    return bytes(byte ^ MASK[i % 4] for i, byte in enumerate(payload))


def upgrade_headers(**extra: str) -> dict[str, str]:
    headers = {"upgrade": "websocket", "connection": "keep-alive, Upgrade", "sec-websocket-version": "13",
               "sec-websocket-key": KEY}
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    return headers


# --- handshake ----------------------------------------------------------------------------

def test_accept_value_of_the_rfc_example() -> None:
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_the_first_offered_supported_protocol_is_chosen() -> None:
    headers = upgrade_headers(sec_websocket_protocol="v5.channel.k8s.io, v4.channel.k8s.io")
    assert negotiate("GET", headers, ["v4.channel.k8s.io", "v5.channel.k8s.io"]) == \
        ("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "v5.channel.k8s.io")
    headers = upgrade_headers(sec_websocket_protocol="x, v4.channel.k8s.io")
    assert negotiate("GET", headers, ["v4.channel.k8s.io"])[1] == "v4.channel.k8s.io"


def test_no_protocol_is_accepted_only_where_empty_is_supported() -> None:
    assert negotiate("GET", upgrade_headers(), ["", "v4.channel.k8s.io"])[1] == ""
    with pytest.raises(HandshakeError) as exc:
        negotiate("GET", upgrade_headers(), ["v5.channel.k8s.io"])
    assert exc.value.status == 400


@pytest.mark.parametrize("method, headers, status", [
    ("POST", upgrade_headers(), 405),
    ("GET", upgrade_headers(upgrade="h2c"), 400),
    ("GET", upgrade_headers(connection="keep-alive"), 400),
    ("GET", upgrade_headers(sec_websocket_version="8"), 426),
    ("GET", upgrade_headers(sec_websocket_key="c2hvcnQ="), 400),
    ("GET", upgrade_headers(sec_websocket_key="not base64!"), 400),
    ("GET", upgrade_headers(sec_websocket_protocol="chat"), 403),
])
def test_bad_upgrade_requests(method: str, headers: dict[str, str], status: int) -> None:
    with pytest.raises(HandshakeError) as exc:
        negotiate(method, headers, ["", "v4.channel.k8s.io"])
    assert exc.value.status == status
    if status == 426:
        assert ("Sec-WebSocket-Version", "13") in exc.value.headers


def test_handshake_response() -> None:
    text = handshake_response("abc=", "v5.channel.k8s.io").decode()
    assert text.startswith("HTTP/1.1 101 Switching Protocols\r\n")
    assert "\r\nSec-WebSocket-Accept: abc=\r\n" in text and "\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n" in text
    assert text.endswith("\r\n\r\n")
    assert "Sec-WebSocket-Protocol" not in handshake_response("abc=", "").decode()


# --- frames -------------------------------------------------------------------------------

def parse(data: bytes, server: bool = True, max_frame: int = 1 << 20) -> list[WsFrame]:
    parser = FrameParser(server=server, max_frame=max_frame)
    parser.feed(data)
    frames = []
    while (frame := parser.next_frame()) is not None:
        frames.append(frame)
    return frames


def test_rfc_examples() -> None:
    unmasked = bytes.fromhex("810548656c6c6f")
    masked = bytes.fromhex("818537fa213d7f9f4d5158")
    assert encode_frame(Opcode.TEXT, b"Hello") == unmasked
    assert encode_frame(Opcode.TEXT, b"Hello", mask=MASK) == masked
    assert parse(masked) == [WsFrame(True, Opcode.TEXT, b"Hello", 0, True)]
    assert parse(unmasked, server=False) == [WsFrame(True, Opcode.TEXT, b"Hello", 0, False)]
    assert encode_frame(Opcode.TEXT, b"Hel", fin=False) == bytes.fromhex("010348656c")
    assert encode_frame(Opcode.CONTINUATION, b"lo") == bytes.fromhex("80026c6f")
    assert encode_frame(Opcode.PING, b"Hello") == bytes.fromhex("890548656c6c6f")
    assert encode_frame(Opcode.PONG, b"Hello", mask=MASK) == bytes.fromhex("8a8537fa213d7f9f4d5158")


@pytest.mark.parametrize("size, head", [(125, b"\x82\x7d"), (256, b"\x82\x7e\x01\x00"),
                                        (65536, b"\x82\x7f" + struct.pack(">Q", 65536))])
def test_lengths(size: int, head: bytes) -> None:
    frame = encode_frame(Opcode.BINARY, b"b" * size)
    assert frame.startswith(head)
    assert parse(encode_frame(Opcode.BINARY, b"b" * size, mask=MASK))[0].payload == b"b" * size


def test_a_frame_split_anywhere_still_parses() -> None:
    data = encode_frame(Opcode.BINARY, bytes(range(200)), mask=MASK) + encode_frame(Opcode.PING, b"p", mask=MASK)
    parser, frames = FrameParser(server=True), []
    for byte in data:
        parser.feed(bytes([byte]))
        while (frame := parser.next_frame()) is not None:
            frames.append(frame)
    assert [f.payload for f in frames] == [bytes(range(200)), b"p"]


@pytest.mark.parametrize("data, code", [
    (encode_frame(Opcode.TEXT, b"x"), CloseCode.PROTOCOL_ERROR),                    # a client frame unmasked
    (encode_frame(Opcode.TEXT, b"x", mask=MASK, rsv=4), CloseCode.PROTOCOL_ERROR),   # RSV1 without extension
    (encode_frame(3, b"x", mask=MASK), CloseCode.PROTOCOL_ERROR),                   # reserved opcode
    (encode_frame(0xB, b"x", mask=MASK), CloseCode.PROTOCOL_ERROR),                 # reserved control opcode
    (encode_frame(Opcode.PING, b"p" * 126, mask=MASK), CloseCode.PROTOCOL_ERROR),   # long control frame
    (encode_frame(Opcode.PING, b"p", mask=MASK, fin=False), CloseCode.PROTOCOL_ERROR),  # fragmented control
    (b"\x82\xff" + struct.pack(">Q", 1 << 63) + MASK, CloseCode.PROTOCOL_ERROR),    # 64-bit top bit
    (b"\x82\xff" + struct.pack(">Q", 1 << 40) + MASK, CloseCode.MESSAGE_TOO_BIG),   # oversized
])
def test_bad_frames(data: bytes, code: int) -> None:
    with pytest.raises(WebSocketError) as exc:
        parse(data)
    assert exc.value.code == code


def test_a_masked_server_frame_is_refused_by_a_client() -> None:
    with pytest.raises(WebSocketError):
        parse(encode_frame(Opcode.TEXT, b"x", mask=MASK), server=False)


def test_close_codes() -> None:
    assert all(valid_close_code(c) for c in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999))
    assert not any(valid_close_code(c) for c in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000))


# --- connection ---------------------------------------------------------------------------

class Peer:
    """The client end of a socketpair, writing masked frames by hand."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(TIMEOUT)
        self.parser = FrameParser(server=False)

    def send(self, opcode: int, payload: bytes = b"", fin: bool = True) -> None:
        self.sock.sendall(encode_frame(opcode, payload, fin=fin, mask=MASK))

    def frames(self) -> list[WsFrame]:
        """Frames until the server closes the connection. A Close is answered as a client does
        (echo it, then end our side), so the server need not wait out its linger."""
        found = []
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            self.parser.feed(data)
            while (frame := self.parser.next_frame()) is not None:
                found.append(frame)
                if frame.opcode == Opcode.CLOSE:
                    self._answer_close(frame)
            if not data:
                return found

    def _answer_close(self, frame: WsFrame) -> None:
        try:
            self.send(Opcode.CLOSE, frame.payload[:2])
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server closed first
            pass

    def next(self) -> WsFrame:
        while (frame := self.parser.next_frame()) is None:
            self.parser.feed(self.sock.recv(65536))
        return frame


def pair(max_message: int = 1 << 20) -> tuple[WebSocketConnection, Peer]:
    """A server connection and a client peer on a socketpair. The server's socket times out too:
    a server that waits for ever shows as an abnormal close and fails the test, never hangs it."""
    a, b = socket.socketpair()
    a.settimeout(TIMEOUT)
    return WebSocketConnection(SocketTransport(a), server=True, max_message=max_message, linger=0.5), Peer(b)


def fails(ws: WebSocketConnection, peer: Peer) -> list[WsFrame]:
    """The server's next recv_message ends the connection (it returns None) while the peer reads
    what the server sends until it closes, answering its Close: returns those frames."""
    result: list[Message | None] = []
    reader = threading.Thread(target=lambda: result.append(ws.recv_message()), daemon=True)
    reader.start()
    frames = peer.frames()
    reader.join(TIMEOUT)
    assert not reader.is_alive() and result == [None]
    return frames


def close_code(frame: WsFrame) -> int:
    assert frame.opcode == Opcode.CLOSE
    return struct.unpack(">H", frame.payload[:2])[0]


def test_fragments_are_reassembled_around_a_ping() -> None:
    ws, peer = pair()
    peer.send(Opcode.TEXT, b"Hel", fin=False)
    peer.send(Opcode.PING, b"are you there")
    peer.send(Opcode.CONTINUATION, b"lo", fin=False)
    peer.send(Opcode.CONTINUATION, b"!")
    peer.send(Opcode.BINARY, b"\x00\x01")
    assert ws.recv_message() == Message(Opcode.TEXT, b"Hello!")
    assert ws.recv_message() == Message(Opcode.BINARY, b"\x00\x01")
    assert peer.next() == WsFrame(True, Opcode.PONG, b"are you there")


def test_a_close_is_echoed_and_the_server_closes_tcp() -> None:
    ws, peer = pair()
    peer.send(Opcode.CLOSE, struct.pack(">H", 1000) + "bye ✓".encode())
    assert ws.recv_message() is None
    assert ws.close_code == 1000 and ws.close_reason == "bye ✓"
    frames = peer.frames()
    assert [close_code(f) for f in frames] == [1000]


def test_an_empty_close_is_answered_with_1000() -> None:
    ws, peer = pair()
    peer.send(Opcode.CLOSE)
    assert ws.recv_message() is None
    assert ws.close_code == CloseCode.NO_STATUS
    assert [close_code(f) for f in peer.frames()] == [1000]


def test_our_close_waits_for_the_peers() -> None:
    ws, peer = pair()
    reader = threading.Thread(target=ws.recv_message, daemon=True)
    reader.start()
    closer = threading.Thread(target=ws.close, args=(CloseCode.NORMAL, "done"), daemon=True)
    closer.start()
    frame = peer.next()
    assert close_code(frame) == 1000 and frame.payload[2:] == b"done"
    peer.send(Opcode.CLOSE, struct.pack(">H", 1000))
    closer.join(TIMEOUT)
    reader.join(TIMEOUT)
    assert not closer.is_alive() and not reader.is_alive()
    with pytest.raises(BrokenPipeError):
        ws.send_binary(b"late")


@pytest.mark.parametrize("frames, code", [
    ([(Opcode.CONTINUATION, b"x", True)], CloseCode.PROTOCOL_ERROR),                     # nothing to continue
    ([(Opcode.TEXT, b"a", False), (Opcode.BINARY, b"b", True)], CloseCode.PROTOCOL_ERROR),  # new message inside one
    ([(Opcode.TEXT, b"\xff\xfe", True)], CloseCode.INVALID_PAYLOAD),                     # not UTF-8
    ([(Opcode.TEXT, "é".encode()[:1], False), (Opcode.CONTINUATION, b"", True)], CloseCode.INVALID_PAYLOAD),
    ([(Opcode.CLOSE, b"\x03", True)], CloseCode.PROTOCOL_ERROR),                         # 1-byte close payload
    ([(Opcode.CLOSE, struct.pack(">H", 1005), True)], CloseCode.PROTOCOL_ERROR),         # code never sent
    ([(Opcode.CLOSE, struct.pack(">H", 999), True)], CloseCode.PROTOCOL_ERROR),
    ([(Opcode.CLOSE, struct.pack(">H", 1000) + b"\xc3", True)], CloseCode.INVALID_PAYLOAD),  # reason not UTF-8
    ([(Opcode.BINARY, b"a" * 600, False), (Opcode.CONTINUATION, b"a" * 600, True)], CloseCode.MESSAGE_TOO_BIG),
    ([(Opcode.BINARY, b"a" * 1025, True)], CloseCode.MESSAGE_TOO_BIG),
])
def test_protocol_errors_close_with_their_code(frames: list[tuple[int, bytes, bool]], code: int) -> None:
    ws, peer = pair(max_message=1024)
    for opcode, payload, fin in frames:
        peer.send(opcode, payload, fin)
    received = fails(ws, peer)  # our Close, then the server closes TCP
    assert ws.error is not None and ws.error.code == code
    assert [close_code(f) for f in received] == [code]


@pytest.mark.parametrize("data, code", [
    (bytes.fromhex("820568656c6c6f"), CloseCode.PROTOCOL_ERROR),                           # unmasked client frame
    (b"\x82\x00", CloseCode.PROTOCOL_ERROR),                                               # unmasked, empty
    (b"\xc2\x81" + MASK + b"x", CloseCode.PROTOCOL_ERROR),                                 # RSV1
    (b"\xa2\x81" + MASK + b"x", CloseCode.PROTOCOL_ERROR),                                 # RSV2
    (b"\x92\x81" + MASK + b"x", CloseCode.PROTOCOL_ERROR),                                 # RSV3
    (b"\x83\x81" + MASK + b"x", CloseCode.PROTOCOL_ERROR),                                 # opcode 3 (reserved)
    (b"\x87\x80" + MASK, CloseCode.PROTOCOL_ERROR),                                        # opcode 7 (reserved)
    (b"\x8b\x80" + MASK, CloseCode.PROTOCOL_ERROR),                                        # opcode 0xB (control)
    (b"\x8f\x80" + MASK, CloseCode.PROTOCOL_ERROR),                                        # opcode 0xF
    (b"\x09\x80" + MASK, CloseCode.PROTOCOL_ERROR),                                        # fragmented PING
    (b"\x08\x82" + MASK + _masked(b"\x03\xe8"), CloseCode.PROTOCOL_ERROR),                 # fragmented Close
    (encode_frame(Opcode.PING, b"p" * 126, mask=MASK), CloseCode.PROTOCOL_ERROR),          # control frame > 125 bytes
    (b"\x89\xfe\x00\x7e" + MASK, CloseCode.PROTOCOL_ERROR),                                # the same, head only
    (b"\x8a\xff" + struct.pack(">Q", 200) + MASK, CloseCode.PROTOCOL_ERROR),              # PONG, 64-bit length
    (b"\x82\xff" + struct.pack(">Q", 1 << 63) + MASK, CloseCode.PROTOCOL_ERROR),          # 64-bit length, top bit
    (b"\x82\xff" + struct.pack(">Q", 1 << 40), CloseCode.MESSAGE_TOO_BIG),                # 1 TiB: head only
    (b"\x82\xfe\x04\x01", CloseCode.MESSAGE_TOO_BIG),                                      # 1025 > max_message
    (b"\x80\x81" + MASK + b"x", CloseCode.PROTOCOL_ERROR),                                 # continuation of nothing
    (encode_frame(Opcode.TEXT, b"\xc3\x28", mask=MASK), CloseCode.INVALID_PAYLOAD),         # bad UTF-8 text
    (encode_frame(Opcode.TEXT, b"\xed\xa0\x80", mask=MASK), CloseCode.INVALID_PAYLOAD),     # UTF-16 surrogate
    (encode_frame(Opcode.CLOSE, b"\x03\xe8\xff", mask=MASK), CloseCode.INVALID_PAYLOAD),    # bad UTF-8 close reason
    (encode_frame(Opcode.CLOSE, b"\x03", mask=MASK), CloseCode.PROTOCOL_ERROR),            # 1-byte close payload
    (encode_frame(Opcode.CLOSE, b"\x03\xee", mask=MASK), CloseCode.PROTOCOL_ERROR),        # 1006: never on the wire
    (encode_frame(Opcode.CLOSE, b"\x13\x88", mask=MASK), CloseCode.PROTOCOL_ERROR),        # 5000: not a close code
])
def test_bad_frames_built_by_hand_close_the_connection_with_their_code(data: bytes, code: int) -> None:
    ws, peer = pair(max_message=1024)
    peer.sock.sendall(data)
    received = fails(ws, peer)  # our Close, then the server closes TCP (no hang waiting for a payload)
    assert ws.error is not None and ws.error.code == code
    assert [close_code(f) for f in received] == [code]
    reason = received[0].payload[2:]
    assert len(reason) <= 123 and reason.decode("utf-8")


def test_a_bad_frame_after_good_ones_still_gets_its_close() -> None:
    ws, peer = pair()
    peer.send(Opcode.BINARY, b"fine")
    peer.sock.sendall(b"\xc2\x81" + MASK + b"x")  # RSV1
    assert ws.recv_message() == Message(Opcode.BINARY, b"fine")
    assert [close_code(f) for f in fails(ws, peer)] == [CloseCode.PROTOCOL_ERROR]


def test_a_long_close_reason_is_cut_on_a_character_boundary() -> None:
    cut = close_reason_bytes("é" * 100)
    assert len(cut) == 122 and cut.decode("utf-8") == "é" * 61
    assert close_reason_bytes("short") == b"short"
    ws, peer = pair()
    ws.send_close(CloseCode.GOING_AWAY, "€" * 60)
    frame = peer.next()
    assert close_code(frame) == CloseCode.GOING_AWAY and frame.payload[2:].decode("utf-8") == "€" * 41


def _valid_client_bytes() -> bytes:
    return b"".join([
        encode_frame(Opcode.TEXT, "héllo".encode(), fin=False, mask=MASK), encode_frame(Opcode.PING, b"p", mask=MASK),
        encode_frame(Opcode.CONTINUATION, b" world", mask=MASK), encode_frame(Opcode.BINARY, b"\x00" * 300, mask=MASK),
        encode_frame(Opcode.BINARY, b"\xff\x00", mask=MASK), encode_frame(Opcode.PONG, b"", mask=MASK),
        encode_frame(Opcode.CLOSE, struct.pack(">H", 1000) + b"bye", mask=MASK),
    ])


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        where = rng.randrange(len(out))
        if rng.random() < 0.6:
            out[where] ^= 1 << rng.randrange(8)
        else:
            out[where:where] = rng.randbytes(rng.randint(1, 8))
    return bytes(out)


def test_garbage_frames_only_ever_give_frames_or_a_websocket_error() -> None:
    rng = random.Random(99)
    valid = _valid_client_bytes()
    for _ in range(3000):
        try:
            parse(_mutate(rng, valid), max_frame=4096)
        except WebSocketError as exc:
            assert exc.code in (CloseCode.PROTOCOL_ERROR, CloseCode.MESSAGE_TOO_BIG)


@pytest.mark.parametrize("seed", range(40))
def test_a_garbled_session_ends_with_a_close_never_a_hang_or_a_crash(seed: int) -> None:
    ws, peer = pair(max_message=4096)
    conn = ChannelConnection(ws, "v5.channel.k8s.io", readable={0, 4}, channels=5).start()
    peer.sock.sendall(_mutate(random.Random(seed), _valid_client_bytes()))
    peer.sock.shutdown(socket.SHUT_WR)
    frames = peer.frames()  # the server closes TCP: after a Close, a protocol error, or our EOF
    assert conn.closed.wait(TIMEOUT)
    closes = [close_code(f) for f in frames if f.opcode == Opcode.CLOSE and len(f.payload) >= 2]
    if ws.error is not None:  # a protocol error: our Close carried its code
        assert ws.error.code in (1002, 1007, 1009) and closes == [ws.error.code]
    else:  # the peer's Close (echoed), or the end of the stream
        assert ws.close_code is not None


def test_an_unmasked_client_frame_closes_with_1002() -> None:
    ws, peer = pair()
    peer.sock.sendall(encode_frame(Opcode.BINARY, b"plain"))
    assert [close_code(f) for f in fails(ws, peer)] == [1002]


def test_end_of_stream_without_close_is_abnormal() -> None:
    ws, peer = pair()
    peer.sock.close()
    assert ws.recv_message() is None
    assert ws.close_code == CloseCode.ABNORMAL


def test_the_byte_stream_spans_messages() -> None:
    ws, peer = pair()
    stream = WebSocketByteStream(ws)
    peer.send(Opcode.BINARY, b"abc")
    peer.send(Opcode.BINARY, b"defg")
    assert stream.recv(2) == b"ab"
    assert stream.recv(100) == b"c"
    assert stream.recv(100) == b"defg"
    stream.sendall(b"out")
    assert peer.next() == WsFrame(True, Opcode.BINARY, b"out")
    peer.send(Opcode.TEXT, b"text")
    with pytest.raises(ConnectionError):
        stream.recv(1)


# --- channels -----------------------------------------------------------------------------

def test_v5_channels_route_data_and_the_close_signal() -> None:
    ws, peer = pair()
    conn = ChannelConnection(ws, "v5.channel.k8s.io", readable={0, 4}, channels=5).start()
    peer.send(Opcode.BINARY, b"\x00stdin data")
    peer.send(Opcode.BINARY, b"\x09ignored: no such channel")
    peer.send(Opcode.BINARY, b"\x01ignored: not readable")
    peer.send(Opcode.BINARY, b"\xff\x00")  # CLOSE stdin
    assert conn.readers[0].read(100, timeout=TIMEOUT) == b"stdin data"
    assert conn.readers[0].read(100, timeout=TIMEOUT) == b""
    conn.writer(1).write(b"out")
    assert peer.next() == WsFrame(True, Opcode.BINARY, b"\x01out")
    peer.send(Opcode.BINARY, b"\xff\x00\x01")  # a malformed CLOSE ends the connection
    assert close_code(peer.next()) == 1002


@pytest.mark.parametrize("signal", [b"\xff", b"\xff\x05", b"\xff\xff", b"\xff\x00\x00"])
def test_a_bad_v5_close_signal_ends_the_connection(signal: bytes) -> None:
    ws, peer = pair()
    conn = ChannelConnection(ws, "v5.channel.k8s.io", readable={0, 4}, channels=5).start()
    peer.send(Opcode.BINARY, signal)  # too short, no such channel, too long (wsstream: ends the connection)
    assert [close_code(f) for f in peer.frames()] == [CloseCode.PROTOCOL_ERROR]
    assert conn.closed.wait(TIMEOUT)
    assert conn.readers[0].read(10, timeout=TIMEOUT) == b""


def test_v4_has_no_close_signal() -> None:
    ws, peer = pair()
    conn = ChannelConnection(ws, "v4.channel.k8s.io", readable={0}, channels=5).start()
    peer.send(Opcode.BINARY, b"\xff\x00")  # channel 255: ignored
    peer.send(Opcode.BINARY, b"\x00x")
    assert conn.readers[0].read(10, timeout=TIMEOUT) == b"x"
    peer.send(Opcode.CLOSE, struct.pack(">H", 1000))
    assert conn.readers[0].read(10, timeout=TIMEOUT) == b""


def test_base64_channels() -> None:
    ws, peer = pair()
    conn = ChannelConnection(ws, "v4.base64.channel.k8s.io", readable={0}, channels=5).start()
    peer.send(Opcode.TEXT, b"0" + base64.b64encode(b"foo\n"))
    assert conn.readers[0].read(10, timeout=TIMEOUT) == b"foo\n"
    conn.writer(1).write(b"\n")
    assert peer.next() == WsFrame(True, Opcode.TEXT, b"1Cg==")
